"""Event histories written straight into a test database (COPY), and what the read model
should be: a replay of the whole stream into a table of its own."""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from warriors.projections.base import Projection
from warriors.projections.engine import ProjectionEngine
from warriors.projections.read_model import WarriorsReadModel

COPY_EVENTS = """COPY event_store (event_id, aggregate_id, aggregate_type, event_type, event_version,
    event_data, metadata, created_at) FROM STDIN"""
ROWS = "SELECT id, name, dob, fight_skills, version, created_at, updated_at FROM {} ORDER BY id"

Event = tuple[uuid.UUID, str, int, dict[str, Any]]  # (aggregate id, type, version, data)


def copy_events(url: str, events: Sequence[Event], created_at: datetime | None = None) -> None:
    """Append `events` as real rows of the store (created at `created_at`, default now)."""
    at = created_at or datetime.now(UTC)
    with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(COPY_EVENTS) as copy:
        for aggregate_id, event_type, version, data in events:
            copy.write_row(
                (
                    uuid.uuid4(),
                    aggregate_id,
                    "Warrior",
                    event_type,
                    version,
                    orjson.dumps(data).decode(),
                    "{}",
                    at,
                )
            )


def write_history(url: str, warriors: int, created_at: datetime | None = None) -> None:
    """Warriors with updates and some deletions: each created, renamed, every tenth deleted."""
    events: list[Event] = []
    for i in range(warriors):
        wid = uuid.uuid4()
        events.append(
            (wid, "WarriorCreated", 1, {"name": f"Bulk {i}", "dob": "1980-01-01", "fight_skills": ["Bo"]})
        )
        events.append((wid, "WarriorUpdated", 2, {"name": f"Bulk {i} renamed"}))
        if i % 10 == 0:
            events.append((wid, "WarriorDeleted", 3, {}))
    copy_events(url, events, created_at)


def event_count(url: str) -> int:
    """How many events the store holds."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM event_store").fetchone()
        assert row is not None
        return int(row[0])


def head(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(max(position), 0) FROM event_store").fetchone()
    assert row is not None
    return int(row[0])


def checkpoint(url: str, projection: str = "warriors_read_model") -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT last_position FROM projection_offsets WHERE projection_name = %s", (projection,)
        ).fetchone()
    return int(row[0]) if row else 0


def read_model_rows(url: str, table: str = "warriors_read_model") -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(ROWS.format(table)).fetchall()


async def replay_into_shadow(url: str) -> list[tuple[Any, ...]]:
    """Replay the whole stream into a fresh copy of the read model's table."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS replay_model")
        conn.execute("CREATE TABLE replay_model (LIKE warriors_read_model INCLUDING ALL)")
        conn.execute("DELETE FROM projection_offsets WHERE projection_name = 'replay'")
    async with AsyncConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        engine = ProjectionEngine(pool, WarriorsReadModel("replay", "replay_model", keeps_count=False), 5000)
        await engine.register()
        await engine.catch_up()
    rows = read_model_rows(url, "replay_model")
    with psycopg.connect(url, autocommit=True) as conn:  # leave no trace in a shared database
        conn.execute("DROP TABLE replay_model")
        conn.execute("DELETE FROM projection_offsets WHERE projection_name = 'replay'")
    return rows


def counted(url: str) -> int:
    """The read model's exact count (`warrior_count`)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT total FROM warrior_count").fetchone()
    assert row is not None
    return int(row[0])


async def with_read_model(
    pool: AsyncConnectionPool[Any], other: Projection
) -> tuple[ProjectionEngine, ProjectionEngine]:
    """Registered engines for the read model and `other` (batches of 500)."""
    engines = (ProjectionEngine(pool, WarriorsReadModel(), 500), ProjectionEngine(pool, other, 500))
    for engine in engines:
        await engine.register()
    return engines


def poison_a_warrior(url: str) -> None:
    """A living warrior at version 2 gets an unreadable update (version 3, which a
    projection fails on) and then a good rename (version 4, "After the park")."""
    with psycopg.connect(url) as conn:
        [living] = conn.execute(
            "SELECT aggregate_id FROM event_store GROUP BY 1 HAVING max(event_version) = 2 LIMIT 1"
        ).fetchall()
    copy_events(url, [(living[0], "WarriorUpdated", 3, {"dob": "soon"})])  # unreadable
    copy_events(url, [(living[0], "WarriorUpdated", 4, {"name": "After the park"})])
