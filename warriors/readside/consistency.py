"""Is the read model what the event store says it should be?

Checked in one REPEATABLE READ transaction, so the read model, its count and its
checkpoint are seen at one instant (they move together), and every event up to the
checkpoint is visible:

- counts: rows in the read model == `warrior_count` == warriors created minus deleted
  up to the checkpoint, leaving out the events an operator parked (their number is
  reported);
- a sample: `sample_size` random rows, each compared with its warrior folded again from
  its events up to the checkpoint.

Fed from Kafka (`kafka=True`) there is no global checkpoint: partitions move on their
own, and `projection_offsets` never moves. The counts are then compared with the whole
store, and only when the projections' consumer groups stand at the head (no lag before and
after, the head unchanged); otherwise the report says they were not compared. Each sampled
row is compared with its warrior folded from its events up to the row's own version, and
must be at least at its warrior's last version among the events its consumer group has
applied in every partition (a row stuck at an older version, a lost update, matches its
own events all the same).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row

from warriors.adapters.redis_cache import RedisReadModels
from warriors.adapters.search_engine import SearchEngine
from warriors.application.warrior_commands import living, rebuild
from warriors.eventstore.opening import opened
from warriors.eventstore.reader import EVENT_COLUMNS, stored_event
from warriors.eventstore.records import StoredEvent
from warriors.eventstore.store import AggregateStream
from warriors.projections.read_model import READ_MODEL as READ_MODEL_TABLE
from warriors.projections.status import consumer_group, projection_statuses

_EXPECTED = """
SELECT count(*) FILTER (WHERE event_type = 'WarriorCreated')
     - count(DISTINCT aggregate_id) FILTER (WHERE event_type IN ('WarriorDeleted', 'WarriorErased'))
FROM event_store
WHERE (transaction_id, position) <= (%s::text::xid8, %s)
  AND event_id NOT IN (SELECT event_id FROM projection_parked_events WHERE projection_name = %s)
"""

_EVENTS_UP_TO_VERSIONS = f"""
SELECT {EVENT_COLUMNS} FROM event_store e
JOIN unnest(%s::uuid[], %s::int[]) AS s(id, version) ON e.aggregate_id = s.id AND e.event_version <= s.version
ORDER BY e.aggregate_id, e.event_version
"""

# Fed from Kafka: for each sampled warrior, its last version among the events at or before
# the order up to which its consumer group has applied every partition (the least advanced
# row of `bus_consumer_lag`; a partition never recorded has a row at the store's start, and
# a group that recorded nothing stands there too): the row must hold at least that version.
_APPLIED_FLOOR_VERSIONS = """
WITH floor AS (
    SELECT coalesce((SELECT l.applied_transaction_id FROM bus_consumer_lag l WHERE l.group_id = %(group)s
                     ORDER BY l.applied_transaction_id, l.applied_position LIMIT 1), '0'::xid8) AS t,
           coalesce((SELECT l.applied_position FROM bus_consumer_lag l WHERE l.group_id = %(group)s
                     ORDER BY l.applied_transaction_id, l.applied_position LIMIT 1), 0) AS p
)
SELECT e.aggregate_id, max(e.event_version) FROM event_store e, floor f
WHERE e.aggregate_id = ANY(%(ids)s) AND (e.transaction_id, e.position) <= (f.t, f.p)
GROUP BY 1
"""

_HEAD = "SELECT coalesce(max(position), 0) FROM event_store"
# The largest transaction id: with it, "up to (transaction id, head)" means every event
# the snapshot sees up to the head.
_ANY_TRANSACTION = 2**64 - 1

_EVENTS_UP_TO = f"""
SELECT {EVENT_COLUMNS} FROM event_store
WHERE aggregate_id = ANY(%s) AND (transaction_id, position) <= (%s::text::xid8, %s)
ORDER BY aggregate_id, event_version
"""


@dataclass(frozen=True)
class ConsistencyReport:
    checkpoint: int
    rows: int
    counted: int  # warrior_count.total
    expected: int  # created - deleted up to the checkpoint
    parked_events: int
    sampled: int
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts_compared: bool = True  # False: fed from Kafka and moving (see `notes`)

    @property
    def counts_agree(self) -> bool:
        return not self.counts_compared or self.rows == self.counted == self.expected

    @property
    def consistent(self) -> bool:
        return self.counts_agree and not self.mismatches


async def _quiet_head(conn: AsyncConnection[Any], projections: list[str]) -> int | None:
    """Fed from Kafka: the store's head when every one of `projections` has no lag (its
    consumer group and the relay stand at the head), else None."""
    statuses = {s.name: s for s in await projection_statuses(conn, kafka=True)}
    if any(name not in statuses or statuses[name].lag_events for name in projections):
        return None
    return await _scalar(conn, sql.SQL(_HEAD))


_MOVING = "counts not compared: fed from Kafka, the consumers were not at the head of the store"


async def check_read_model(
    conn: AsyncConnection[Any], projection: str, table: str, sample_size: int, *, kafka: bool = False
) -> ConsistencyReport:
    ident = sql.Identifier(table)
    quiet = await _quiet_head(conn, [projection]) if kafka else None
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # Locking first (it takes no snapshot) means the snapshot is taken with the table
        # resolved: a rebuild's swap cannot slip in between the checkpoint and the rows.
        await conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(ident))
        if kafka:  # no checkpoint: the whole store, as this snapshot sees it
            transaction_id, position = _ANY_TRANSACTION, await _scalar(conn, sql.SQL(_HEAD))
        else:
            cursor = await conn.execute(
                "SELECT last_transaction_id::text::bigint, last_position FROM projection_offsets"
                " WHERE projection_name = %s",
                (projection,),
            )
            transaction_id, position = await cursor.fetchone() or (0, 0)
        rows = await _scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(ident))
        counted = await _scalar(conn, sql.SQL("SELECT total FROM warrior_count"))
        expected = await _scalar(conn, sql.SQL(_EXPECTED), (str(transaction_id), position, projection))
        parked = await _scalar(
            conn,
            sql.SQL("SELECT count(*) FROM projection_parked_events WHERE projection_name = %s"),
            (projection,),
        )
        cursor = await conn.execute(
            sql.SQL("SELECT id, name, dob, fight_skills, version FROM {} ORDER BY random() LIMIT %s").format(
                ident
            ),
            (sample_size,),
        )
        sample = await cursor.fetchall()
        ids = [row[0] for row in sample]
        async with conn.cursor(row_factory=tuple_row) as events_cursor:
            if kafka:  # each row against its events up to its own version
                await events_cursor.execute(_EVENTS_UP_TO_VERSIONS, (ids, [row[4] for row in sample]))
            else:
                await events_cursor.execute(_EVENTS_UP_TO, (ids, str(transaction_id), position))
            events = await opened(conn, [stored_event(row) for row in await events_cursor.fetchall()])
        behind = await _behind_the_floor(conn, projection, sample) if kafka else []
    mismatches = behind + _sample_mismatches(sample, events)
    if not kafka:
        return ConsistencyReport(position, rows, counted, expected, parked, len(sample), mismatches)
    compared = quiet is not None and quiet == position == await _quiet_head(conn, [projection])
    notes = [] if compared else [_MOVING]
    return ConsistencyReport(
        position, rows, counted, expected, parked, len(sample), mismatches, notes, compared
    )


async def _behind_the_floor(
    conn: AsyncConnection[Any], projection: str, sample: list[tuple[Any, ...]]
) -> list[str]:
    """Fed from Kafka, a row folded only up to its own version always matches its events,
    even one stuck at an older version by a lost update. Its group says up to which order
    it applied every partition (in the same snapshot as the rows: it records after it
    applies): a row older than its warrior's last version up to there lost an update."""
    cursor = await conn.execute(
        _APPLIED_FLOOR_VERSIONS, {"group": consumer_group(projection), "ids": [row[0] for row in sample]}
    )
    applied = {warrior: int(version) for warrior, version in await cursor.fetchall()}
    return [
        f"warrior {warrior_id}: read model at version {version}, but its consumer group applied every"
        f" event up to its version {applied[warrior_id]} (a lost update)"
        for warrior_id, _, _, _, version in sample
        if applied.get(warrior_id, 0) > version
    ]


def _sample_mismatches(sample: list[tuple[Any, ...]], events: list[StoredEvent]) -> list[str]:
    """Each sampled row against its warrior folded from `events`."""
    by_aggregate: dict[UUID, list[StoredEvent]] = {}
    for event in events:
        by_aggregate.setdefault(event.aggregate_id, []).append(event)
    mismatches = []
    for warrior_id, name, dob, skills, version in sample:
        folded = living(rebuild(warrior_id, AggregateStream.from_events(by_aggregate.get(warrior_id, []))))
        row = (name, dob, tuple(skills), version)
        truth = None if folded is None else (folded.name, folded.dob, folded.fight_skills, folded.version)
        if row != truth:
            mismatches.append(f"warrior {warrior_id}: read model {row}, events {truth}")
    return mismatches


async def _scalar(
    conn: AsyncConnection[Any], query: sql.SQL | sql.Composed, params: tuple[Any, ...] = ()
) -> int:
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


_BOTH_CHECKPOINTS = """
SELECT (SELECT last_position FROM projection_offsets WHERE projection_name = %s),
       (SELECT last_position FROM projection_offsets WHERE projection_name = %s),
       (SELECT total FROM warrior_count)
"""

_COUNT_ATTEMPTS = 5


async def _count_when_aligned(
    conn: AsyncConnection[Any], other: str, count: Callable[[], Awaitable[int | None]], kafka: bool
) -> tuple[int, int, int, list[str]]:
    """(checkpoint, PostgreSQL's count, the other's count, notes), read while the read
    model and the `other` projection stand at the same checkpoint (retried while they move);
    fed from Kafka, while both stand at the head of the store."""
    if kafka:
        for _ in range(_COUNT_ATTEMPTS):
            head = await _quiet_head(conn, [READ_MODEL_TABLE, other])
            expected = await _scalar(conn, sql.SQL("SELECT total FROM warrior_count"))
            theirs = await count()
            if head is not None and head == await _quiet_head(conn, [READ_MODEL_TABLE, other]):
                if theirs is None:
                    return head, expected, expected, [f"{other}'s count is not ready (replaying)"]
                return head, expected, theirs, []
        return 0, 0, 0, [_MOVING]
    for _ in range(_COUNT_ATTEMPTS):
        before = await (await conn.execute(_BOTH_CHECKPOINTS, (READ_MODEL_TABLE, other))).fetchone()
        theirs = await count()
        after = await (await conn.execute(_BOTH_CHECKPOINTS, (READ_MODEL_TABLE, other))).fetchone()
        if before is not None and before == after and before[0] == before[1]:
            position, expected = int(before[0]), int(before[2])
            if theirs is None:
                return position, expected, expected, [f"{other}'s count is not ready (replaying)"]
            return position, expected, theirs, []
    return 0, 0, 0, ["count not compared: the projections kept moving"]


async def _sample(conn: AsyncConnection[Any], sample_size: int) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(
        sql.SQL("SELECT id, name, dob, fight_skills, version FROM {} ORDER BY random() LIMIT %s").format(
            sql.Identifier(READ_MODEL_TABLE)
        ),
        (sample_size,),
    )
    return await cursor.fetchall()


async def check_cache(
    conn: AsyncConnection[Any],
    cache: RedisReadModels,
    projection: str,
    sample_size: int,
    *,
    kafka: bool = False,
) -> ConsistencyReport:
    """The Redis read models against the PostgreSQL read model: the count, and a sample of
    cache entries, each compared with its row where both hold the same version."""
    position, expected, counted, notes = await _count_when_aligned(conn, projection, cache.count, kafka)
    sample = await _sample(conn, sample_size)
    mismatches = []
    for warrior_id, name, dob, skills, version in sample:
        entry = await cache.entry(warrior_id)
        if entry is None or entry.version != version:
            continue  # not cached, or one of the two is ahead: nothing to compare
        if entry.gone:
            mismatches.append(
                f"warrior {warrior_id}: deleted in the cache at version {version}, alive in PostgreSQL"
            )
        elif entry.document is not None:
            mismatches += _differences(warrior_id, version, entry.document, (name, dob, skills))
    compared = not any("not compared" in note for note in notes)
    return ConsistencyReport(
        position, counted, counted, expected, 0, len(sample), mismatches, notes, compared
    )


async def check_search(
    conn: AsyncConnection[Any],
    engine: SearchEngine,
    projection: str,
    sample_size: int,
    *,
    kafka: bool = False,
) -> ConsistencyReport:
    """The search index against the PostgreSQL read model: the document count, and a
    sample of documents, each compared with its row where both hold the same version."""
    position, expected, counted, notes = await _count_when_aligned(conn, projection, engine.count, kafka)
    sample = await _sample(conn, sample_size)
    documents = await engine.documents([str(row[0]) for row in sample])
    mismatches = []
    for warrior_id, name, dob, skills, version in sample:
        document = documents.get(str(warrior_id))  # missing ones show in the count
        if document is not None and document["version"] == version:
            mismatches += _differences(warrior_id, version, document, (name, dob, skills))
    compared = not any("not compared" in note for note in notes)
    return ConsistencyReport(
        position, counted, counted, expected, 0, len(sample), mismatches, notes, compared
    )


def _differences(warrior_id: Any, version: int, document: dict[str, Any], row: tuple[Any, ...]) -> list[str]:
    name, dob, skills = row
    stored = (document["name"], document["dob"], list(document["fight_skills"]))
    if stored == (name, dob.isoformat(), list(skills)):
        return []
    return [f"warrior {warrior_id} at version {version}: stored {stored}, database {name, dob, skills}"]
