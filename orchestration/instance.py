"""Setting up a Dagster instance for the platform: DAGSTER_HOME with the repository's
dagster.yaml in it, and Dagster's own storage database next to the platform's.

Dagster's storage gets a database of its own on the same server (`dagster`, created if
missing) unless DAGSTER_POSTGRES_URL names one, owned by a role of its own,
`warriors_dagster` (`ensure_storage`): the webserver, the daemon, the code server and the
runs log in to their storage as that role, which has no right on the platform's database
(issue 26: they used to log in as the platform's owner, or the embedded server's
superuser, and could have disabled the event store's append-only triggers). Its
transactions are short; a long one would hold back the gap-safe readers of the event store
(transaction ids are server-wide), so in production give Dagster a server of its own.
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
from warriors.eventstore.roles import url_as

DAGSTER_DATABASE = "dagster"
DAGSTER_ROLE = "warriors_dagster"
# Every kind of object Dagster's schema migrations make, with the statement that hands it over.
_OWNED_KINDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
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


def ensure_storage(admin_url: str, storage: str, password: str) -> str:
    """Dagster's storage database (the one `storage` names) owned by DAGSTER_ROLE, which
    logs in with `password` (set again each time: a rotation is a rerun) and is given no
    other right; returns the storage URL as that role. `admin_url`: the platform's owner
    or the server's superuser, who may create roles and databases. A database made before
    the role existed (by the owner) is handed over with everything in it."""
    name = urlsplit(storage).path.lstrip("/")
    parts = urlsplit(admin_url)
    role, database = sql.Identifier(DAGSTER_ROLE), sql.Identifier(name)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DAGSTER_ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                role, sql.Literal(password)
            )
        )
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, role))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(database, role))
    with psycopg.connect(urlunsplit(parts._replace(path=f"/{name}")), autocommit=True) as conn:
        owned = conn.execute(
            "SELECT c.relkind, c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"
            " AND c.relkind = ANY(%s) AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)"
            " ORDER BY c.relkind <> 'r', c.relname",
            (list(_OWNED_KINDS), DAGSTER_ROLE),
        ).fetchall()
        for kind, relation in owned:
            conn.execute(
                sql.SQL(f"ALTER {_OWNED_KINDS[kind]} IF EXISTS public.{{}} OWNER TO {{}}").format(
                    sql.Identifier(relation), role
                )
            )
        types = conn.execute(
            "SELECT typname FROM pg_type WHERE typnamespace = 'public'::regnamespace AND typtype = 'e'"
        ).fetchall()
        for (enum,) in types:
            conn.execute(sql.SQL("ALTER TYPE public.{} OWNER TO {}").format(sql.Identifier(enum), role))
    return url_as(storage, DAGSTER_ROLE, password)


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


LOCATION_NAME = "warriors"
DEFINITIONS_MODULE = "orchestration.definitions"


def code_server_args(socket: Path) -> list[str]:
    """`python -m dagster api grpc` serving the platform's definitions on a Unix socket
    (after these arguments come those of the Python that runs it).

    One code server shared by the webserver and the daemon, as Dagster's deployment
    guides run it: left to themselves each spawns its own, and the daemon replaces its
    own every minute, loading the definitions again each time (about 0.3 cores of an
    idle platform went there). A Unix socket in a private folder, not a TCP port: only
    the platform's own user can reach it, and through it launch runs."""
    return ["-m", "dagster", "api", "grpc", "--socket", str(socket), "--module-name", DEFINITIONS_MODULE,
            "--working-directory", str(PROJECT_ROOT), "--location-name", LOCATION_NAME,
            "--log-level", "warning"]  # fmt: skip


def code_server_workspace(home: Path, socket: Path) -> Path:
    """A workspace file in DAGSTER_HOME whose one code location is the code server on
    `socket` (the repository's workspace.yaml loads the module in-process instead, for
    `dagster dev`)."""
    workspace = home / "workspace.yaml"
    workspace.write_text(
        "# Written by `warriors run`: the code server it supervises (orchestration/instance.py).\n"
        f"load_from:\n  - grpc_server:\n      socket: {socket}\n      location_name: {LOCATION_NAME}\n"
    )
    return workspace
