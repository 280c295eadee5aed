"""The event store's reads and writes, over one connection pool.

Appends go through the group-commit appender; everything else is a single query.
Every method translates driver errors into the store's own (`errors.py`).
"""

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.errors import translated_errors
from warriors.eventstore.reader import EVENT_COLUMNS, stored_event
from warriors.eventstore.records import (
    AppendOutcome,
    AppendRequest,
    RecordedAnswer,
    Snapshot,
    StoredEvent,
)

_LOAD_STREAM = """
WITH snapshot AS (
    SELECT version, state FROM event_snapshots
    WHERE aggregate_id = %(id)s ORDER BY version DESC LIMIT 1
)
SELECT NULL::text, version, NULL::int2, state FROM snapshot
UNION ALL
SELECT event_type, event_version, schema_version, event_data FROM event_store
WHERE aggregate_id = %(id)s
  AND event_version > coalesce((SELECT version FROM snapshot), 0)
ORDER BY 2
"""

_RECORDED_ANSWER = """
SELECT k.fingerprint, k.aggregate_id, k.event_version, e.position
FROM idempotency_keys k
JOIN event_store e USING (aggregate_id, event_version)
WHERE k.key = %s
"""


class AggregateStream:
    """An aggregate's latest snapshot (if any) and the events after it, oldest first."""

    def __init__(self, snapshot: Snapshot | None, events: list[tuple[str, int, int, dict[str, Any]]]):
        self.snapshot = snapshot
        self.events = events  # (event_type, event_version, schema_version, data)

    @classmethod
    def from_events(cls, events: list[StoredEvent]) -> "AggregateStream":
        """A stream of stored events without a snapshot (a full replay)."""
        return cls(None, [(e.event_type, e.event_version, e.schema_version, e.data) for e in events])


class EventStore:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection], appender: GroupCommitAppender):
        self.pool = pool
        self._appender = appender

    async def append(self, request: AppendRequest) -> AppendOutcome:
        with translated_errors():
            return await self._appender.append(request)

    async def load_stream(self, aggregate_id: UUID) -> AggregateStream:
        with translated_errors():
            async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(_LOAD_STREAM, {"id": aggregate_id})
                rows = await cur.fetchall()
        snapshot: Snapshot | None = None
        events = []
        for event_type, version, schema_version, data in rows:
            if event_type is None:
                snapshot = Snapshot(aggregate_id, version, data)
            else:
                events.append((event_type, version, schema_version, data))
        return AggregateStream(snapshot, events)

    async def save_snapshot(self, snapshot: Snapshot, aggregate_type: str) -> None:
        with translated_errors():
            async with self.pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO event_snapshots (aggregate_id, aggregate_type, version, state)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (snapshot.aggregate_id, aggregate_type, snapshot.version, Jsonb(snapshot.state)),
                )

    async def recorded_answer(self, key: str) -> RecordedAnswer | None:
        with translated_errors():
            async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(_RECORDED_ANSWER, (key,))
                row = await cur.fetchone()
        return RecordedAnswer(*row) if row else None

    async def aggregate_events(
        self, aggregate_id: UUID, after_version: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        """The aggregate's events after `after_version`, oldest first, at most `limit`."""
        with translated_errors():
            async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(
                    f"SELECT {EVENT_COLUMNS} FROM event_store WHERE aggregate_id = %s AND event_version > %s"
                    " ORDER BY event_version LIMIT %s",
                    (aggregate_id, after_version, limit),
                )
                return [stored_event(row) for row in await cur.fetchall()]

    async def ping(self) -> None:
        """Raises `StoreUnavailable` unless the database answers."""
        with translated_errors():
            async with self.pool.connection() as conn:
                await conn.execute("SELECT 1")
