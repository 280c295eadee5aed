"""Blue/green rebuild of a projection, without downtime (a PostgreSQL table, a search
index: any `BlueGreenProjection`).

1. Shadow storage is created beside the live one (a table like the live one; a new index
   generation) and filled from position 0 under a checkpoint of its own, batch by batch,
   while the live storage keeps serving and the live projector keeps it current.
2. Once the shadow is nearly caught up, one short transaction takes the live
   projection's lock (the live projector pauses after its current batch), applies the
   last events to the shadow, swaps the shadow in (the table: renames; the index: one
   atomic alias move) and moves the live checkpoint to the shadow's. Readers find the
   storage by name, so the next query reads the new one. A table's renames wait at most
   a moment for readers already on it; if that is not enough, the swap is undone, the
   shadow keeps filling, and the swap is tried again after a pause.
3. The storage the swap replaced is dropped.

Events the operator parked for the live projection are passed over in the shadow too.

Two rebuilds of one projection never overlap: each holds a session advisory lock for its
whole run (`RebuildInProgress` otherwise). A poison event in the shadow stops the
rebuild (`RebuildFailed`), drops the shadow and leaves the live projection untouched.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from warriors.eventstore.errors import translated_errors
from warriors.metrics import REBUILD_SECONDS
from warriors.projections.base import BlueGreenProjection, Projection
from warriors.projections.engine import BatchResult, ProjectionEngine, lock_projection, register
from warriors.projections.status import projection_statuses

log = logging.getLogger("warriors.projections.rebuild")

_SWAP_ATTEMPTS = 30


class RebuildInProgress(Exception):
    """Another rebuild of the same projection is running."""


class RebuildFailed(Exception):
    """The shadow could not be built (a poison event); the live projection is untouched."""

    def __init__(self, message: str, event_id: UUID | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id  # the poison event, when one stopped it
        self.error = error


@dataclass(frozen=True, slots=True)
class RebuildReport:
    projection: str
    events: int  # applied to the shadow in all
    events_during_swap: int  # of which applied under the live projection's lock
    position: int  # the checkpoint both tables had at the swap
    seconds: float
    swap_seconds: float


async def rebuild_blue_green(
    pool: AsyncConnectionPool[AsyncConnection],
    live: BlueGreenProjection,
    *,
    batch_size: int = 1000,
    progress: Callable[[str], None] = log.info,
    replaying: frozenset[UUID] = frozenset(),
) -> RebuildReport:
    """`replaying`: parked events of the live projection to apply this time (after a fix);
    at the swap they stop being parked. Should one fail again, nothing changes."""
    started = time.monotonic()
    shadow = live.shadow()
    with translated_errors():
        async with _exclusive_rebuild(pool, live.name):
            try:
                # A projection no projector has run yet gets its checkpoint now: the swap
                # moves it (an UPDATE), and without a row the rebuilt table had none.
                await register(pool, live.name)
                await _create_shadow(pool, live, shadow, replaying)
                progress(f"{live.name}: building {shadow.name} from position 0")
                shadow_engine = ProjectionEngine(pool, shadow, batch_size)
                built = 0
                for attempt in range(1, _SWAP_ATTEMPTS + 1):
                    built += await _fill(shadow_engine, batch_size, progress)
                    swap_started = time.monotonic()
                    swapped = await _try_swap(live, shadow, shadow_engine, replaying)
                    if swapped is not None:
                        break
                    pause = min(0.1 * 2**attempt, 2.0)
                    progress(
                        f"{live.name}: readers held the table; swap {attempt} undone, again in {pause:.1f}s"
                    )
                    await asyncio.sleep(pause)  # the readers finish meanwhile; the shadow keeps filling
                else:
                    raise RebuildFailed(
                        f"{live.name}: readers held the table through {_SWAP_ATTEMPTS} swap attempts"
                    )
                swap_seconds = time.monotonic() - swap_started
                final, position = swapped
                async with pool.connection() as conn:
                    await live.retire(conn)
            except BaseException:
                await _drop_shadow(pool, live, shadow)
                raise
    report = RebuildReport(
        live.name, built + final, final, position, time.monotonic() - started, swap_seconds
    )
    REBUILD_SECONDS.labels(live.name).observe(report.seconds)
    progress(
        f"{live.name}: swapped in at position {position}: {report.events} events"
        f" in {report.seconds:.1f}s (the swap held the projection for {swap_seconds * 1000:.0f} ms)"
    )
    return report


def _lock_key(name: str) -> str:
    return f"rebuild:{name}"


@asynccontextmanager
async def _exclusive_rebuild(pool: AsyncConnectionPool[AsyncConnection], name: str) -> AsyncIterator[None]:
    """Hold the projection's rebuild lock (a session lock, on a connection of its own)."""
    async with pool.connection() as guard:
        cursor = await guard.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_lock_key(name),)
        )
        row = await cursor.fetchone()
        if not (row and row[0]):
            raise RebuildInProgress(f"a rebuild of {name} is already running")
        try:
            yield
        finally:
            await guard.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (_lock_key(name),))


async def _create_shadow(
    pool: AsyncConnectionPool[AsyncConnection],
    live: BlueGreenProjection,
    shadow: BlueGreenProjection,
    replaying: frozenset[UUID],
) -> None:
    """Fresh shadow storage and checkpoint (a crashed rebuild's leftovers are dropped),
    with the live projection's parked events but those being replayed. Under the live
    projection's lock, as every reset: the search index's shadow makes sure the alias
    exists and deletes every other generation, and a Kafka member resetting the index
    meanwhile (a new generation, then the alias moved to it) ended with two indexes behind
    the alias, or its new one deleted; every later lookup of the alias then failed."""
    async with pool.connection() as conn, conn.transaction():
        await lock_projection(conn, live.name)
        await live.create_shadow(conn, shadow)
        await _forget_checkpoint(conn, shadow.name)
        await conn.execute("INSERT INTO projection_offsets (projection_name) VALUES (%s)", (shadow.name,))
        await conn.execute(
            "INSERT INTO projection_parked_events (projection_name, event_id, position, error)"
            " SELECT %s, event_id, position, error FROM projection_parked_events"
            " WHERE projection_name = %s AND event_id <> ALL(%s)",
            (shadow.name, live.name, list(replaying)),
        )


async def _forget_checkpoint(conn: AsyncConnection[Any], name: str) -> None:
    await conn.execute("DELETE FROM projection_offsets WHERE projection_name = %s", (name,))
    await conn.execute("DELETE FROM projection_parked_events WHERE projection_name = %s", (name,))


async def _fill(engine: ProjectionEngine, batch_size: int, progress: Callable[[str], None]) -> int:
    """Batches until one comes back short (the shadow is close to the head)."""
    total = 0
    reported = time.monotonic()
    while True:
        result = await engine.run_batch(prefetch=True)
        await _raise_if_failed(engine, result)
        total += result.applied
        if time.monotonic() - reported >= 5:
            progress(f"{engine.name}: {total} events applied (position {result.end.position})")
            reported = time.monotonic()
        if result.applied < batch_size:
            return total


async def _try_swap(
    live: BlueGreenProjection,
    shadow: BlueGreenProjection,
    shadow_engine: ProjectionEngine,
    replaying: frozenset[UUID],
) -> tuple[int, int] | None:
    """(events applied under the lock, the checkpoint position at the swap), or None when
    readers held the live storage too long (nothing was changed)."""
    live_engine = ProjectionEngine(shadow_engine.pool, live)
    try:
        async with shadow_engine.pool.connection() as conn, conn.transaction():
            await live_engine.lock(conn)
            await shadow_engine.lock(conn)
            final = 0
            while (result := await shadow_engine.advance(conn)).applied:
                await _raise_if_failed(shadow_engine, result, conn)
                final += result.applied
            await _raise_if_failed(shadow_engine, result, conn)
            position, _ = await shadow_engine.checkpoint(conn)
            await live.swap_in(conn, shadow)
            await live_engine.move_checkpoint(conn, position, "RUNNING")
            await unpark(conn, live.name, replaying)  # applied now: in the same transaction
            await _forget_checkpoint(conn, shadow.name)
            return final, position.position
    except errors.LockNotAvailable:
        return None


async def _raise_if_failed(
    engine: ProjectionEngine, result: BatchResult, conn: AsyncConnection[Any] | None = None
) -> None:
    """RebuildFailed with the poison event's error (read on `conn` when the FAILED status
    is not committed yet)."""
    if not result.failed:
        return
    if conn is None:
        async with engine.pool.connection() as own:
            [status] = await projection_statuses(own, engine.name)
    else:
        [status] = await projection_statuses(conn, engine.name)
    raise RebuildFailed(
        f"{engine.name} stopped at a poison event after position {result.end.position}: {status.last_error}."
        " The live projection is untouched; fix or park the event, then rebuild again.",
        status.failed_event_id,
        status.last_error,
    )


async def unpark(conn: AsyncConnection[Any], name: str, event_ids: frozenset[UUID]) -> None:
    if event_ids:
        await conn.execute(
            "DELETE FROM projection_parked_events WHERE projection_name = %s AND event_id = ANY(%s)",
            (name, list(event_ids)),
        )


async def _drop_shadow(
    pool: AsyncConnectionPool[AsyncConnection], live: BlueGreenProjection, shadow: BlueGreenProjection
) -> None:
    async with pool.connection() as conn, conn.transaction():
        await live.drop_shadow(conn, shadow)
        await _forget_checkpoint(conn, shadow.name)


async def rebuild_in_place(
    pool: AsyncConnectionPool[AsyncConnection],
    projection: Projection,
    *,
    batch_size: int = 1000,
    progress: Callable[[str], None] = log.info,
    replaying: frozenset[UUID] = frozenset(),
) -> RebuildReport:
    """Rebuild a projection outside PostgreSQL (a cache): empty it and replay from
    position 0. Its readers fall back to PostgreSQL until it has caught up again.
    `replaying`: parked events to apply this time; one that fails again leaves the
    projection FAILED at it, as any poison event does (park it again)."""
    started = time.monotonic()
    engine = ProjectionEngine(pool, projection, batch_size)
    with translated_errors():
        async with _exclusive_rebuild(pool, projection.name):
            await engine.register()
            if replaying:
                async with pool.connection() as conn:
                    await unpark(conn, projection.name, replaying)
            await engine.reset()
            progress(f"{projection.name}: emptied; replaying from position 0")
            total = await _fill(engine, batch_size, progress)
            while (more := await engine.catch_up()) > 0:
                total += more
            async with pool.connection() as conn:
                position, _ = await engine.checkpoint(conn)
    report = RebuildReport(projection.name, total, 0, position.position, time.monotonic() - started, 0.0)
    REBUILD_SECONDS.labels(projection.name).observe(report.seconds)
    progress(
        f"{projection.name}: replayed {total} events to position {position.position} in {report.seconds:.1f}s"
    )
    return report
