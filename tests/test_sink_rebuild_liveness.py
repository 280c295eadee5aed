"""A Kafka-fed sink rebuilt from the event store, against real servers (Kafka, Redis,
PostgreSQL): the rebuild is recorded as under way until its replay finished, a rebuild
whose owner died is taken over by another member, nothing reports the sink ready or at
lag 0 meanwhile, and a replay longer than max.poll.interval.ms keeps its member in the
group (issue 12).

The replays are held mid-way deterministically with the projection's own lock (the
advisory lock every batch takes, warriors/projections/engine.py): the test holds it, and
lets the member through one transaction at a time (released, then asked for again: the
member, queued first, gets it first, and the test's request waits for the member's
transaction to end)."""

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import redis
from confluent_kafka.admin import AdminClient

from tests.history import write_history
from tests.kafka_support import bus_env, cache_matches_the_store, exact, kafka_statuses, living, relay
from tests.support import ProjectorProcess, wait_for
from warriors.adapters.redis_cache import VERSIONS, RedisReadModels
from warriors.projections.cache import CACHE
from warriors.projections.read_model import READ_MODEL
from warriors.projections.status import RELAY
from warriors.servers.kafka_broker import KafkaBroker

_LOCK = "SELECT pg_advisory_lock(hashtextextended(%s, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"


@contextmanager
def projection_held(url: str, projection: str) -> Iterator[psycopg.Connection]:
    """The projection's lock, held by the test until the block ends."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_LOCK, (projection,))
        yield conn


def waiting_on_a_projection(url: str) -> bool:
    """A member's transaction waits for a projection's lock (the one the test holds)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        ).fetchone()
    return bool(row and row[0])


def let_one_through(held: psycopg.Connection, projection: str) -> None:
    """The member waiting for the lock runs one transaction under it, then the test holds it again."""
    held.execute(_UNLOCK, (projection,))
    held.execute(_LOCK, (projection,))


def replayed_into_redis(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return int(client.hlen(VERSIONS))


def cache_entries_current(url: str, redis_url: str) -> bool:
    """Every warrior's cache entry at its last version (a tombstone when deleted)."""
    with psycopg.connect(url) as conn:
        last: dict[uuid.UUID, int] = dict(
            conn.execute("SELECT aggregate_id, max(event_version) FROM event_store GROUP BY 1").fetchall()
        )

    async def entries() -> bool:
        models = RedisReadModels(redis_url)
        try:
            found = await models.entries(list(last))
        finally:
            await models.close()
        return all(e is not None and e.version == v for e, v in zip(found, last.values(), strict=True))

    return asyncio.run(entries())


def served_count(redis_url: str) -> int | None:
    """The count as the query service would serve it (None: the cache is not ready)."""

    async def read() -> int | None:
        models = RedisReadModels(redis_url)
        try:
            return await models.count()
        finally:
            await models.close()

    return asyncio.run(read())


def test_a_rebuild_whose_owner_dies_midway_is_taken_over_and_never_looks_complete(
    fresh_database: str, broker: KafkaBroker, redis_url: str
) -> None:
    """Redis flushed; the member that notices rebuilds the cache from the store and is
    SIGKILLed in the middle of that replay, while a second member has joined. The rebuild
    used to open the cache's epoch when it started: the second member (or the restarted
    one) then went on with the topic, never refilled the cache, marked it ready (a partial
    count served as the truth), and /projections said lag 0. Now the rebuild is recorded
    as under way until its replay finished, REBUILDING and behind meanwhile; the second
    member sees its owner's lock gone, takes it over, and the cache ends equal to the store,
    never served before."""
    write_history(fresh_database, 1500)  # 3,150 events: a replay of 4 batches of 1,000
    env = {**bus_env(broker), "REDIS_URL": redis_url, "KAFKA_SESSION_TIMEOUT_SECONDS": "6"}
    feeder = relay(fresh_database, broker)
    owner = ProjectorProcess(fresh_database, env=env, name="rebuild-owner")
    processes = [feeder, owner]
    try:
        wait_for(lambda: cache_matches_the_store(fresh_database, redis_url), timeout=120, what="the cache")
        with projection_held(fresh_database, CACHE) as held:
            with redis.Redis.from_url(redis_url) as client:
                client.flushall()
            deadline = time.monotonic() + 60
            while replayed_into_redis(redis_url) == 0:  # the reset, the epoch, then one batch of the store
                assert time.monotonic() < deadline, "the member never started rebuilding the cache"
                wait_for(
                    lambda: waiting_on_a_projection(fresh_database), what="the member, at the cache's lock"
                )
                let_one_through(held, CACHE)
            wait_for(lambda: waiting_on_a_projection(fresh_database), what="the member, at its next batch")
            partial = replayed_into_redis(redis_url)
            assert 0 < partial < living(fresh_database)  # mid-replay, held there
            status = kafka_statuses(fresh_database)[CACHE]
            assert status.lag_events > 0, f"a cache being rebuilt reported at lag 0: {status}"
            assert status.status == "REBUILDING", status
            assert served_count(redis_url) is None

            other = ProjectorProcess(fresh_database, env=env, name="rebuild-taker")
            processes.append(other)
            wait_for(lambda: "reading warrior-events for warriors_cache" in other.log_path.read_text(),
                     timeout=60, what="the second member")  # fmt: skip
            owner.process.kill()
            owner.stop()
        # The lock released: the second member takes the rebuild over. Until the cache is
        # complete, nothing may say it is: not its readiness, not /projections.
        deadline = time.monotonic() + 90
        while True:
            status = kafka_statuses(fresh_database)[CACHE]
            count = served_count(redis_url)
            current = cache_entries_current(fresh_database, redis_url)
            if count is not None:
                said = f"the cache was served while partial (count {count}, {living(fresh_database)} living)"
                assert current, said
                assert count == living(fresh_database), said
                break
            if not current:
                assert status.lag_events > 0, f"a partial cache reported at lag 0: {status}"
            assert time.monotonic() < deadline, f"the cache was never rebuilt whole ({status})"
            time.sleep(0.2)  # the next sample
        assert "built from the event store" in other.log_path.read_text()
        wait_for(lambda: kafka_statuses(fresh_database)[CACHE].lag_events == 0, what="lag 0 once rebuilt")
    finally:
        for process in processes:
            process.stop()
    assert cache_matches_the_store(fresh_database, redis_url)


def group_members(broker: KafkaBroker, group: str) -> list[tuple[str, int]]:
    """Each member of the group: its id, and how many partitions it holds."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers()})
    [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
    members = future.result(timeout=30).members
    return [(m.member_id, len(m.assignment.topic_partitions) if m.assignment else 0) for m in members]


POLL_INTERVAL_SECONDS = 6  # the smallest Kafka allows (max.poll.interval.ms >= session.timeout.ms >= 6 s)


def test_a_replay_longer_than_the_poll_interval_keeps_the_member_in_its_group(
    fresh_database: str, broker: KafkaBroker
) -> None:
    """A new group builds its read model from the store; the replay is held for longer
    than max.poll.interval.ms. It used to poll nothing meanwhile: the member was thrown out
    of its group, its partitions rebalanced mid-replay. Now it pauses its partitions and
    keeps polling: the same member holds all three partitions throughout, nothing is
    revoked or lost, and the read model ends equal to the store."""
    write_history(fresh_database, 300)
    feeder = relay(fresh_database, broker)
    env = {
        **bus_env(broker),
        "KAFKA_SESSION_TIMEOUT_SECONDS": str(POLL_INTERVAL_SECONDS),
        "KAFKA_MAX_POLL_INTERVAL_SECONDS": str(POLL_INTERVAL_SECONDS),
    }
    member: ProjectorProcess | None = None
    group = f"warriors-{READ_MODEL}"
    try:
        wait_for(lambda: kafka_statuses(fresh_database)[RELAY].lag_events == 0, timeout=60, what="the relay")
        with projection_held(fresh_database, READ_MODEL):
            member = ProjectorProcess(fresh_database, env=env, name="long-replay")
            wait_for(lambda: waiting_on_a_projection(fresh_database), timeout=60, what="the replay, held")
            [(member_id, _)] = wait_for(
                lambda: [m for m in group_members(broker, group) if m[1] == 3], timeout=30,
                what="the member holding the three partitions",
            )  # fmt: skip
            held_until = time.monotonic() + POLL_INTERVAL_SECONDS + 4
            while time.monotonic() < held_until:
                assert waiting_on_a_projection(fresh_database), "the replay must still be held"
                members = group_members(broker, group)
                assert members == [(member_id, 3)], f"the group changed during the replay: {members}"
                time.sleep(0.5)  # the next sample of a period that must pass without a change
        wait_for(lambda: exact(fresh_database), timeout=60, what="the read model, equal to the store")
        assert group_members(broker, group) == [(member_id, 3)]
        log = member.log_path.read_text()  # before it stops (leaving, it revokes its partitions)
        for sign in ("revoked", "lost (this member", "maximum poll interval", "MAXPOLL"):
            assert sign not in log, f"{sign!r} in the member's log"
    finally:
        if member is not None:
            member.stop()
        feeder.stop()
