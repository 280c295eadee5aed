"""Appending events with an application-level group commit.

Concurrent commands in one process are written together: while up to `max_flushes`
INSERTs are in flight, newly arriving appends wait in a queue and the next flush writes
all of them (up to `max_batch`) in one multi-row INSERT, one transaction, one WAL flush.
With little traffic every append is flushed at once on its own (no added latency); under
load the batches grow by themselves. This is the same idea as PostgreSQL's own group
commit, lifted to where the per-transaction cost (round trips, commits) is paid.

Each append in a batch still gets its own outcome:
* versions are guarded by the unique (aggregate_id, event_version) constraint with
  ON CONFLICT DO NOTHING: an append whose first version is taken is `VersionTaken`;
* idempotency keys are inserted first (ON CONFLICT DO NOTHING) and only appends whose key
  was taken by this statement write their events: a reused key is `KeyTaken`.
An append that would leave a key without its events, or only some of its events (a
multi-event append racing another writer), makes the batch roll back and run again
without it, so a batch never commits part of an append.

An inline projection (`inline`: SQL of more CTEs, reading `inserted` and the
`%(inline)s` rows the appends carry, `AppendRequest.inline_row`) writes in the same
statement: its rows exist exactly when their events do (warriors/projections/inline.py).
"""

import base64
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from warriors.eventstore.grouping import Grouped
from warriors.eventstore.records import (
    Appended,
    AppendOutcome,
    AppendRequest,
    KeyTaken,
    VersionTaken,
)
from warriors.metrics import APPEND_BATCH_SIZE

# Locks are taken in one order by every batch (keys sorted, then events by aggregate and
# version; the first request of a batch wins a race inside it), so two workers' batches
# cannot deadlock on each other; a deadlock or serialization failure from elsewhere is
# retried, since nothing of the batch was committed.
_INSERT_BATCH_TEMPLATE = """
WITH batch AS (
    SELECT *
    FROM jsonb_to_recordset(%(events)s::jsonb)
        AS b(req int, event_id uuid, aggregate_id uuid, aggregate_type text, event_type text,
             event_version int, schema_version int2, event_data jsonb, metadata jsonb)
),
keys AS (
    SELECT *
    FROM jsonb_to_recordset(%(keys)s::jsonb)
        AS k(req int, key text, fingerprint text, aggregate_id uuid, event_version int)
),
taken_keys AS (
    INSERT INTO idempotency_keys (key, fingerprint, aggregate_id, event_version)
    SELECT key, fingerprint, aggregate_id, event_version FROM keys
    ORDER BY key
    ON CONFLICT (key) DO NOTHING
    RETURNING key
),
inserted AS (
    INSERT INTO event_store (event_id, aggregate_id, aggregate_type, event_type,
                             event_version, schema_version, event_data, metadata)
    SELECT b.event_id, b.aggregate_id, b.aggregate_type, b.event_type, b.event_version,
           b.schema_version, b.event_data, b.metadata
    FROM batch b
    WHERE NOT EXISTS (
        SELECT 1 FROM keys k
        WHERE k.req = b.req AND k.key NOT IN (SELECT key FROM taken_keys)
    )
    ORDER BY b.aggregate_id, b.event_version, b.req
    ON CONFLICT (aggregate_id, event_version) DO NOTHING
    RETURNING event_id, position, aggregate_id, event_version, created_at
),
-- A new warrior's key, stored only if its events were (an orphan key would be harmless,
-- but a key is personal-data machinery: none without a warrior).
new_keys AS (
    INSERT INTO warrior_keys (warrior_id, wrapped_key, master_key_id)
    SELECT n.warrior_id, decode(n.wrapped_key, 'base64'), n.master_key_id
    FROM jsonb_to_recordset(%(new_keys)s::jsonb) AS n(warrior_id uuid, wrapped_key text, master_key_id text)
    WHERE n.warrior_id IN (SELECT aggregate_id FROM inserted)
    ON CONFLICT (warrior_id) DO NOTHING
){inline}
-- One wake-up per flush for live projectors (LISTEN event_store); it is sent at commit.
-- None for a flush of creations projected inline, when the appender is `quiet_inline`.
SELECT event_id, position, NULL::text FROM inserted,
    (SELECT CASE WHEN %(wake)s THEN pg_notify('event_store', '') END) AS wake
UNION ALL
SELECT NULL, NULL, key FROM taken_keys
"""
_INSERT_BATCH = _INSERT_BATCH_TEMPLATE.format(inline="")


_ROLLBACK_RETRIES = 3


class GroupCommitAppender(Grouped[AppendRequest, AppendOutcome]):
    kind = "append"

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection],
        *,
        max_batch: int = 256,
        max_flushes: int = 1,
        inline: str | None = None,
        quiet_inline: bool = False,
    ) -> None:
        """`quiet_inline`: a flush whose every append was projected inline sends no wake-up
        to the live projectors (nothing else of theirs needs it at once; they poll)."""
        super().__init__(max_batch=max_batch, max_flushes=max_flushes)
        self._pool = pool
        self.inline = inline
        self._quiet_inline = quiet_inline and inline is not None
        self._statement = _INSERT_BATCH_TEMPLATE.format(inline=f",\n{inline}" if inline else "")

    async def append(self, request: AppendRequest) -> AppendOutcome:
        """Write `request`'s events atomically; raises `StoreUnavailable` on a dead database."""
        return await self._submit(request)

    async def _execute(self, items: list[AppendRequest]) -> list[AppendOutcome]:
        APPEND_BATCH_SIZE.observe(len(items))
        return await self._write(items)

    async def _write(self, requests: list[AppendRequest]) -> list[AppendOutcome]:
        outcomes: list[AppendOutcome | None] = [None] * len(requests)
        _refuse_repeated_keys(requests, outcomes)
        async with self._pool.connection() as conn:
            for attempt in range(_ROLLBACK_RETRIES):
                try:
                    return await self._write_once(conn, requests, outcomes)
                except psycopg.errors.TransactionRollback:
                    if attempt == _ROLLBACK_RETRIES - 1:
                        raise
        raise AssertionError("unreachable")

    async def _write_once(
        self, conn: AsyncConnection[Any], requests: list[AppendRequest], outcomes: list[AppendOutcome | None]
    ) -> list[AppendOutcome]:
        while live := [i for i, outcome in enumerate(outcomes) if outcome is None]:
            if not any(requests[i].idempotency or len(requests[i].events) > 1 for i in live):
                # Nothing here can commit half-done: one statement is atomic by
                # itself, so skip the BEGIN and COMMIT round trips.
                await _attempt(conn, self._statement, requests, live, outcomes, self._quiet_inline)
                continue
            async with conn.transaction():
                if broken := await _attempt(
                    conn, self._statement, requests, live, outcomes, self._quiet_inline
                ):
                    # These appends would commit half-done (a key without its events,
                    # or some events of a multi-event append): they lost a version
                    # race. Undo the batch and write the others again without them.
                    for index in live:
                        outcomes[index] = VersionTaken() if index in broken else None
                    raise psycopg.Rollback()
        return [outcome for outcome in outcomes if outcome is not None]


async def _attempt(
    conn: AsyncConnection[Any],
    statement: str,
    requests: list[AppendRequest],
    live: list[int],
    outcomes: list[AppendOutcome | None],
    quiet_inline: bool = False,
) -> set[int]:
    """Run the batch INSERT for the `live` appends and judge each one's outcome."""
    cursor = await conn.execute(statement, _batch_params(requests, live, quiet_inline))
    # Matched by event id: in-batch racers share (aggregate_id, version).
    written: dict[UUID, int] = {}
    keys_taken: set[str] = set()
    for event_id, position, key in await cursor.fetchall():
        if key is None:
            written[event_id] = position
        else:
            keys_taken.add(key)
    return _judge(requests, live, written, keys_taken, outcomes)


async def append_in_transaction(conn: AsyncConnection[Any], request: AppendRequest) -> AppendOutcome:
    """One append inside the caller's open transaction (an erasure: the key's destruction
    and its event commit together, or neither). A half-done append (its key taken but
    not its events) is rolled back to a savepoint and reported as VersionTaken."""
    outcomes: list[AppendOutcome | None] = [None]
    _refuse_repeated_keys([request], outcomes)
    if outcomes[0] is not None:
        return outcomes[0]
    async with conn.transaction():  # a savepoint
        if await _attempt(conn, _INSERT_BATCH, [request], [0], outcomes):
            raise psycopg.Rollback()
    return outcomes[0] or VersionTaken()


def _refuse_repeated_keys(requests: list[AppendRequest], outcomes: list[AppendOutcome | None]) -> None:
    """Within one batch a key may be written once; later uses are `KeyTaken` right away."""
    seen: set[str] = set()
    for index, request in enumerate(requests):
        if request.idempotency is None:
            continue
        if request.idempotency.key in seen:
            outcomes[index] = KeyTaken()
        seen.add(request.idempotency.key)


def _batch_params(requests: list[AppendRequest], live: list[int], quiet_inline: bool) -> dict[str, Any]:
    """The batch as JSON documents: one parameter each, whatever the batch size (cheaper
    to send than a column array per field)."""
    events: list[dict[str, Any]] = []
    keys: list[dict[str, Any]] = []
    new_keys: list[dict[str, Any]] = []
    inline: list[dict[str, Any]] = []
    for index in live:
        request = requests[index]
        if request.inline_row is not None:
            inline.append(request.inline_row)
        if request.new_key is not None:
            new_keys.append(
                {
                    "warrior_id": request.events[0].aggregate_id,
                    "wrapped_key": base64.b64encode(request.new_key.wrapped).decode(),
                    "master_key_id": request.new_key.master_key_id,
                }
            )
        events.extend(
            {
                "req": index,
                "event_id": event.event_id,
                "aggregate_id": event.aggregate_id,
                "aggregate_type": event.aggregate_type,
                "event_type": event.event_type,
                "event_version": event.event_version,
                "schema_version": event.schema_version,
                "event_data": event.data,
                "metadata": event.metadata,
            }
            for event in request.events
        )
        if request.idempotency is not None:
            last = request.events[-1]
            keys.append(
                {
                    "req": index,
                    "key": request.idempotency.key,
                    "fingerprint": request.idempotency.fingerprint,
                    "aggregate_id": last.aggregate_id,
                    "event_version": last.event_version,
                }
            )
    return {
        "events": orjson.dumps(events).decode(),
        "keys": orjson.dumps(keys).decode(),
        "new_keys": orjson.dumps(new_keys).decode(),
        "inline": orjson.dumps(inline).decode(),
        "wake": not quiet_inline or len(inline) < len(live),
    }


def _judge(
    requests: list[AppendRequest],
    live: list[int],
    written: dict[UUID, int],
    keys_taken: set[str],
    outcomes: list[AppendOutcome | None],
) -> set[int]:
    """Fill in each live append's outcome; return those that must not commit as they are."""
    broken: set[int] = set()
    for index in live:
        request = requests[index]
        positions = [written.get(e.event_id) for e in request.events]
        stored = [p for p in positions if p is not None]
        key = request.idempotency.key if request.idempotency else None
        if len(stored) == len(positions):
            last = request.events[-1]
            outcomes[index] = Appended(last.aggregate_id, last.event_version, max(stored))
        elif stored or (key is not None and key in keys_taken):
            broken.add(index)
        elif key is not None:
            outcomes[index] = KeyTaken()
        else:
            outcomes[index] = VersionTaken()
    return broken
