"""Which aggregates are due a snapshot, and taking them.

An aggregate is due when it has `threshold` or more events since its latest snapshot
(or since its start, with none). Two ways to find them, both in bounded chunks:

- `due_after`: among the aggregates touched by the events after a stream position (the
  Dagster sensor's cursor): only an aggregate that received events can become due.
- `due_by_id`: every aggregate, in id order after a given id (the asset's full sweep).
"""

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from warriors.eventstore.reader import read_after
from warriors.eventstore.records import StreamPosition

_DUE = """
SELECT t.id FROM unnest(%(ids)s::uuid[], %(versions)s::int[]) AS t(id, version)
WHERE t.version - coalesce(
    (SELECT max(s.version) FROM event_snapshots s WHERE s.aggregate_id = t.id), 0) >= %(threshold)s
ORDER BY t.id
"""

_LATEST_VERSIONS = """
SELECT aggregate_id, max(event_version) FROM event_store
WHERE aggregate_id > %s GROUP BY aggregate_id ORDER BY aggregate_id LIMIT %s
"""


async def due_after(
    conn: AsyncConnection[Any], after: StreamPosition, threshold: int, limit: int
) -> tuple[list[UUID], int, StreamPosition]:
    """Aggregates due among those touched by up to `limit` events after `after` (gap-safe):
    (due ids, events scanned, the position to resume from)."""
    events = await read_after(conn, after, limit)
    latest: dict[UUID, int] = {}
    for event in events:
        latest[event.aggregate_id] = max(latest.get(event.aggregate_id, 0), event.event_version)
    due = await _due(conn, latest, threshold)
    return due, len(events), events[-1].stream_position if events else after


async def due_by_id(
    conn: AsyncConnection[Any], after_id: UUID | None, threshold: int, limit: int
) -> tuple[list[UUID], UUID | None]:
    """Aggregates due among the next `limit` aggregates by id: (due ids, the id to resume
    after, None once every aggregate was looked at)."""
    cursor = await conn.execute(_LATEST_VERSIONS, (after_id or UUID(int=0), limit))
    latest = {aggregate_id: version for aggregate_id, version in await cursor.fetchall()}
    due = await _due(conn, latest, threshold)
    return due, (max(latest) if len(latest) == limit else None)


async def _due(conn: AsyncConnection[Any], latest: dict[UUID, int], threshold: int) -> list[UUID]:
    if not latest:
        return []
    cursor = await conn.execute(
        _DUE, {"ids": list(latest), "versions": list(latest.values()), "threshold": threshold}
    )
    return [row[0] for row in await cursor.fetchall()]
