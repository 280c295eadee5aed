"""A Redis server for development and tests: Debian's `redis-server` (the Makefile
installs it), run on 127.0.0.1 with its files in a folder of the project's.

Redis here is a cache, so it keeps nothing on disk (no RDB snapshots, no AOF): a restart
starts empty, and the platform is built to answer correctly from PostgreSQL meanwhile.
A password (generated, kept in the folder, mode 0600) keeps other local users out. Past
512 MB only entries with a TTL are evicted (`volatile-lru`): the projection's versions,
count and markers stay.
"""

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from warriors.secret_files import write_secret

START_TIMEOUT_SECONDS = 30.0


class RedisUnavailable(RuntimeError):
    """redis-server is missing, or did not start in time."""


@dataclass(frozen=True)
class RedisServer:
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
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable(
                "redis-server is not installed (make services installs Debian's redis-server)"
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
        subprocess.run([binary, str(config)], check=True)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._answers():
            if time.monotonic() > deadline:
                raise RedisUnavailable(
                    f"redis-server did not answer within {START_TIMEOUT_SECONDS}s; see {self.log_file}"
                )
            time.sleep(0.05)  # polling the server's readiness, bounded by the deadline
        return self.url()

    def running(self) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return self._answers()

    def stop(self) -> None:
        """Stop the server (SIGTERM; it keeps nothing on disk) and wait until it is gone."""
        pid = self._pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                self.pid_file.unlink(missing_ok=True)
                return
            time.sleep(0.05)  # waiting for the process to exit, bounded by the deadline
        os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _password(self) -> str:
        return self.password_file.read_text().strip() if self.password_file.exists() else ""

    def _answers(self) -> bool:
        try:
            with redis.Redis(
                host="127.0.0.1", port=self.port, password=self._password(), socket_timeout=1
            ) as r:
                return bool(r.ping())
        except redis.RedisError:
            return False
