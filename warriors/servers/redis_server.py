"""A Redis server for development and tests: Debian's `redis-server` (the Makefile
installs it), run on 127.0.0.1 with its files in a folder of the project's.

Redis here is a cache, so it keeps nothing on disk (no RDB snapshots, no AOF): a restart
starts empty, and the platform is built to answer correctly from PostgreSQL meanwhile.
A password (generated, kept in the folder, mode 0600) keeps other local users out. Past
512 MB only entries with a TTL are evicted (`volatile-lru`): the projection's versions,
count and markers stay.
"""

import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from warriors.secret_files import write_secret
from warriors.servers.base import LocalServer, ServerError, alive, read_pid, require_program, terminate

START_TIMEOUT_SECONDS = 30.0


class RedisUnavailable(ServerError):
    """redis-server is missing, or did not start in time."""


@dataclass(frozen=True)
class RedisServer(LocalServer):
    display_name = "redis-server"
    error = RedisUnavailable
    poll_seconds = 0.05

    data_dir: Path
    port: int

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "password"

    def url(self) -> str:
        return f"redis://:{self._password()}@127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start the server unless it is running; returns its URL."""
        if self.running():
            return self.url()
        binary = require_program(
            "redis-server", "make services installs Debian's redis-server", RedisUnavailable
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            write_secret(self.password_file, secrets.token_urlsafe(24) + "\n")
        config = self.data_dir / "redis.conf"
        write_secret(
            config,
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\ndir {self.data_dir.resolve()}\n"
            f"pidfile {self.pid_file.resolve()}\nlogfile {self.log_file.resolve()}\n"
            f"requirepass {self._password()}\n"
            'save ""\nappendonly no\ndaemonize yes\nmaxmemory 512mb\nmaxmemory-policy volatile-lru\n',
        )
        subprocess.run([binary, str(config)], check=True)  # daemonizes: returns once forked
        self.wait_ready(time.monotonic() + START_TIMEOUT_SECONDS)
        return self.url()

    def running(self) -> bool:
        pid = read_pid(self.pid_file)
        return pid is not None and alive(pid) and self.probe(0.0) is None

    def stop(self) -> None:
        """Stop the server (SIGTERM; it keeps nothing on disk) and wait until it is gone."""
        pid = read_pid(self.pid_file)
        if pid is None:
            return
        terminate(
            pid,
            name=self.display_name,
            timeout=START_TIMEOUT_SECONDS,
            kill_timeout=START_TIMEOUT_SECONDS,
            error=RedisUnavailable,
            log_file=self.log_file,
            poll_seconds=self.poll_seconds,
        )
        self.pid_file.unlink(missing_ok=True)

    def probe(self, deadline: float) -> str | None:
        try:
            with redis.Redis(
                host="127.0.0.1", port=self.port, password=self._password(), socket_timeout=1
            ) as r:
                return None if r.ping() else "PING was not answered"
        except redis.RedisError as exc:
            return str(exc)

    def _password(self) -> str:
        return self.password_file.read_text().strip() if self.password_file.exists() else ""
