"""What the event store holds right now: head, counts by type, recent append rate.

Read by the Dagster source asset `event_store` and by the sensor that starts catch-up
runs when the head moves. Every query is bounded: no full scan of the stream."""

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

RATE_WINDOW_SECONDS = 60

# Counting by type reads the whole table; the planner's per-type estimate is used
# instead once the store is large (an operator's gauge, not an exact figure).
_EXACT_COUNT_LIMIT = 200_000


# Per type: its share of a 1% sample times the planner's row estimate (-1 if never analyzed).
_ESTIMATED_BY_TYPE = """
SELECT event_type,
       (count(*) * (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'event_store'::regclass)
        / greatest(sum(count(*)) OVER (), 1))::bigint
FROM (SELECT event_type FROM event_store TABLESAMPLE SYSTEM (1)) AS s
GROUP BY 1 ORDER BY 1
"""


@dataclass(frozen=True, slots=True)
class StoreObservation:
    head_position: int  # highest position written (0: empty store)
    events: int  # events stored (exact up to _EXACT_COUNT_LIMIT, estimated beyond)
    events_by_type: dict[str, int]
    exact: bool
    appends_per_second: float  # over the last RATE_WINDOW_SECONDS


async def observe_store(conn: AsyncConnection[Any]) -> StoreObservation:
    cursor = await conn.execute("SELECT coalesce(max(position), 0) FROM event_store")
    head = int((await cursor.fetchone() or (0,))[0])
    cursor = await conn.execute(
        "SELECT count(*) FROM event_store"
        " WHERE position > %s - %s AND created_at > now() - make_interval(secs => %s)",
        (head, _EXACT_COUNT_LIMIT, RATE_WINDOW_SECONDS),
    )
    recent = int((await cursor.fetchone() or (0,))[0])
    exact = head <= _EXACT_COUNT_LIMIT
    if exact:
        cursor = await conn.execute("SELECT event_type, count(*) FROM event_store GROUP BY 1 ORDER BY 1")
    else:
        cursor = await conn.execute(_ESTIMATED_BY_TYPE)
    by_type = {event_type: int(count) for event_type, count in await cursor.fetchall()}
    return StoreObservation(
        head_position=head,
        events=sum(by_type.values()),
        events_by_type=by_type,
        exact=exact,
        appends_per_second=recent / RATE_WINDOW_SECONDS,
    )
