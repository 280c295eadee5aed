"""Each projection's checkpoint, status and live lag, computed afresh (not as of its last
batch): what `GET /projections`, the CLI and the Dagster lag check and sensor report."""

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

RELAY = "warriors_kafka_relay"  # the relay's projection name (warriors/bus/relay.py)

# Events behind are counted exactly up to 10,000 and estimated from positions beyond;
# seconds behind is the age of the oldest event not applied yet (0 when caught up).
_STATUSES = """
SELECT o.projection_name, o.last_position, o.status, o.last_processed_at, o.last_error,
       o.failed_event_id,
       (SELECT CASE WHEN behind < 10000 THEN behind
                    ELSE greatest(behind, (SELECT max(position) FROM event_store) - o.last_position) END
        FROM (SELECT count(*) AS behind FROM (
            SELECT 1 FROM event_store e
            WHERE (e.transaction_id, e.position) > (o.last_transaction_id, o.last_position)
            LIMIT 10000) AS b) AS c) AS lag_events,
       coalesce(extract(epoch FROM now() - (
           SELECT created_at FROM event_store e
           WHERE (e.transaction_id, e.position) > (o.last_transaction_id, o.last_position)
           ORDER BY e.transaction_id, e.position LIMIT 1)), 0)::float8 AS lag_seconds,
       (SELECT count(*) FROM projection_parked_events p
        WHERE p.projection_name = o.projection_name AND p.discarded_at IS NULL) AS parked,
       extract(epoch FROM now() - o.last_processed_at)::float8 AS checkpoint_age
FROM projection_offsets o
{where}
ORDER BY o.projection_name
"""


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    position: int
    status: str
    last_processed_at: datetime
    last_error: str | None
    failed_event_id: UUID | None
    lag_events: int
    lag_seconds: float
    parked_events: int = 0  # parked and waiting for a replay or a discard
    consumer_group: str | None = None  # fed from Kafka: its group
    consumer_lag: int | None = None  # messages its group has not committed yet
    # Seconds since the checkpoint last moved, by the database's clock (not in the JSON:
    # the Dagster sensor's "is anybody projecting it?"). Fed from Kafka it does not move.
    checkpoint_age_seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "position": self.position,
            "status": self.status,
            "lag_events": self.lag_events,
            "lag_seconds": round(self.lag_seconds, 3),
            "last_processed_at": self.last_processed_at.isoformat(),
            "last_error": self.last_error,
            "failed_event_id": str(self.failed_event_id) if self.failed_event_id else None,
            "parked_events": self.parked_events,
            "consumer_group": self.consumer_group,
            "consumer_lag": self.consumer_lag,
        }


def consumer_group(projection: str) -> str:
    """The Kafka consumer group that feeds `projection` (warriors/bus/consumer.py)."""
    return f"warriors-{projection}"


# Per consumer group: the events the relay has published after the store order up to
# which the group's least advanced partition is applied (counted up to 10,000), and the
# age of the oldest: what it may not have consumed, from live facts (the store and the
# relay's checkpoint), whether or not the consumer is alive to say so. Each partition's
# order is what its member last recorded (sql/0016; see ProjectionConsumer._record_lag):
# a partition nobody consumes (its member died and the group has not moved it yet) stops
# moving, and must not be hidden by the partitions the live members keep recording. Every
# partition of the topic has a row as soon as any member knows it (a placeholder at the
# store's start until its own member records it: see _PLACEHOLDERS there), so a partition
# whose member died before its first record counts too. A group that never recorded
# anything has consumed nothing.
_UNCONSUMED = """
WITH relayed AS (
    SELECT last_transaction_id AS t, last_position AS p FROM projection_offsets
    WHERE projection_name = %(relay)s
), applied AS (
    SELECT wanted.group_id, coalesce(lowest.t, '0'::xid8) AS t, coalesce(lowest.p, 0) AS p
    FROM unnest(%(groups)s::text[]) AS wanted(group_id)
    LEFT JOIN LATERAL (
        SELECT l.applied_transaction_id AS t, l.applied_position AS p FROM bus_consumer_lag l
        WHERE l.group_id = wanted.group_id ORDER BY 1, 2 LIMIT 1) AS lowest ON true
)
SELECT a.group_id,
       (SELECT count(*) FROM (
            SELECT 1 FROM event_store e
            WHERE (e.transaction_id, e.position) > (a.t, a.p) AND (e.transaction_id, e.position) <= (r.t, r.p)
            LIMIT 10000) AS x),
       coalesce(extract(epoch FROM now() - (
            SELECT e.created_at FROM event_store e
            WHERE (e.transaction_id, e.position) > (a.t, a.p) AND (e.transaction_id, e.position) <= (r.t, r.p)
            ORDER BY e.transaction_id, e.position LIMIT 1)), 0)::float8
FROM applied a CROSS JOIN relayed r
"""

# A sink being rebuilt from the event store by a Kafka consumer (warriors/bus/consumer.py,
# `sink_rebuilds`), or left partial by a rebuild whose owner died: what its topic consumers
# applied says nothing about the events before, so its lag is also the events the rebuild
# has not replayed yet (counted up to 10,000) and the age of the oldest of them; past the
# head but not finished (its owner died at the very end, or is marking it), the age of its
# last progress. A dead owner's rebuild stops moving, and this grows.
_REBUILDING = """
SELECT r.projection_name,
       (SELECT count(*) FROM (
            SELECT 1 FROM event_store e
            WHERE (e.transaction_id, e.position) > (r.replayed_transaction_id, r.replayed_position)
            LIMIT 10000) AS b),
       coalesce(extract(epoch FROM now() - coalesce(
           (SELECT e.created_at FROM event_store e
            WHERE (e.transaction_id, e.position) > (r.replayed_transaction_id, r.replayed_position)
            ORDER BY e.transaction_id, e.position LIMIT 1),
           r.updated_at)), 0)::float8
FROM sink_rebuilds r WHERE r.state = 'rebuilding'
"""

_CONSUMER_LAG = """
SELECT group_id, sum(greatest(end_offset - committed, 0))::bigint FROM bus_consumer_lag GROUP BY group_id
"""


async def unconsumed_events(conn: AsyncConnection[Any], projection: str) -> int:
    """The events the relay has published that `projection`'s consumer group may not have
    applied yet (_UNCONSUMED: after its least advanced partition), up to 10,000."""
    cursor = await conn.execute(_UNCONSUMED, {"groups": [consumer_group(projection)], "relay": RELAY})
    row = await cursor.fetchone()
    return 0 if row is None else int(row[1])


async def projection_statuses(
    conn: AsyncConnection[Any], name: str | None = None, *, kafka: bool = False
) -> list[ProjectionStatus]:
    """Every registered projection's status (or only `name`'s).

    With `kafka`, the projections are fed from the topic, not from the store: each one's
    lag is the relay's (events not published yet) plus its consumer group's (messages not
    applied yet), and its position is the relay's."""
    if name is None:
        cursor = await conn.execute(_STATUSES.format(where=""))
    else:
        where = "WHERE o.projection_name IN (%s, %s)"  # the relay too: a Kafka-fed lag needs it
        cursor = await conn.execute(_STATUSES.format(where=where), (name, RELAY))
    statuses = [_status(row) for row in await cursor.fetchall()]
    if kafka:
        relay = next((s for s in statuses if s.name == RELAY), None)
        cursor = await conn.execute(_CONSUMER_LAG)
        lags = {group: int(lag) for group, lag in await cursor.fetchall()}
        unconsumed: dict[str, tuple[int, float]] = {}
        if relay is not None:
            groups = [consumer_group(s.name) for s in statuses if s.name != RELAY]
            cursor = await conn.execute(_UNCONSUMED, {"groups": groups, "relay": RELAY})
            unconsumed = {
                group: (int(events), float(seconds)) for group, events, seconds in await cursor.fetchall()
            }
        cursor = await conn.execute(_REBUILDING)
        rebuilding = {
            name: (int(events), float(seconds)) for name, events, seconds in await cursor.fetchall()
        }
        statuses = [_rebuilt(_through_kafka(s, relay, lags, unconsumed), rebuilding) for s in statuses]
    return [s for s in statuses if name is None or s.name == name]


def _status(row: tuple[Any, ...]) -> ProjectionStatus:
    """A row of _STATUSES."""
    return ProjectionStatus(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        max(row[6], 0),
        row[7],
        row[8],
        checkpoint_age_seconds=row[9],
    )


def _through_kafka(
    status: ProjectionStatus,
    relay: ProjectionStatus | None,
    lags: dict[str, int],
    unconsumed: dict[str, tuple[int, float]],
) -> ProjectionStatus:
    """The relay's lag plus the group's. The group's is the larger of what it recorded at
    its last batch (offsets) and what it has not consumed since (below): a consumer that
    died or hangs records nothing, and its lag must grow all the same."""
    if status.name == RELAY or relay is None:
        return status
    group = consumer_group(status.name)
    since_events, since_seconds = unconsumed.get(group, (0, 0.0))
    consumer_lag = max(lags.get(group, 0), since_events)
    return replace(
        status,
        position=relay.position,
        lag_events=relay.lag_events + consumer_lag,
        lag_seconds=max(relay.lag_seconds, since_seconds),
        consumer_group=group,
        consumer_lag=consumer_lag,
    )


def _rebuilt(status: ProjectionStatus, rebuilding: dict[str, tuple[int, float]]) -> ProjectionStatus:
    """A sink being rebuilt from the store (or left partial) is REBUILDING, at least one
    event behind whatever its consumers say (the rebuild is not over until it says so), and
    as far behind as its replay is."""
    if status.name not in rebuilding or status.status == "FAILED":
        return status
    events, seconds = rebuilding[status.name]
    return replace(
        status,
        status="REBUILDING",
        lag_events=max(status.lag_events, events, 1),
        lag_seconds=max(status.lag_seconds, seconds),
    )
