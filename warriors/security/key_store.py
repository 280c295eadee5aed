"""API keys in PostgreSQL (`api_keys`): create, list, revoke, and find a key's identity."""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool
from uuid_utils.compat import uuid7

from warriors.eventstore.errors import translated_errors
from warriors.secret_files import write_secret
from warriors.security.identity import Identity, Role, key_digest, key_subject, looks_like_key, new_key

NAME_MAX_LENGTH = 100
LOCAL_KEY_NAME = "local operator (make run)"


@dataclass(frozen=True)
class ApiKey:
    id: UUID
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class UnknownKey(LookupError):
    """No API key has this id."""


def create_key(database_url: str, role: Role, name: str) -> tuple[ApiKey, str]:
    """A new key for `role`: its record and the key itself, which is shown once and
    never stored."""
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX_LENGTH or not name.isprintable():
        raise ValueError(f"a key's name must be 1-{NAME_MAX_LENGTH} printable characters")
    key = new_key()
    with psycopg.connect(database_url) as conn, conn.cursor(row_factory=class_row(ApiKey)) as cur:
        cur.execute(
            "INSERT INTO api_keys (id, name, role, key_digest) VALUES (%s, %s, %s, %s)"
            " RETURNING id, name, role, created_at, revoked_at",
            (uuid7(), name, role.value, key_digest(key)),
        )
        record = cur.fetchone()
    assert record is not None
    return record, key


def list_keys(database_url: str) -> list[ApiKey]:
    with psycopg.connect(database_url) as conn, conn.cursor(row_factory=class_row(ApiKey)) as cur:
        cur.execute("SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY created_at, id")
        return cur.fetchall()


def revoke_key(database_url: str, key_id: UUID) -> ApiKey:
    """Revoke the key (at once in the database; services forget it within
    AUTH_CACHE_SECONDS). Revoking a revoked key changes nothing."""
    with psycopg.connect(database_url) as conn, conn.cursor(row_factory=class_row(ApiKey)) as cur:
        cur.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s"
            " RETURNING id, name, role, created_at, revoked_at",
            (key_id,),
        )
        record = cur.fetchone()
    if record is None:
        raise UnknownKey(f"no API key has the id {key_id}")
    return record


def key_is_valid(database_url: str, key: str) -> bool:
    """Whether `key` is a live (unrevoked) key of this database."""
    return live_role(database_url, key) is not None


def live_role(database_url: str, key: str) -> Role | None:
    """The role of `key` if it is a live (unrevoked) key of this database, else None."""
    if not looks_like_key(key):
        return None
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT role FROM api_keys WHERE key_digest = %s AND revoked_at IS NULL", (key_digest(key),)
        ).fetchone()
    return None if row is None else Role(row[0])


async def identity_of(pool: AsyncConnectionPool[AsyncConnection], key: str) -> Identity | None:
    """The identity of a live key, or None (unknown, malformed or revoked)."""
    if not looks_like_key(key):
        return None
    with translated_errors():  # a database that is down answers 503, as for any request
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, role FROM api_keys WHERE key_digest = %s AND revoked_at IS NULL",
                (key_digest(key),),
            )
            row = await cur.fetchone()
    if row is None:
        return None
    return Identity(key_subject(str(row[0])), Role(row[1]))


def ensure_key_file(
    database_url: str, path: Path, role: Role = Role.OPERATOR, name: str = LOCAL_KEY_NAME
) -> bool:
    """Make sure `path` holds a live key of this database with `role` (`make run`'s local
    operator key, compose's Prometheus monitor key); returns whether a new one was made. A
    live key of another role there is revoked and replaced (compose's Prometheus key was an
    operator key before the monitor role existed). The file is created with mode 0600 from
    the start (never written and then restricted) and replaced atomically."""
    kept = path.read_text().strip() if path.exists() else ""
    found = live_role(database_url, kept)
    if found is role:
        return False
    _, key = create_key(database_url, role, name)
    write_secret(path, key + "\n")
    if found is not None:
        with psycopg.connect(database_url) as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE key_digest = %s AND revoked_at IS NULL",
                (key_digest(kept),),
            )
    return True
