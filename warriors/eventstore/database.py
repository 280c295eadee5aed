"""Connection pool and schema migrations."""

from pathlib import Path

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from yoyo import get_backend, read_migrations

from warriors.config import PROJECT_ROOT, Settings

MIGRATIONS_DIR = PROJECT_ROOT / "sql"

# jsonb values (event data and metadata) are parsed with orjson: ~5% faster replays.
set_json_loads(orjson.loads)


def apply_migrations(database_url: str, migrations_dir: Path = MIGRATIONS_DIR) -> int:
    """Apply every pending migration in `sql/` (yoyo keeps track); returns how many ran.

    yoyo takes a lock, so concurrent starts (two workers, a test and the server) are safe.
    """
    backend = get_backend(_yoyo_url(database_url))
    migrations = read_migrations(str(migrations_dir))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return len(pending)


def _yoyo_url(database_url: str) -> str:
    # yoyo picks its driver from the scheme; psycopg 3 is `postgresql+psycopg`.
    scheme, _, rest = database_url.partition("://")
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return database_url


def create_pool(settings: Settings, database_url: str) -> AsyncConnectionPool[AsyncConnection]:
    """An autocommit pool, not yet opened (`await pool.open()`).

    `timeout` bounds the wait for a connection so a dead database answers 503 quickly
    instead of holding requests.
    """
    return AsyncConnectionPool(
        database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        timeout=settings.db_pool_timeout_seconds,
        kwargs={"autocommit": True},
        open=False,
        name="warriors",
    )
