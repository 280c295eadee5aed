"""Setting up a Dagster instance for the platform: DAGSTER_HOME with the repository's
dagster.yaml in it, and Dagster's own storage database next to the platform's.

Dagster's storage gets a database of its own on the same server (`dagster`, created if
missing) unless DAGSTER_POSTGRES_URL names one. Its transactions are short; a long one
would hold back the gap-safe readers of the event store (transaction ids are
server-wide), so in production give Dagster a server of its own.
"""

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from warriors.config import PROJECT_ROOT

DAGSTER_DATABASE = "dagster"
INSTANCE_CONFIG = PROJECT_ROOT / "dagster.yaml"
WORKSPACE = PROJECT_ROOT / "workspace.yaml"


def storage_url(database_url: str, database: str = DAGSTER_DATABASE) -> str:
    """`database_url` with its database replaced, for Dagster: its driver named as
    psycopg2 (SQLAlchemy 2.1 defaults to psycopg 3, under which dagster-postgres'
    `NOTIFY run_events, %(id)s` is a syntax error)."""
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2", path=f"/{database}"))


def ensure_database(url: str) -> None:
    """Create the database `url` names if it does not exist (connecting to `postgres`)."""
    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    name = parts.path.lstrip("/")
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def prepare_home(home: Path) -> Path:
    """DAGSTER_HOME with a link to the repository's dagster.yaml (edits apply at once)."""
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(INSTANCE_CONFIG)
    return home


def create_storage(env: Mapping[str, str]) -> None:
    """Create (or migrate) Dagster's storage schema once, before the webserver and the
    daemon start: each creates it on its first start, and racing on a new database one of
    them failed (`type "run_tags" already exists`). `env` holds DAGSTER_HOME and
    DAGSTER_POSTGRES_URL."""
    dagster = Path(sys.executable).parent / "dagster"
    done = subprocess.run(
        [str(dagster), "instance", "migrate"], env={**os.environ, **env}, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"dagster instance migrate failed: {done.stderr.strip()[-2000:]}")
