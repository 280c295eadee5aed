"""The event store's reads and writes, over one connection pool.

Appends go through the group-commit appender; everything else is a single query.
Every method translates driver errors into the store's own (`errors.py`).
"""

import base64
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from warriors.domain.events import CURRENT_SCHEMA_VERSIONS
from warriors.eventstore.appender import GroupCommitAppender, append_in_transaction
from warriors.eventstore.errors import translated_errors
from warriors.eventstore.opening import SNAPSHOT_SCHEMA_VERSION, KeyRecord, Keyring, opened
from warriors.eventstore.reader import EVENT_COLUMNS, stored_event
from warriors.eventstore.records import (
    Appended,
    AppendOutcome,
    AppendRequest,
    NewKey,
    RecordedAnswer,
    Snapshot,
    StoredEvent,
)

# One round trip: the latest snapshot (event_type NULL), the warrior's key (event_type
# '#key', its data the key row as JSON), and the events after the snapshot.
_LOAD_STREAM = """
WITH snapshot AS (
    SELECT version, schema_version, state FROM event_snapshots
    WHERE aggregate_id = %(id)s ORDER BY version DESC LIMIT 1
)
SELECT NULL::text, version, schema_version, state FROM snapshot
UNION ALL
SELECT '#key', 0, NULL::int2, jsonb_build_object(
    'wrapped', encode(wrapped_key, 'base64'), 'master_key_id', master_key_id)
FROM warrior_keys WHERE warrior_id = %(id)s
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


_ENSURE_KEY = """
WITH made AS (
    INSERT INTO warrior_keys (warrior_id, wrapped_key, master_key_id) VALUES (%(id)s, %(wrapped)s, %(key_id)s)
    ON CONFLICT (warrior_id) DO NOTHING RETURNING wrapped_key, master_key_id
)
SELECT wrapped_key, master_key_id FROM made
UNION ALL
SELECT wrapped_key, master_key_id FROM warrior_keys WHERE warrior_id = %(id)s
LIMIT 1
"""


class _Undone(Exception):
    def __init__(self, outcome: AppendOutcome) -> None:
        self.outcome = outcome


class AggregateStream:
    """An aggregate's latest snapshot (if any), the events after it, oldest first, and its
    key record (None: none yet). As loaded, the data is stored data (sealed); `opened`
    gives the same stream with every event's data and the snapshot's state opened."""

    def __init__(
        self,
        snapshot: Snapshot | None,
        events: list[tuple[str, int, int, dict[str, Any]]],
        key: KeyRecord | None = None,
    ):
        self.snapshot = snapshot
        self.events = events  # (event_type, event_version, schema_version, data)
        self.key = key

    @classmethod
    def from_events(cls, events: list[StoredEvent]) -> "AggregateStream":
        """A stream of (opened) stored events without a snapshot (a full replay)."""
        return cls(None, [(e.event_type, e.event_version, e.schema_version, e.data) for e in events])

    def opened(self, aggregate_id: UUID, keyring: Keyring | None = None) -> "AggregateStream":
        keyring = keyring or Keyring({aggregate_id: self.key} if self.key else {})
        snapshot = self.snapshot
        if snapshot is not None:
            state = keyring.open_snapshot(aggregate_id, snapshot.schema_version, snapshot.state)
            snapshot = Snapshot(aggregate_id, snapshot.version, state, SNAPSHOT_SCHEMA_VERSION)
        events = [
            (event_type, version, CURRENT_SCHEMA_VERSIONS[event_type],
             keyring.open_data(aggregate_id, event_type, schema_version, data))
            for event_type, version, schema_version, data in self.events
        ]  # fmt: skip
        return AggregateStream(snapshot, events, self.key)


class EventStore:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection], appender: GroupCommitAppender):
        self.pool = pool
        self._appender = appender

    @property
    def projects_inline(self) -> bool:
        """Appends may carry an inline projection's rows (`AppendRequest.inline_row`)."""
        return self._appender.inline is not None

    async def append(self, request: AppendRequest) -> AppendOutcome:
        with translated_errors():
            return await self._appender.append(request)

    async def load_stream(self, aggregate_id: UUID) -> AggregateStream:
        with translated_errors():
            async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(_LOAD_STREAM, {"id": aggregate_id})
                rows = await cur.fetchall()
        snapshot: Snapshot | None = None
        key: KeyRecord | None = None
        events = []
        for event_type, version, schema_version, data in rows:
            if event_type is None:
                snapshot = Snapshot(aggregate_id, version, data, schema_version)
            elif event_type == "#key":
                wrapped = data["wrapped"]
                key = KeyRecord(base64.b64decode(wrapped) if wrapped else None, data["master_key_id"])
            else:
                events.append((event_type, version, schema_version, data))
        return AggregateStream(snapshot, events, key)

    async def ensure_key(self, aggregate_id: UUID, new_key: NewKey) -> KeyRecord:
        """The aggregate's key record, storing `new_key` if it has none (a warrior created
        before keys existed, changed now: its new events are sealed like anyone's)."""
        params = {"id": aggregate_id, "wrapped": new_key.wrapped, "key_id": new_key.master_key_id}
        with translated_errors():
            async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(_ENSURE_KEY, params)
                row = await cur.fetchone()
        assert row is not None
        return KeyRecord(bytes(row[0]) if row[0] is not None else None, row[1])

    async def erase(self, request: AppendRequest) -> AppendOutcome:
        """Destroy the aggregate's key (and its snapshots and idempotency keys: the owner's
        `erase_warrior_key`) and append `request`'s erasure event, in one transaction: both
        happen or neither does."""
        with translated_errors():
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    await conn.execute("SELECT erase_warrior_key(%s)", (request.events[0].aggregate_id,))
                    outcome = await append_in_transaction(conn, request)
                    if not isinstance(outcome, Appended):
                        raise _Undone(outcome)  # the key stays: roll the destruction back
            except _Undone as undone:
                return undone.outcome
        return outcome

    async def save_snapshot(self, snapshot: Snapshot, aggregate_type: str) -> None:
        with translated_errors():
            async with self.pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO event_snapshots"
                    " (aggregate_id, aggregate_type, version, schema_version, state)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (snapshot.aggregate_id, aggregate_type, snapshot.version, snapshot.schema_version,
                     Jsonb(snapshot.state)),
                )  # fmt: skip

    async def recorded_answer(self, key: str) -> RecordedAnswer | None:
        with translated_errors():
            async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(_RECORDED_ANSWER, (key,))
                row = await cur.fetchone()
        return RecordedAnswer(*row) if row else None

    async def aggregate_events(
        self, aggregate_id: UUID, after_version: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        """The aggregate's events after `after_version`, oldest first, at most `limit`,
        opened (current shape; personal data opened, or null once erased)."""
        with translated_errors():
            async with self.pool.connection() as conn:
                async with conn.cursor(row_factory=tuple_row) as cur:
                    await cur.execute(
                        f"SELECT {EVENT_COLUMNS} FROM event_store"
                        " WHERE aggregate_id = %s AND event_version > %s ORDER BY event_version LIMIT %s",
                        (aggregate_id, after_version, limit),
                    )
                    events = [stored_event(row) for row in await cur.fetchall()]
                return await opened(conn, events)

    async def ping(self) -> None:
        """Raises `StoreUnavailable` unless the database answers."""
        with translated_errors():
            async with self.pool.connection() as conn:
                await conn.execute("SELECT 1")
