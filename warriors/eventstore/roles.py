"""The services' PostgreSQL roles (created by migration 0011, without a login): giving them
a login with a password, and the URLs the services connect with.

`warriors run` does this for the embedded server, with passwords it generates once and
keeps next to the server's data (mode 0600); a deployment runs `warriors db-roles` as the
owner with API_DB_PASSWORD and PROJECTOR_DB_PASSWORD set (docker-compose's `migrate`).
"""

import secrets
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from warriors.secret_files import write_secret


class ServiceRole(StrEnum):
    API = "warriors_api"  # the HTTP services
    PROJECTOR = "warriors_projector"  # the projector, the relay, Dagster's runs


def enable_logins(owner_url: str, passwords: dict[ServiceRole, str]) -> None:
    """Let each role log in with its password (set again each time: a rotation is a rerun)."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        for role, password in passwords.items():
            if not password:
                raise ValueError(f"no password for the role {role}")
            conn.execute(
                sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
            )


def local_passwords(folder: Path) -> dict[ServiceRole, str]:
    """Each role's password for the embedded server: made on first use, in `folder` with
    mode 0600 from the start."""
    return {role: local_password(folder, role) for role in ServiceRole}


def local_password(folder: Path, role: str) -> str:
    """`role`'s password for the embedded server, kept in `folder` (made on first use)."""
    path = folder / f"{role}-password"
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def url_as(url: str, role: str, password: str) -> str:
    """`url` (host, port, database, options kept) with the role's credentials instead."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"))
