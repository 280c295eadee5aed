"""A Kafka-fed projection's member driven in-process, one step at a time, against a real
broker and database: what it records of partitions it holds but has not read, and when a
finished rebuild from the store covers a group that never committed. Both were races of
the production fault test (tests/test_production_faults.py) that only showed now and then
under load; here the state each race produced is set up on purpose."""

import asyncio
import time
from dataclasses import replace
from typing import Any, cast

import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tests.history import write_history
from tests.support import wait_for
from warriors.adapters.kafka_bus import TOPIC, BusProducer, ensure_topics
from warriors.adapters.redis_cache import RedisReadModels
from warriors.bus.consumer import ProjectionConsumer, RebuildState
from warriors.eventstore.reader import read_after
from warriors.eventstore.records import START
from warriors.projections.base import Projection
from warriors.projections.cache import WarriorsCache
from warriors.projections.engine import register
from warriors.projections.read_model import READ_MODEL, WarriorsReadModel
from warriors.projections.status import RELAY, consumer_group, projection_statuses
from warriors.readside.consistency import check_read_model
from warriors.servers.kafka_broker import KafkaBroker

PARTITIONS = 3
PER_PARTITION = 2  # messages published to each partition


def publish(broker: KafkaBroker) -> list[TopicPartition]:
    """The topic, with PER_PARTITION messages in each of its partitions (their content is
    never decoded here)."""
    ensure_topics(broker.bootstrap_servers(), PARTITIONS, 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers()})
    for partition in range(PARTITIONS):
        for _ in range(PER_PARTITION):
            producer.produce(TOPIC, b"{}", key=b"k", partition=partition)
    assert producer.flush(30) == 0, "messages not delivered"
    return [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]


def member_of(
    pool: AsyncConnectionPool[AsyncConnection],
    broker: KafkaBroker,
    partitions: list[TopicPartition],
    projection: Projection | None = None,
) -> ProjectionConsumer:
    """A member of the read model's group (or `projection`'s), once the broker answers for
    the group (a new broker's coordinator takes a moment: "Not coordinator" meanwhile)."""
    servers = broker.bootstrap_servers()
    projection = projection or WarriorsReadModel(redelivery=True)
    member = ProjectionConsumer(pool, projection, servers, BusProducer(servers))
    wait_for(lambda: member.consumer.committed(partitions, 10.0), timeout=60, what="the group's coordinator")
    return member


def relay_at_the_head(url: str) -> int:
    """The relay's checkpoint at the store's last event (everything published); returns
    the number of stored events."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT transaction_id::text::bigint, position, count(*) OVER () FROM event_store"
            " ORDER BY transaction_id DESC, position DESC LIMIT 1"
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO projection_offsets (projection_name, last_transaction_id, last_position)"
            " VALUES (%s, %s::text::xid8, %s) ON CONFLICT (projection_name) DO UPDATE"
            " SET last_transaction_id = excluded.last_transaction_id, last_position = excluded.last_position",
            (RELAY, row[0], row[1]),
        )
    return int(row[2])


async def first_messages(member: ProjectionConsumer, what: str) -> list[Message]:
    """The first messages the member's consumer returns (within a minute)."""
    batch: list[Message] = []
    deadline = time.monotonic() + 60
    while not batch:
        assert time.monotonic() < deadline, f"{what} not read"
        batch = [m for m in await asyncio.to_thread(member._next_messages) if m.error() is None]
    return batch


async def test_a_held_partition_never_read_counts_whole_in_the_lag(
    fresh_database: str, fresh_pool: AsyncConnectionPool[AsyncConnection], broker: KafkaBroker
) -> None:
    """A member holds three partitions of a group that never committed and has read two
    of them to their ends; the third it has not read at all yet. Skipped when recording
    (no offset to record), that partition said nothing, and the two others made the
    group's lag 0: /projections said caught up with its messages unread (CI, the
    dead-consumer test). It counts as read from offset 0: all of it is ahead."""
    write_history(fresh_database, 5)
    stored = relay_at_the_head(fresh_database)
    await register(fresh_pool, READ_MODEL)
    partitions = publish(broker)
    member = await asyncio.to_thread(member_of, fresh_pool, broker, partitions)
    unread = partitions[1]
    try:
        # From their beginnings, as a group that never committed reads them.
        member.consumer.assign([TopicPartition(TOPIC, tp.partition, OFFSET_BEGINNING) for tp in partitions])
        member.consumer.pause([unread])
        deadline = time.monotonic() + 60
        while any(member._expected.get(tp.partition) != PER_PARTITION for tp in partitions if tp != unread):
            assert time.monotonic() < deadline, f"partitions not read to their ends: {member._expected}"
            messages = await asyncio.to_thread(member._next_messages)
            member._notice_gaps([m for m in messages if m.error() is None])
        assert unread.partition not in member._expected
        unconsumed = await member._record_lag(fresh=True)
    finally:
        await asyncio.to_thread(member.consumer.close)
    assert unconsumed == PER_PARTITION
    async with fresh_pool.connection() as conn:
        recorded = await (
            await conn.execute("SELECT partition, committed, end_offset FROM bus_consumer_lag ORDER BY 1")
        ).fetchall()
        status = {s.name: s for s in await projection_statuses(conn, kafka=True)}[READ_MODEL]
    n = PER_PARTITION
    assert recorded == [(0, n, n), (1, 0, n), (2, n, n)]
    # Nothing applied from the unread partition: every event the relay published may be in it.
    assert (status.lag_events, status.consumer_lag) == (stored, stored)
    assert status.lag_seconds > 0


async def test_a_finished_rebuild_covers_a_new_group_while_what_came_after_it_is_on_the_topic(
    fresh_pool: AsyncConnectionPool[AsyncConnection], broker: KafkaBroker
) -> None:
    """A member's first rebuild from the store often finishes before the member gets its
    partitions (on a loaded machine, half a minute later); the group has never committed,
    and reads each partition from its earliest record. The records published after the
    rebuild read the store are on the topic, unless some were deleted meanwhile (a
    delete-records, as the fault test's "retention" does): those events were never
    applied, and the read model never converged (CI, seed 291845). The rebuild records the
    topic's ends before it reads the store (sql/0017): a partition that now starts after
    its end makes the member rebuild again; records deleted before it (the store has
    them) do not."""
    partitions = publish(broker)  # offsets 0 and 1 in each partition
    member = await asyncio.to_thread(member_of, fresh_pool, broker, partitions)

    async def assigned(rebuild: RebuildState | None) -> tuple[bool, str]:
        member._rebuild, member._needs_store_replay, member._needs_reason = rebuild, False, ""
        await asyncio.to_thread(member._assigned, member.consumer, partitions)
        return member._needs_store_replay, member._needs_reason

    def delete_records(partition: int, before: int) -> None:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers()})
        for future in admin.delete_records([TopicPartition(TOPIC, partition, before)]).values():
            future.result(timeout=30)

    try:
        assert await assigned(None) == (True, "a consumer group that never committed")
        assert await member._intact(asyncio.Event())  # no rebuild on record: it rebuilds the sink
        member._rebuild_checked = float("-inf")
        rebuilt = await member._rebuild_state()
        assert rebuilt is not None
        assert (rebuilt.rebuilding, rebuilt.finished_recently) == (False, True)
        assert rebuilt.topic_ends == (PER_PARTITION,) * PARTITIONS
        assert await assigned(rebuilt) == (False, "")
        publish(broker)  # offsets 2 and 3, after the rebuild read the store
        await asyncio.to_thread(delete_records, 1, PER_PARTITION)  # only what the store replay read
        assert await assigned(rebuilt) == (False, "")
        await asyncio.to_thread(delete_records, 1, PER_PARTITION + 1)  # one published after it
        assert await assigned(rebuilt) == (True, "records deleted from a topic never read")
        unknown = replace(rebuilt, topic_ends=None)  # the broker did not answer the rebuild
        assert await assigned(unknown) == (True, "records deleted from a topic never read")
    finally:
        await asyncio.to_thread(member.consumer.close)


async def test_a_batch_commits_its_own_offsets_not_what_was_polled_after_it(
    fresh_database: str, fresh_pool: AsyncConnectionPool[AsyncConnection], broker: KafkaBroker
) -> None:
    """While a member replays the store it keeps polling, and keeps what the polls return
    (`_held`) to apply after the batch that asked for the replay. That batch's commit was
    the consumer's position, past the held messages: a member killed before applying them
    left the group's committed offset after messages never applied, and the next member
    went on from there. A batch commits after its own last message in each partition."""
    await register(fresh_pool, READ_MODEL)
    partitions = publish(broker)
    member = await asyncio.to_thread(member_of, fresh_pool, broker, partitions)
    first = TopicPartition(TOPIC, 0, OFFSET_BEGINNING)
    try:
        member.consumer.assign([first])
        polled: list[Message] = []
        deadline = time.monotonic() + 60
        while len(polled) < PER_PARTITION:  # the whole partition polled: the batch and what is held
            assert time.monotonic() < deadline, f"partition 0 not read: {polled}"
            polled += [m for m in await asyncio.to_thread(member._next_messages) if m.error() is None]
        await member._process(polled[:1], asyncio.Event())  # the envelope is not one: dead-lettered, done

        def committed() -> int:
            [tp] = member.consumer.committed([TopicPartition(TOPIC, 0)], 10.0)
            return int(tp.offset)

        wait_for(lambda: committed() > 0, timeout=30, what="the batch's commit")
        assert committed() == 1  # after the batch's one message, not after the one held
    finally:
        await asyncio.to_thread(member.consumer.close)


async def test_the_cache_is_ready_only_when_the_whole_group_is_caught_up(
    fresh_database: str, fresh_pool: AsyncConnectionPool[AsyncConnection], broker: KafkaBroker, redis_url: str
) -> None:
    """Each member renewed the cache's readiness when its own partitions were read to their
    ends: with another member dead (its partitions stop moving until the group notices),
    the live one kept a cache missing the dead one's messages ready, and readers were
    served it (issue 25, item 9). A member renews it only when the group's least advanced
    partition is caught up too."""
    write_history(fresh_database, 5)
    relay_at_the_head(fresh_database)
    partitions = publish(broker)
    cache = WarriorsCache(RedisReadModels(redis_url))
    await cache.intact(START)  # an epoch, and every stored event in it: a cache that could be ready
    async with fresh_pool.connection() as conn:
        await cache.apply(conn, await read_after(conn, START, 1000))
    member = await asyncio.to_thread(member_of, fresh_pool, broker, partitions, cache)
    member._rebuild = RebuildState(1, False, START, False)  # built from the store, complete
    others = partitions[1]  # held by another member, which died before recording it
    try:
        mine = [TopicPartition(TOPIC, tp.partition, PER_PARTITION) for tp in partitions if tp != others]
        member.consumer.assign(mine)  # read to their ends
        for tp in mine:
            member._expected[tp.partition] = PER_PARTITION
        assert await member._record_lag(fresh=True) == 0  # ... as this member sees its own
        await member._caught_up()
        assert await cache.models.count() is None, "ready while another member's partition is behind"
        async with fresh_pool.connection() as conn:  # the other member's partition caught up
            await conn.execute(
                "UPDATE bus_consumer_lag l SET (applied_transaction_id, applied_position)"
                " = (o.last_transaction_id, o.last_position) FROM projection_offsets o"
                " WHERE o.projection_name = %s AND l.partition = %s",
                (RELAY, others.partition),
            )
        await member._caught_up()
        assert await cache.models.count() is not None, "the whole group caught up: ready"
    finally:
        await asyncio.to_thread(member.consumer.close)
        await cache.close()


class CommittedTimesOut:
    """The member's consumer as its assignment callback sees it when the group's
    coordinator does not answer in time (seen under load: "Failed to get committed
    offsets: Local: Timed out"); everything else is the real consumer's."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)


async def test_records_trimmed_while_the_committed_offsets_were_unreadable_are_still_noticed(
    fresh_pool: AsyncConnectionPool[AsyncConnection], broker: KafkaBroker
) -> None:
    """An assignment whose committed offsets could not be read (a time-out) left the
    partitions with no expected offset, and a jump past records retention had trimmed
    went unseen: those events were never applied (issue 25, item 4). The offsets are
    read again before the partition's first message is applied, and the jump is seen."""
    partitions = publish(broker)  # offsets 0 and 1 in each partition
    member = await asyncio.to_thread(member_of, fresh_pool, broker, partitions)
    first = TopicPartition(TOPIC, 0)
    try:
        member.consumer.commit(offsets=[TopicPartition(TOPIC, 0, 1)], asynchronous=False)  # read up to 1
        publish(broker)  # offsets 2 and 3
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers()})
        for future in admin.delete_records([TopicPartition(TOPIC, 0, 3)]).values():
            future.result(timeout=30)  # 1 and 2 trimmed, never read by the group
        unanswering = cast(Consumer, CommittedTimesOut(member.consumer))  # it quacks as one
        await asyncio.to_thread(member._assigned, unanswering, [first])
        assert member._expected.get(0) is None
        assert 0 in member._unknown
        member.consumer.assign([TopicPartition(TOPIC, 0, 1)])  # from the committed offset: trimmed, so 3
        batch = await first_messages(member, "partition 0")
        assert batch[0].offset() == 3
        await member._check_gaps(batch)
        assert (member._needs_store_replay, member._needs_reason) == (True, "records gone from the topic")
        assert not member._unknown
    finally:
        await asyncio.to_thread(member.consumer.close)


async def test_a_member_applies_nothing_while_another_member_replays_the_store(
    fresh_pool: AsyncConnectionPool[AsyncConnection], broker: KafkaBroker
) -> None:
    """Member A owns the sink's rebuild (records gone from the topic) and replays the store;
    member B went on with its partitions and applied a warrior's version after one the
    topic had lost and A had not replayed yet: refused for the gap, retried, parked, and a
    valid event lost to the sink (issue 25, item 2). B now waits, polling, until the
    rebuild is over, and takes it over if A dies."""
    await register(fresh_pool, READ_MODEL)
    partitions = publish(broker)
    member = await asyncio.to_thread(member_of, fresh_pool, broker, partitions)
    name = member.projection.name
    async with fresh_pool.connection() as owner:  # member A: holds the rebuild's lock
        await owner.execute(
            "INSERT INTO sink_rebuilds (projection_name, generation, state, reason)"
            " VALUES (%s, 1, 'rebuilding', 'records gone from the topic')",
            (name,),
        )
        await owner.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"rebuild:{name}",))
        intact = asyncio.create_task(member._intact(asyncio.Event()))
        reads = 0
        deadline = time.monotonic() + 30
        while reads < 3:  # B has looked at the rebuild's row again, three times
            assert not intact.done(), "B went on while A's rebuild was under way"
            assert time.monotonic() < deadline, "B never looked at the rebuild again"
            checked = member._rebuild_checked
            await asyncio.sleep(0.05)  # polling the member's state, with a deadline
            reads += member._rebuild_checked != checked
        await owner.execute("UPDATE sink_rebuilds SET state = 'complete' WHERE projection_name = %s", (name,))
        assert await asyncio.wait_for(intact, 30) is True  # over: B goes on
        await owner.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (f"rebuild:{name}",))
    await asyncio.to_thread(member.consumer.close)


async def test_offsets_going_back_rebuild_the_sink_from_the_store(
    fresh_pool: AsyncConnectionPool[AsyncConnection], broker: KafkaBroker
) -> None:
    """Only forward jumps were taken for lost records; a partition whose offsets went back
    (the topic recreated, its log truncated) was read on as if nothing had happened, and
    what the group had not read of the old log was never applied (issue 25, item 4). A
    member that had read a partition to offset 5 and now gets offset 0 rebuilds the sink
    from the store."""
    partitions = publish(broker)
    member = await asyncio.to_thread(member_of, fresh_pool, broker, partitions)
    try:
        member.consumer.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
        batch = await first_messages(member, "partition 0")
        member._expected[0] = 5  # read up to 5 in the topic's earlier life
        await member._check_gaps(batch[:1])
        assert (member._needs_store_replay, member._needs_reason) == (True, "the topic's offsets went back")
        member._needs_store_replay, member._expected[0] = False, 0
        await member._check_gaps(batch[:1])  # the offset it expected: nothing to say
        assert not member._needs_store_replay
    finally:
        await asyncio.to_thread(member.consumer.close)


async def test_fed_from_kafka_the_consistency_check_sees_a_row_stuck_at_an_older_version(
    fresh_database: str, fresh_pool: AsyncConnectionPool[AsyncConnection]
) -> None:
    """Fed from Kafka, each sampled row was folded only up to its own version: a row stuck
    at an older version (an update lost) matched its own events, and the nightly check
    passed (issue 25, item 5). The group records up to which order it applied every
    partition; a row older than its warrior's last version up to there is reported."""
    write_history(fresh_database, 30)
    async with fresh_pool.connection() as conn:
        events = await read_after(conn, START, 10_000)
        last = {e.aggregate_id: e for e in events}  # each warrior's last event
        lost = next(e for e in reversed(events) if e.event_version >= 2 and last[e.aggregate_id] is e
                    and e.event_type not in ("WarriorDeleted", "WarriorErased"))  # fmt: skip
        await WarriorsReadModel().apply(conn, [e for e in events if e is not lost])  # the update lost
        head = events[-1].stream_position
        await conn.execute(  # the group believes it applied everything (three partitions)
            "INSERT INTO bus_consumer_lag (group_id, partition, committed, end_offset, updated_at,"
            " applied_transaction_id, applied_position)"
            " SELECT %s, p, 0, 0, now(), %s::text::xid8, %s FROM generate_series(0, 2) AS p",
            (consumer_group(READ_MODEL), head.transaction_id, head.position),
        )
        report = await check_read_model(conn, READ_MODEL, READ_MODEL, 1000, kafka=True)
    assert not report.consistent
    assert [m for m in report.mismatches if "lost update" in m] == [
        f"warrior {lost.aggregate_id}: read model at version {lost.event_version - 1}, but its consumer"
        f" group applied every event up to its version {lost.event_version} (a lost update)"
    ]


async def test_records_deleted_between_the_assignment_and_the_first_read_are_noticed(
    fresh_pool: AsyncConnectionPool[AsyncConnection], broker: KafkaBroker
) -> None:
    """A group that never committed gets its partitions just after a rebuild that covers
    it (the records published since are all on the topic); then, before its first read,
    retention deletes records the rebuild did not cover. The member read from the new
    earliest record with no expected offset, so nothing noticed the jump, and those events
    were never applied (the fault test, seed 917749: dozens of warriors stuck, "version 2
    does not follow 0"). The first record may be no further on than the rebuild's end."""
    partitions = publish(broker)  # offsets 0 and 1 in each partition
    member = await asyncio.to_thread(member_of, fresh_pool, broker, partitions)
    rebuilt = RebuildState(1, False, START, False, True, (PER_PARTITION,) * PARTITIONS)  # covered up to 2
    try:
        member._rebuild = rebuilt
        await asyncio.to_thread(member._assigned, member.consumer, partitions)
        assert not member._needs_store_replay  # covered: everything after its ends is on the topic
        publish(broker)  # offsets 2 and 3, after the rebuild read the store
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers()})
        for future in admin.delete_records([TopicPartition(TOPIC, 1, PER_PARTITION + 1)]).values():
            future.result(timeout=30)  # offset 2 gone before the group read it
        member.consumer.assign([TopicPartition(TOPIC, 1, OFFSET_BEGINNING)])
        batch = await first_messages(member, "partition 1")
        assert batch[0].offset() == PER_PARTITION + 1
        await member._check_gaps(batch)
        assert (member._needs_store_replay, member._needs_reason) == (True, "records gone from the topic")
    finally:
        await asyncio.to_thread(member.consumer.close)
