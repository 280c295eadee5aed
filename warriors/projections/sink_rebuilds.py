"""A Kafka-fed sink's rebuilds from the event store (`sink_rebuilds`, sql/0014): asked for by
whoever notices the need (a member of the sink's consumer group, or an operator through
the CLI or Dagster), carried out by one member of that group (warriors/bus/consumer.py).

An operator's rebuild of the Redis cache in Kafka mode goes through the group, not around
it. Emptied and replayed by the operator's own engine, it had the group's members, idle at
the topic's end, call the cache caught up within a second: readers were served a partial
count, old versions and deleted warriors (issue 25, item 1). Asked of the group, the
cache is marked partial from the start until the member's replay finishes, and the
status says REBUILDING with the replay's lag meanwhile."""

import asyncio
import time
from collections.abc import Callable
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from warriors.projections.cache import WarriorsCache
from warriors.projections.rebuild import RebuildFailed, RebuildReport, unpark

# A sink's rebuild asked for (a new generation) unless one is under way already, which
# covers the new reason too (it reads the store up to its head, after it).
REQUEST_REBUILD = """
INSERT INTO sink_rebuilds AS r (projection_name, generation, state, reason)
VALUES (%(name)s, 1, 'rebuilding', %(reason)s)
ON CONFLICT (projection_name) DO UPDATE
SET generation = r.generation + 1, state = 'rebuilding', reason = excluded.reason, owner = NULL,
    requested_at = now(), started_at = NULL, finished_at = NULL,
    replayed_transaction_id = '0', replayed_position = 0, topic_ends = NULL, updated_at = now()
WHERE r.state = 'complete'
RETURNING generation
"""
_STATE = """
SELECT generation, state, owner, replayed_position, (SELECT max(position) FROM event_store)
FROM sink_rebuilds WHERE projection_name = %s
"""
# How long an operator's rebuild waits for a member of the group to take it.
UNOWNED_SECONDS = 60.0
PROGRESS_SECONDS = 5.0  # how often the wait says how far the replay got


async def request_rebuild(conn: AsyncConnection, name: str, reason: str) -> int | None:
    """Record that the sink must be rebuilt; its new generation, or None when one under way covers it."""
    row = await (await conn.execute(REQUEST_REBUILD, {"name": name, "reason": reason})).fetchone()
    return None if row is None else int(row[0])


async def rebuild_through_the_group(
    pool: AsyncConnectionPool[AsyncConnection],
    cache: WarriorsCache,
    *,
    progress: Callable[[str], None],
    replaying: frozenset[UUID] = frozenset(),
    unowned_seconds: float = UNOWNED_SECONDS,
) -> RebuildReport:
    """Ask the cache's consumer group to empty the cache and rebuild it from the store,
    and wait until a member has (`replaying`: parked events it applies this time). The
    cache is marked partial first (never ready until the replay finished) and emptied, so
    whichever member takes the rebuild starts from nothing."""
    started = time.monotonic()
    name = cache.name
    async with pool.connection() as conn, conn.transaction():
        await unpark(conn, name, replaying)
        generation = await request_rebuild(conn, name, "asked for by an operator")
        if generation is None:  # one under way: emptied below, its owner starts it over
            row = await (await conn.execute(_STATE, (name,))).fetchone()
            assert row is not None
            generation = int(row[0])
        await cache.reset(conn)  # lost: whoever carries the rebuild out starts from nothing
    await cache.models.begin_rebuild(generation)
    progress(
        f"{name}: rebuild {generation} asked of its consumer group; waiting for a member to carry it out"
    )
    return await _wait(pool, name, generation, started, progress, unowned_seconds)


async def _wait(
    pool: AsyncConnectionPool[AsyncConnection],
    name: str,
    generation: int,
    started: float,
    progress: Callable[[str], None],
    unowned_seconds: float,
) -> RebuildReport:
    said = time.monotonic()
    while True:
        async with pool.connection() as conn:
            row = await (await conn.execute(_STATE, (name,))).fetchone()
        assert row is not None, "the rebuild's row is gone"
        current, state, owner, replayed, head = row
        now = time.monotonic()
        if state == "complete" and current >= generation:  # ours, or a later one that covers it
            progress(f"{name}: rebuilt from the event store by its consumer group in {now - started:.1f}s")
            return RebuildReport(name, int(replayed), 0, int(replayed), now - started, 0.0)
        if owner is None and now - started > unowned_seconds:
            raise RebuildFailed(
                f"{name}: no member of its consumer group took rebuild {generation}"
                f" in {unowned_seconds:.0f}s:"
                " is `warriors project` running with Kafka? The rebuild stays asked for (the cache is not"
                " served meanwhile); a member carries it out when one starts."
            )
        if now - said >= PROGRESS_SECONDS:
            by = owner or "no owner yet"
            progress(f"{name}: rebuild {generation} at position {replayed} of {head or 0} ({by})")
            said = now
        await asyncio.sleep(0.2)  # polling the rebuild's row, bounded by the checks above
