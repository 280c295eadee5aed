"""The `warriors_cache` projection: keeps the Redis read models (get-by-id cache entries
and the count) in step with the store, through version compare-and-sets.

A creation writes the whole warrior; a change marks the entry as changed at its version
(the next read fills it from PostgreSQL); a deletion writes a tombstone. Redis effects are
not in the engine's transaction, so a batch may be applied twice (a crash between Redis
and the checkpoint's commit): the per-warrior version kept in Redis makes that harmless.
A flushed Redis is noticed at the next batch and replayed from position 0.
"""

import time
from typing import Any

from psycopg import AsyncConnection

from warriors.adapters.redis_cache import CacheUnavailable, CacheWrite, RedisReadModels
from warriors.domain.events import (
    AGGREGATE_TYPE,
    WarriorCreated,
    WarriorDeleted,
    WarriorErased,
    event_from_data,
    is_erased,
)
from warriors.eventstore.opening import opened
from warriors.eventstore.records import START, StoredEvent, StreamPosition
from warriors.projections.base import ProjectionTargetUnavailable

CACHE = "warriors_cache"
_GONE = frozenset({WarriorDeleted.event_type, WarriorErased.event_type})


class WarriorsCache:
    def __init__(self, models: RedisReadModels, name: str = CACHE) -> None:
        self.name = name
        self.models = models
        self._ready_renewed = -1.0  # monotonic time the count's readiness was last renewed (< 0: not ready)

    async def apply(self, conn: AsyncConnection[Any], events: list[StoredEvent]) -> None:
        ours = [e for e in events if e.aggregate_type == AGGREGATE_TYPE]
        writes = [_write(e) for e in await opened(conn, ours)]
        if writes:
            await self._redis(self.models.apply(writes))

    async def skip(self, conn: AsyncConnection[Any], event: StoredEvent) -> None:
        await self._redis(
            self.models.apply([CacheWrite(event.aggregate_id, event.event_version, "changed", None)])
        )

    async def reset(self, conn: AsyncConnection[Any]) -> None:
        self._ready_renewed = -1.0
        await self._redis(self.models.clear())

    async def intact(self, checkpoint: StreamPosition, *, fresh: bool = False) -> bool:
        """Asks Redis every time (one EXISTS): always fresh."""
        if await self._redis(self.models.has_epoch()):
            return True
        if checkpoint == START:  # a fresh start: from here on, Redis holds everything applied
            await self._redis(self.models.start_epoch())
            return True
        self._ready_renewed = -1.0
        return False

    async def caught_up(self) -> None:
        """Called whenever the projection is at the head: the count's readiness is renewed
        (a third of its lifetime at most between renewals, one Redis call)."""
        now = time.monotonic()
        if self._ready_renewed < 0 or now - self._ready_renewed >= self.models.count_fresh_seconds / 3:
            await self._redis(self.models.mark_count_ready())
            self._ready_renewed = now

    async def close(self) -> None:
        await self.models.close()

    async def _redis(self, work: Any) -> Any:
        try:
            return await work
        except CacheUnavailable as exc:
            raise ProjectionTargetUnavailable(str(exc)) from exc


def _write(event: StoredEvent) -> CacheWrite:
    """`event` opened: an erased warrior's events (and its erasure) write tombstones."""
    if event.event_type in _GONE or is_erased(event.data):
        return CacheWrite(event.aggregate_id, event.event_version, "deleted", None)
    if event.event_type != WarriorCreated.event_type:
        return CacheWrite(event.aggregate_id, event.event_version, "changed", None)
    try:
        created = event_from_data(event.event_type, event.data)
    except (KeyError, TypeError, ValueError):  # unreadable: let a read fill it from PostgreSQL
        return CacheWrite(event.aggregate_id, event.event_version, "changed", None)
    assert isinstance(created, WarriorCreated)
    document = {
        "id": event.aggregate_id, "name": created.name, "dob": created.dob,
        "fight_skills": list(created.fight_skills), "version": event.event_version,
        "created_at": event.created_at, "updated_at": event.created_at,
    }  # fmt: skip
    return CacheWrite(event.aggregate_id, event.event_version, "created", document)
