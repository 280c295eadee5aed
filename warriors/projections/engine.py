"""The projection engine: feeds a projection from the store and keeps its checkpoint.

One batch is one transaction: take the projection's advisory lock (so two projector
processes never apply the same events), read the checkpoint, read the next events with
the gap-safe reader, apply them, move the checkpoint. A crash anywhere (even SIGKILL)
rolls the whole batch back: nothing is lost and nothing is applied twice.

A projection that cannot apply an event (`PoisonEvent`, or any error on that event alone)
is marked FAILED with the event and the error recorded; the events before it are kept and
nothing after it is applied. The operator then either fixes the cause and `retry`s, or
`park`s the event (recorded in `projection_parked_events`) so the projection moves on.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, InterfaceError, OperationalError
from psycopg_pool import AsyncConnectionPool

from warriors import tracing
from warriors.eventstore.errors import translated_errors
from warriors.eventstore.reader import read_after
from warriors.eventstore.records import StoredEvent, StreamPosition
from warriors.logs import log_applied
from warriors.metrics import EVENTS_APPLIED
from warriors.projections.base import PoisonEvent, Projection, ProjectionTargetUnavailable
from warriors.projections.status import RELAY

log = logging.getLogger("warriors.projections")
# What applying an event means for a projection, as a span name (tracing).
_APPLY_SPAN = "warriors.projection.apply"
_SPAN_NAMES = {RELAY: "warriors.relay.publish"}


class ProjectionNotFailed(Exception):
    """An operator action for a FAILED projection was asked of one that is not."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    applied: int
    start: StreamPosition
    end: StreamPosition
    status: str

    @property
    def failed(self) -> bool:
        return self.status == "FAILED"


_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_READ_CHECKPOINT = """
SELECT last_transaction_id::text::bigint, last_position, status
FROM projection_offsets WHERE projection_name = %s
"""
_RETRY = """
UPDATE projection_offsets SET status = 'RUNNING', last_error = NULL, failed_event_id = NULL
WHERE projection_name = %s AND status = 'FAILED'
"""
# Lag as of this batch: events behind (counted exactly up to 10,000, estimated from
# positions beyond) and the age of the oldest event not applied yet.
# GET /api/v1/queries/projections computes both afresh on every call.
_SAVE = """
UPDATE projection_offsets
SET last_transaction_id = %(transaction_id)s::text::xid8, last_position = %(position)s,
    last_processed_at = now(), status = %(status)s, last_error = %(error)s,
    failed_event_id = %(failed_event_id)s,
    lag_events = (
        SELECT CASE WHEN behind < 10000 THEN behind
                    ELSE greatest(behind, (SELECT max(position) FROM event_store) - %(position)s) END
        FROM (SELECT count(*) AS behind FROM (
            SELECT 1 FROM event_store
            WHERE (transaction_id, position) > (%(transaction_id)s::text::xid8, %(position)s)
            LIMIT 10000) AS b) AS c),
    lag_seconds = coalesce(extract(epoch FROM now() - (
        SELECT created_at FROM event_store
        WHERE (transaction_id, position) > (%(transaction_id)s::text::xid8, %(position)s)
        ORDER BY transaction_id, position LIMIT 1)), 0)
WHERE projection_name = %(name)s
"""


async def lock_projection(conn: AsyncConnection[Any], name: str) -> None:
    """Take projection `name`'s lock until the end of `conn`'s transaction: no other batch
    (of any process, engine or Kafka consumer) applies events to it meanwhile."""
    await conn.execute(_LOCK, (name,))


async def read_checkpoint(conn: AsyncConnection[Any], name: str) -> tuple[StreamPosition, str] | None:
    """A projection's (or the relay's) checkpoint and status; None if it is not registered."""
    row = await (await conn.execute(_READ_CHECKPOINT, (name,))).fetchone()
    return (StreamPosition(row[0], row[1]), row[2]) if row else None


async def register(pool: AsyncConnectionPool[AsyncConnection], name: str) -> None:
    """Create projection `name`'s checkpoint row (at position 0) if it has none."""
    with translated_errors():
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO projection_offsets (projection_name) VALUES (%s) ON CONFLICT DO NOTHING", (name,)
            )


class ProjectionEngine:
    def __init__(
        self, pool: AsyncConnectionPool[AsyncConnection], projection: Projection, batch_size: int = 1000
    ):
        self.pool = pool
        self.projection = projection
        self.batch_size = batch_size
        self._prefetched: tuple[StreamPosition, asyncio.Task[list[StoredEvent]]] | None = None
        self._parked: set[UUID] | None = None

    @property
    def name(self) -> str:
        return self.projection.name

    async def register(self) -> None:
        """Create the projection's checkpoint row (at position 0) if it has none."""
        await register(self.pool, self.name)

    async def run_batch(self, *, prefetch: bool = False) -> BatchResult:
        """Apply the next batch of events in a transaction of its own, under the
        projection's lock; `applied` is 0 when caught up or FAILED.

        With `prefetch`, a full batch starts reading the batch after it on another
        connection while it is applied (catch-up and replays: the read's parsing then
        overlaps the database's writing). A prefetched batch is used only if the
        checkpoint is where it was read from; otherwise it is dropped."""
        with translated_errors():
            async with self.pool.connection() as conn, conn.transaction():
                await self.lock(conn)
                return await self.advance(conn, prefetch=prefetch)

    async def lock(self, conn: AsyncConnection[Any]) -> None:
        await lock_projection(conn, self.name)

    async def advance(self, conn: AsyncConnection[Any], *, prefetch: bool = False) -> BatchResult:
        """`run_batch` inside the caller's transaction, which holds the lock."""
        start, status = await self.checkpoint(conn)
        if status == "FAILED":
            return BatchResult(0, start, start, status)
        if not await self.projection.intact(start):
            log.warning(
                "projection %s lost its data (at position %s): replaying from 0", self.name, start.position
            )
            await self.projection.reset(conn)
            await self.move_checkpoint(conn, StreamPosition(), "RUNNING")
            self._parked = None
            return BatchResult(0, start, StreamPosition(), "RUNNING")
        events = await self._next_events(conn, start)
        if not events:
            await self.projection.caught_up()
            return BatchResult(0, start, start, status)
        if prefetch and len(events) == self.batch_size:
            self._start_prefetch(events[-1].stream_position)
        started_ns = time.time_ns()
        applied, poison = await self._apply_unless_parked(conn, events)
        tracing.record_applied(
            _SPAN_NAMES.get(self.name, "warriors.projection.apply"), self.name, applied, started_ns
        )
        end = applied[-1].stream_position if applied else start
        EVENTS_APPLIED.labels(self.name).inc(len(applied))  # counted at the commit's attempt
        if log.isEnabledFor(logging.DEBUG):
            log_applied(log, self.name, applied)
        if poison is None:
            await self.move_checkpoint(conn, end, "RUNNING")
            if len(events) < self.batch_size:
                await self.projection.caught_up()
            return BatchResult(len(applied), start, end, "RUNNING")
        event, error = poison
        log.error("projection %s FAILED at event %s (position %s): %s",
                  self.name, event.event_id, event.position, error)  # fmt: skip
        await self.move_checkpoint(conn, end, "FAILED", error=error, failed_event_id=event.event_id)
        return BatchResult(len(applied), start, end, "FAILED")

    async def catch_up(self, max_batches: int | None = None) -> int:
        """Apply batches until caught up (or FAILED); returns how many events were applied."""
        total = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            result = await self.run_batch(prefetch=True)
            total += result.applied
            batches += 1
            if result.failed or (result.applied == 0 and result.end == result.start):  # not a reset
                break
        return total

    async def _next_events(self, conn: AsyncConnection[Any], start: StreamPosition) -> list[StoredEvent]:
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None:
            position, task = prefetched
            if position == start:
                with contextlib.suppress(Exception):  # a failed prefetch is simply read again
                    return await task
            task.cancel()
        return await read_after(conn, start, self.batch_size)

    def _start_prefetch(self, after: StreamPosition) -> None:
        async def read() -> list[StoredEvent]:
            async with self.pool.connection() as other:
                return await read_after(other, after, self.batch_size)

        task = asyncio.create_task(read())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "unretrieved"
        self._prefetched = (after, task)

    async def retry(self) -> None:
        """Operator action: clear FAILED; the next batch starts again at the failed event."""
        with translated_errors():
            async with self.pool.connection() as conn, conn.transaction():
                await self.lock(conn)
                cursor = await conn.execute(_RETRY, (self.name,))
                if cursor.rowcount != 1:
                    raise ProjectionNotFailed(f"projection {self.name} is not FAILED")

    async def park(self) -> StoredEvent:
        """Operator action: record the failed event as parked and move past it."""
        with translated_errors():
            async with self.pool.connection() as conn, conn.transaction():
                await self.lock(conn)
                start, status = await self.checkpoint(conn)
                cursor = await conn.execute(
                    "SELECT failed_event_id, last_error FROM projection_offsets WHERE projection_name = %s",
                    (self.name,),
                )
                failed_event_id, error = await cursor.fetchone() or (None, None)
                if status != "FAILED" or failed_event_id is None:
                    raise ProjectionNotFailed(f"projection {self.name} is not FAILED")
                [event] = await read_after(conn, start, 1)
                if event.event_id != failed_event_id:
                    raise ProjectionNotFailed(f"the next event of {self.name} is not the failed one")
                await self.projection.skip(conn, event)
                await conn.execute(
                    "INSERT INTO projection_parked_events (projection_name, event_id, position, error)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (self.name, event.event_id, event.position, error),
                )
                await self.move_checkpoint(conn, event.stream_position, "RUNNING")
                log.warning(
                    "projection %s parked event %s (position %s)", self.name, event.event_id, event.position
                )
                return event

    async def reset(self) -> None:
        """Empty the projection and move its checkpoint to 0 (a replay follows)."""
        self._parked = None  # the replay reads the parked events afresh (see _parked_events)
        with translated_errors():
            async with self.pool.connection() as conn, conn.transaction():
                await self.lock(conn)
                await self.projection.reset(conn)
                await self.move_checkpoint(conn, StreamPosition(), "RUNNING")

    async def checkpoint(self, conn: AsyncConnection[Any]) -> tuple[StreamPosition, str]:
        """The projection's checkpoint and status, as `conn` sees them."""
        found = await read_checkpoint(conn, self.name)
        if found is None:
            raise LookupError(f"projection {self.name} is not registered")
        return found

    async def move_checkpoint(
        self,
        conn: AsyncConnection[Any],
        position: StreamPosition,
        status: str,
        *,
        error: str | None = None,
        failed_event_id: Any = None,
    ) -> None:
        await conn.execute(
            _SAVE,
            {"transaction_id": str(position.transaction_id), "position": position.position, "status": status,
             "error": error, "failed_event_id": failed_event_id, "name": self.name},
        )  # fmt: skip

    async def _apply_unless_parked(
        self, conn: AsyncConnection[Any], events: list[StoredEvent]
    ) -> tuple[list[StoredEvent], tuple[StoredEvent, str] | None]:
        """`_apply`, passing over (`skip`) the events an operator parked for this
        projection: a replay or a rebuild goes past them as the live projection did."""
        parked = await self._parked_events(conn)
        if not parked or parked.isdisjoint(e.event_id for e in events):
            return await self._apply(conn, events)
        passed: list[StoredEvent] = []
        segment: list[StoredEvent] = []
        for event in [*events, None]:
            if event is not None and event.event_id not in parked:
                segment.append(event)
                continue
            applied, poison = await self._apply(conn, segment) if segment else ([], None)
            passed += applied
            if poison is not None:
                return passed, poison
            segment = []
            if event is not None:
                await self.projection.skip(conn, event)
                passed.append(event)
        return passed, None

    async def _parked_events(self, conn: AsyncConnection[Any]) -> set[UUID]:
        """Loaded once per engine, and again before a replay from 0: a park made later
        (by an operator, from another process) moves the checkpoint past its event, but a
        replay meets that event again and must pass over it."""
        if self._parked is None:
            cursor = await conn.execute(
                "SELECT event_id FROM projection_parked_events WHERE projection_name = %s", (self.name,)
            )
            self._parked = {row[0] for row in await cursor.fetchall()}
        return self._parked

    async def _apply(
        self, conn: AsyncConnection[Any], events: list[StoredEvent]
    ) -> tuple[list[StoredEvent], tuple[StoredEvent, str] | None]:
        """Apply `events`; on a failure keep those before the failing one. Returns the
        applied events and the failing (event, error), if any."""
        try:
            async with conn.transaction():  # a savepoint
                await self.projection.apply(conn, events)
            return events, None
        except PoisonEvent as poison:
            index = next(i for i, e in enumerate(events) if e.event_id == poison.event.event_id)
            if index == 0:
                return [], (events[0], poison.reason)
            # The events before it go through the same path: they may fail too.
            applied, failure = await self._apply(conn, events[:index])
            return applied, failure or (events[index], poison.reason)
        except Exception as exc:  # not a known poison: find the event that fails alone
            if _is_transient(exc):
                raise
            log.warning("projection %s: batch failed (%r); applying event by event", self.name, exc)
            for index, event in enumerate(events):
                try:
                    async with conn.transaction():
                        await self.projection.apply(conn, [event])
                except Exception as single:
                    if _is_transient(single):
                        raise
                    return events[:index], (event, f"{type(single).__name__}: {single}")
            return events, None


def _is_transient(exc: BaseException) -> bool:
    """The database or the target is away for now (a lost connection, an engine down or
    blocked): tried again later, never taken for a poison event."""
    return isinstance(exc, OperationalError | InterfaceError | OSError | ProjectionTargetUnavailable)
