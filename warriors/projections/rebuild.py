"""Blue/green rebuild of a table projection, without downtime.

1. A shadow table is created like the live one (same columns, indexes, constraints) and
   filled from position 0 under a checkpoint of its own, batch by batch, while the live
   table keeps serving and the live projector keeps it current.
2. Once the shadow is nearly caught up, one short transaction takes the live
   projection's lock (the live projector pauses after its current batch), applies the
   last events to the shadow, renames live -> retired and shadow -> live, moves the live
   checkpoint to the shadow's, and lets the projection adopt the new table (the count).
   Readers resolve the table by name, so the next query reads the new table; a query
   that arrives during the renames waits for them (milliseconds), it never fails.
3. The retired table is dropped.

Two rebuilds of one projection never overlap: each holds a session advisory lock for its
whole run (`RebuildInProgress` otherwise). A poison event in the shadow stops the
rebuild (`RebuildFailed`), drops the shadow and leaves the live projection untouched.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, errors, sql
from psycopg_pool import AsyncConnectionPool

from warriors.eventstore.errors import translated_errors
from warriors.projections.base import TableProjection
from warriors.projections.engine import BatchResult, ProjectionEngine
from warriors.projections.status import projection_statuses

log = logging.getLogger("warriors.projections.rebuild")

RETIRED_SUFFIX = "__retired"
_SWAP_ATTEMPTS = 5


class RebuildInProgress(Exception):
    """Another rebuild of the same projection is running."""


class RebuildFailed(Exception):
    """The shadow could not be built (a poison event); the live projection is untouched."""


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
    live: TableProjection,
    *,
    batch_size: int = 1000,
    lock_timeout_seconds: float = 5.0,
    progress: Callable[[str], None] = log.info,
) -> RebuildReport:
    started = time.monotonic()
    shadow = live.shadow()
    with translated_errors():
        async with pool.connection() as guard:
            await _hold_rebuild_lock(guard, live.name)
            try:
                await _create_shadow(pool, live, shadow)
                progress(f"{live.name}: building {shadow.table} from position 0")
                shadow_engine = ProjectionEngine(pool, shadow, batch_size)
                built = await _fill(shadow_engine, batch_size, progress)
                swap_started = time.monotonic()
                final, position = await _swap(
                    pool, live, shadow, shadow_engine, lock_timeout_seconds, progress
                )
                swap_seconds = time.monotonic() - swap_started
                async with pool.connection() as conn:
                    await conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(live.table + RETIRED_SUFFIX))
                    )
            except BaseException:
                await _drop_shadow(pool, shadow)
                raise
            finally:
                await guard.execute(
                    "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (_lock_key(live.name),)
                )
    report = RebuildReport(
        live.name, built + final, final, position, time.monotonic() - started, swap_seconds
    )
    progress(
        f"{live.name}: swapped in at position {position}: {report.events} events"
        f" in {report.seconds:.1f}s (the swap held the projection for {swap_seconds * 1000:.0f} ms)"
    )
    return report


def _lock_key(name: str) -> str:
    return f"rebuild:{name}"


async def _hold_rebuild_lock(guard: AsyncConnection[Any], name: str) -> None:
    cursor = await guard.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_lock_key(name),))
    row = await cursor.fetchone()
    if not (row and row[0]):
        raise RebuildInProgress(f"a rebuild of {name} is already running")


async def _create_shadow(
    pool: AsyncConnectionPool[AsyncConnection], live: TableProjection, shadow: TableProjection
) -> None:
    """A fresh shadow table and checkpoint (a crashed rebuild's leftovers are dropped)."""
    async with pool.connection() as conn, conn.transaction():
        for table in (shadow.table, live.table + RETIRED_SUFFIX):
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        await conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier(shadow.table), sql.Identifier(live.table)
            )
        )
        await conn.execute("DELETE FROM projection_offsets WHERE projection_name = %s", (shadow.name,))
        await conn.execute("INSERT INTO projection_offsets (projection_name) VALUES (%s)", (shadow.name,))


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


async def _swap(
    pool: AsyncConnectionPool[AsyncConnection],
    live: TableProjection,
    shadow: TableProjection,
    shadow_engine: ProjectionEngine,
    lock_timeout_seconds: float,
    progress: Callable[[str], None],
) -> tuple[int, int]:
    """(events applied under the lock, the checkpoint position at the swap)."""
    live_engine = ProjectionEngine(pool, live)
    for attempt in range(1, _SWAP_ATTEMPTS + 1):
        try:
            async with pool.connection() as conn, conn.transaction():
                # A reader holding the live table longer than this makes the swap give up
                # and try again, rather than queue every other reader behind it.
                await conn.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_seconds}s"))
                )
                await live_engine.lock(conn)
                await shadow_engine.lock(conn)
                final = 0
                while (result := await shadow_engine.advance(conn)).applied:
                    await _raise_if_failed(shadow_engine, result)
                    final += result.applied
                await _raise_if_failed(shadow_engine, result)
                position, _ = await shadow_engine.checkpoint(conn)
                await _rename(conn, live.table, live.table + RETIRED_SUFFIX)
                await _rename(conn, shadow.table, live.table)
                await live_engine.move_checkpoint(conn, position, "RUNNING")
                await live.adopt(conn)
                await conn.execute(
                    "DELETE FROM projection_offsets WHERE projection_name = %s", (shadow_engine.name,)
                )
                return final, position.position
        except errors.LockNotAvailable:
            progress(f"{live.name}: swap attempt {attempt} timed out waiting for readers; trying again")
    raise RebuildFailed(f"{live.name}: could not take the table for the swap in {_SWAP_ATTEMPTS} attempts")


async def _rename(conn: AsyncConnection[Any], table: str, new_name: str) -> None:
    await conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(table), sql.Identifier(new_name))
    )


async def _raise_if_failed(engine: ProjectionEngine, result: BatchResult) -> None:
    if not result.failed:
        return
    async with engine.pool.connection() as conn:
        [status] = await projection_statuses(conn, engine.name)
    raise RebuildFailed(
        f"{engine.name} stopped at a poison event after position {result.end.position}: {status.last_error}."
        " The live projection is untouched; fix or park the event, then rebuild again."
    )


async def _drop_shadow(pool: AsyncConnectionPool[AsyncConnection], shadow: TableProjection) -> None:
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(shadow.table)))
        await conn.execute("DELETE FROM projection_offsets WHERE projection_name = %s", (shadow.name,))
