"""Projectors as Kafka consumer groups, against a real broker: the read model ends exact
(a replay of the store), a poison message goes to the dead-letter topic while the stream
goes on, and a second projector joining the group (a rebalance) keeps it exact."""

import asyncio
import shutil
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tests.history import copy_events, read_model_rows, write_history
from tests.kafka_support import (
    bus_env,
    cache_matches_the_store,
    drop_the_topics_records,
    exact,
    kafka_statuses,
    living,
    redis_count,
    relay,
)
from tests.support import LoggedProcess, ProjectorProcess, ServiceProcess, wait_for
from warriors.adapters.kafka_bus import DLQ_TOPIC, TOPIC
from warriors.adapters.redis_cache import RedisReadModels
from warriors.config import get_settings
from warriors.projections.catalog import ProjectionName, rebuild
from warriors.projections.rebuild import RebuildReport
from warriors.projections.status import RELAY, ProjectionStatus, consumer_group
from warriors.readside.consistency import ConsistencyReport, check_cache, check_read_model
from warriors.servers import free_port
from warriors.servers.kafka_broker import KafkaBroker


def read_model_status(client: httpx.Client) -> dict[str, Any]:
    statuses = {s["name"]: s for s in client.get("/api/v1/queries/projections").json()}
    status: dict[str, Any] = statuses["warriors_read_model"]
    return status


def test_the_read_models_fed_from_kafka_end_exact(
    fresh_database: str, broker: KafkaBroker, redis_url: str
) -> None:
    write_history(fresh_database, 3000)
    with_cache = {**bus_env(broker), "REDIS_URL": redis_url}  # the cache is a consumer group too
    processes = [relay(fresh_database, broker), ProjectorProcess(fresh_database, env=with_cache)]
    service = ServiceProcess(fresh_database, free_port(), env=bus_env(broker))
    try:
        with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
            body = {"name": "Bus", "dob": "1990-01-01"}
            created = [client.post("/api/v1/commands/warriors", json=body) for _ in range(100)]
            wait_for(lambda: len(read_model_rows(fresh_database)) == living(fresh_database), timeout=120,
                     what="the read model fed from Kafka")  # fmt: skip
            # Read-your-writes through the bus: ?position= waits for the event's own warrior.
            last = created[-1].json()
            count = client.get("/api/v1/queries/warriors/count", params={"position": last["position"]})
            assert count.status_code == 200
            # Built from the store first, the read model can be complete before its group has
            # read the topic (the overlap it applies again, harmlessly); its lag then says so.
            wait_for(
                lambda: read_model_status(client)["consumer_lag"] == 0, timeout=120, what="no consumer lag"
            )
            assert read_model_status(client)["consumer_group"] == "warriors-warriors_read_model"
        wait_for(lambda: redis_count(redis_url) == living(fresh_database), what="the Redis count, ready")
    finally:
        service.stop()
        for process in processes:
            process.stop()
    assert exact(fresh_database)


def test_a_poison_message_goes_to_the_dead_letter_topic_and_the_stream_goes_on(
    fresh_database: str, broker: KafkaBroker
) -> None:
    write_history(fresh_database, 20)
    with psycopg.connect(fresh_database) as conn:
        [living_id] = (
            conn.execute(
                "SELECT aggregate_id FROM event_store GROUP BY 1 HAVING max(event_version) = 2 LIMIT 1"
            ).fetchone()
            or []
        )
    copy_events(fresh_database, [(living_id, "WarriorUpdated", 3, {"dob": "soon"})])  # unreadable
    write_history(fresh_database, 20)  # the stream goes on after it
    processes = [relay(fresh_database, broker), ProjectorProcess(fresh_database, env=bus_env(broker))]
    try:
        garbage = Producer({"bootstrap.servers": broker.bootstrap_servers()})
        garbage.produce(TOPIC, key=b"x", value=b"not json")
        assert garbage.flush(30) == 0
        wait_for(
            lambda: len(read_model_rows(fresh_database)) == 36,
            timeout=120,
            what="the events after the poison",
        )
        dead = _read_all(broker, DLQ_TOPIC, expected=2)
    finally:
        for process in processes:
            process.stop()
    errors = [_header(m, "error") for m in dead]
    assert any("unreadable event data" in e or "ValueError" in e for e in errors), errors
    assert any("not an event envelope" in e for e in errors), errors
    with psycopg.connect(fresh_database) as conn:
        parked = conn.execute(
            "SELECT count(*) FROM projection_parked_events WHERE projection_name = 'warriors_read_model'"
        ).fetchone()
    assert parked == (1,)


def test_a_second_projector_joining_the_group_keeps_the_read_model_exact(
    fresh_database: str, broker: KafkaBroker
) -> None:
    write_history(fresh_database, 2000)
    first = ProjectorProcess(fresh_database, env=bus_env(broker), name="projector-a")
    processes = [relay(fresh_database, broker), first]
    try:
        wait_for(lambda: len(read_model_rows(fresh_database)) > 0, timeout=120, what="the first projector")
        processes.append(
            ProjectorProcess(fresh_database, env=bus_env(broker), name="projector-b")
        )  # rebalance
        write_history(fresh_database, 2000)
        wait_for(lambda: len(read_model_rows(fresh_database)) == living(fresh_database), timeout=180,
                 what="both projectors")  # fmt: skip
    finally:
        for process in processes:
            process.stop()
    assert exact(fresh_database)


def _read_all(broker: KafkaBroker, topic: str, expected: int) -> list[Message]:
    settings = {"bootstrap.servers": broker.bootstrap_servers(), "group.id": f"reader-{uuid.uuid4()}",
                "auto.offset.reset": "earliest"}  # fmt: skip
    consumer = Consumer(settings)
    consumer.subscribe([topic])
    found: list[Message] = []

    def enough() -> bool:
        found.extend(m for m in consumer.consume(10, timeout=1) if m.error() is None)
        return len(found) >= expected

    try:
        wait_for(enough, timeout=60, what=f"{expected} messages on {topic}")
    finally:
        consumer.close()
    return found


def _header(message: Message, name: str) -> str:
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    value = dict(pairs)[name]
    return value.decode() if isinstance(value, bytes) else str(value)


def reported_down(process: LoggedProcess) -> bool:
    return "creating the Kafka topics failed (1 in a row)" in process.log_path.read_text()


def test_the_relay_and_the_projector_wait_for_a_broker_not_up_yet(fresh_database: str) -> None:
    """Started before the broker (as after a reboot), they report and try again, and once
    it is up the read model fills: no exit, nothing lost."""
    write_history(fresh_database, 300)
    late = KafkaBroker(Path(tempfile.mkdtemp(prefix="warriors-test-kafka-late-")), free_port())
    processes = [relay(fresh_database, late), ProjectorProcess(fresh_database, env=bus_env(late))]
    try:
        for process in processes:
            wait_for(partial(reported_down, process), timeout=60, what=f"{process.log_path.name} to report")
        assert all(p.process.poll() is None for p in processes), "they must not exit"
        late.start()
        wait_for(lambda: len(read_model_rows(fresh_database)) == living(fresh_database), timeout=120,
                 what="the read model fed once the broker is up")  # fmt: skip
    finally:
        for process in processes:
            process.stop()
        late.stop()
        shutil.rmtree(late.data_dir, ignore_errors=True)
    assert exact(fresh_database)


def test_an_event_published_after_a_member_recorded_itself_idle_is_lag(fresh_database: str) -> None:
    """The relay publishes an event some milliseconds after its commit. A member that
    recorded itself idle at the end of its partitions in between (after the event was
    created, before it was on the topic) had not applied it, and the status must say so:
    compared by creation time with the member's last record, the event was "consumed",
    /projections said lag 0 and a reader trusting it found the sink without it (seen in
    CI: a search still finding an erased warrior). The state recorded here is the one
    the members wrote in that race; the status is read from the real store."""
    url = fresh_database
    write_history(url, 3)
    with psycopg.connect(url, autocommit=True) as conn:
        order = conn.execute(
            "SELECT transaction_id::text::bigint, position FROM event_store ORDER BY transaction_id, position"
        ).fetchall()
        last, before_last = order[-1], order[-2]
        for name, at in ((RELAY, last), ("warriors_read_model", (0, 0))):
            conn.execute(
                "INSERT INTO projection_offsets (projection_name, last_transaction_id, last_position)"
                " VALUES (%s, %s::text::xid8, %s) ON CONFLICT (projection_name) DO UPDATE"
                " SET last_transaction_id = excluded.last_transaction_id,"
                " last_position = excluded.last_position",
                (name, *at),
            )
        # Recorded after every event was created: read to the end of the topic as it was,
        # everything up to the event before the last applied, no message outstanding.
        conn.execute(
            "INSERT INTO bus_consumer_lag (group_id, partition, committed, end_offset, updated_at,"
            " applied_transaction_id, applied_position) VALUES (%s, 0, 6, 6, now(), %s::text::xid8, %s)",
            (consumer_group("warriors_read_model"), *before_last),
        )
        status = kafka_statuses(url)["warriors_read_model"]
        assert (status.lag_events, status.consumer_lag) == (1, 1)
        assert status.lag_seconds > 0
        conn.execute(
            "UPDATE bus_consumer_lag SET applied_transaction_id = %s::text::xid8, applied_position = %s",
            last,
        )
        status = kafka_statuses(url)["warriors_read_model"]
        assert (status.lag_events, status.lag_seconds) == (0, 0.0)


def test_a_dead_consumer_shows_as_lag_not_as_caught_up(fresh_database: str, broker: KafkaBroker) -> None:
    """The consumer records its lag only after a batch; killed, it records nothing. Its
    projection's lag must grow all the same (what /projections, the Dagster lag check and
    the lag sensor report), and fall back to 0 once a consumer catches up."""
    write_history(fresh_database, 100)
    feeder = relay(fresh_database, broker)
    # The new consumer gets the partitions once the group stops waiting for the dead one.
    env = {**bus_env(broker), "KAFKA_SESSION_TIMEOUT_SECONDS": "6"}
    projector = ProjectorProcess(fresh_database, env=env)
    try:
        wait_for(lambda: len(read_model_rows(fresh_database)) == living(fresh_database), timeout=120,
                 what="the read model fed from Kafka")  # fmt: skip
        wait_for(lambda: kafka_statuses(fresh_database)["warriors_read_model"].lag_events == 0, what="no lag")
        projector.process.kill()
        projector.stop()
        write_history(fresh_database, 20)  # 42 events, published by the relay, consumed by nobody
        wait_for(
            lambda: kafka_statuses(fresh_database)[RELAY].lag_events == 0, what="the relay to publish them"
        )
        wait_for(lambda: kafka_statuses(fresh_database)["warriors_read_model"].lag_seconds > 1,
                 what="the lag's age to grow")  # fmt: skip
        behind = kafka_statuses(fresh_database)["warriors_read_model"]
        assert behind.lag_events == 42
        assert behind.consumer_lag == 42
        projector = ProjectorProcess(fresh_database, env=env)
        wait_for(lambda: kafka_statuses(fresh_database)["warriors_read_model"].lag_events == 0, timeout=120,
                 what="a new consumer to catch up")  # fmt: skip
    finally:
        projector.stop()
        feeder.stop()
    assert exact(fresh_database)


def test_a_member_restarted_with_its_static_id_takes_its_partitions_back_at_once(
    fresh_database: str, broker: KafkaBroker
) -> None:
    """A SIGKILLed projector restarted (by the supervisor) waited out the session time-out
    before its group gave the new process the dead one's partitions: the read model and
    the cache stayed behind for 46 s, and a read with `?position=` waited as long (issue
    25, item 10). With KAFKA_GROUP_INSTANCE_ID (which `warriors run` sets) the new process
    is the same static member (the group says so), and takes them back at once: caught up
    well within a session time-out of 90 s. (Dynamic membership was as fast in this test's
    runs; the group did not always move the partitions so soon, as the issue saw.)"""
    write_history(fresh_database, 50)
    feeder = relay(fresh_database, broker)
    env = {**bus_env(broker), "KAFKA_SESSION_TIMEOUT_SECONDS": "90", "KAFKA_GROUP_INSTANCE_ID": "member-1"}
    projector = ProjectorProcess(fresh_database, env=env)
    try:
        wait_for(lambda: unapplied(fresh_database) == 0, timeout=120, what="the read model fed from Kafka")
        projector.process.kill()
        projector.stop()
        write_history(fresh_database, 20)
        projector = ProjectorProcess(fresh_database, env=env)
        wait_for(lambda: unapplied(fresh_database) == 0, timeout=60,
                 what="the restarted member to apply them before the session time-out (90 s)")  # fmt: skip
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers()})
        [future] = admin.describe_consumer_groups([consumer_group("warriors_read_model")]).values()
        members = future.result(timeout=30).members
        assert [m.group_instance_id for m in members] == ["member-1-warriors_read_model"]
    finally:
        projector.stop()
        feeder.stop()


def unapplied(url: str) -> int:
    """The stored events the read model does not reflect (its row, or the deletion it
    applied, is at an older version)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM event_store e LEFT JOIN (SELECT id, max(version) AS version FROM"
            " (SELECT id, version FROM warriors_read_model"
            "  UNION ALL SELECT id, version FROM read_model_deletions) AS a GROUP BY id) AS applied"
            " ON applied.id = e.aggregate_id WHERE e.event_version > coalesce(applied.version, 0)"
        ).fetchone()
    assert row is not None
    return int(row[0])


def members_holding_partitions(broker: KafkaBroker, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers()})
    [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
    members = future.result(timeout=30).members
    return sum(1 for m in members if m.assignment and m.assignment.topic_partitions)


def recorded_partitions(url: str) -> int:
    """The partitions whose progress the group recorded (it commits what it records)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM bus_consumer_lag").fetchone()
    return int(row[0]) if row else 0


def done_since(url: str, broker: KafkaBroker, moment: datetime) -> bool:
    """The partitions recorded after `moment` (those a live member holds) are consumed to
    their ends, as the broker has them now."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT partition, committed FROM bus_consumer_lag WHERE updated_at > %s", (moment,)
        ).fetchall()
    reader = Consumer({"bootstrap.servers": broker.bootstrap_servers(), "group.id": f"ends-{uuid.uuid4()}"})
    try:
        ends = {p: reader.get_watermark_offsets(TopicPartition(TOPIC, p), 10)[1] for p, _ in rows}
    finally:
        reader.close()
    return bool(rows) and all(committed == ends[p] for p, committed in rows)


def lag_over_writes_the_live_member_applied(
    url: str, broker: KafkaBroker, nothing_proved: str
) -> ProjectionStatus:
    """Writes 100 warriors (210 events over the three partitions); once the relay has
    published them and the live member has consumed its partitions to their ends, the
    read model's status must count at least the events still unapplied (those of the
    partitions nobody consumes). Returns the status."""
    with psycopg.connect(url) as conn:
        moment = (conn.execute("SELECT now()").fetchone() or [datetime.now(UTC)])[0]
    write_history(url, 100)
    wait_for(lambda: kafka_statuses(url)[RELAY].lag_events == 0, what="the relay")
    wait_for(lambda: done_since(url, broker, moment), timeout=60, what="the live member")
    behind = unapplied(url)
    status = kafka_statuses(url)["warriors_read_model"]
    assert behind > 0, nothing_proved
    assert status.lag_events >= behind, (status, behind)
    return status


def test_a_dead_member_shows_as_lag_while_the_other_member_goes_on(
    fresh_database: str, broker: KafkaBroker
) -> None:
    """Two members; one SIGKILLed: its partitions wait for the group to notice (the
    session time-out, 45 s) while the other member goes on with its own. The group's lag
    was counted from its latest recorded progress, which the live member kept moving: once
    that member had consumed its partitions, /projections said lag 0 (and the Dagster lag
    check passed) with the dead member's messages unapplied (found by
    tests/test_production_faults.py). Members now record every partition they hold, and
    the lag counts from the least recently recorded one."""
    write_history(fresh_database, 100)
    feeder = relay(fresh_database, broker)
    members = [ProjectorProcess(fresh_database, env=bus_env(broker), name="member-a")]
    try:
        wait_for(lambda: unapplied(fresh_database) == 0, timeout=120, what="the read model fed from Kafka")
        wait_for(lambda: recorded_partitions(fresh_database) == 3, timeout=60, what="the topic read")
        members.append(
            ProjectorProcess(fresh_database, env=bus_env(broker), name="member-b")
        )  # offsets committed
        wait_for(lambda: members_holding_partitions(broker, "warriors-warriors_read_model") == 2, timeout=120,
                 what="both members to hold partitions")  # fmt: skip
        members[0].process.kill()
        members[0].stop()
        status = lag_over_writes_the_live_member_applied(
            fresh_database, broker, "the dead member's partitions were moved already: nothing proved"
        )
        assert status.lag_seconds > 0
    finally:
        feeder.stop()
        for member in members:
            member.stop()


def test_a_member_that_never_recorded_its_partitions_shows_as_lag(
    fresh_database: str, broker: KafkaBroker
) -> None:
    """A member holds partitions and dies (or hangs) before its first record of them; the
    other member records its own partitions read to their ends. The status counted from
    the rows there were, all the live member's: lag near 0 with the silent member's
    messages unapplied (found by tests/test_production_faults.py in CI: "280 of the store's
    last 403 events not applied" with the Dagster lag check green, a member SIGKILLed just
    after the start). Now any member writes a row for every partition of the topic (at
    the store's start until its own member records it), so the silent ones count."""
    group = consumer_group("warriors_read_model")
    silent = Consumer({
        "bootstrap.servers": broker.bootstrap_servers(), "group.id": group, "enable.auto.commit": False,
        "partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": 6000,
    })  # fmt: skip
    stop = threading.Event()

    def hold() -> None:  # in the group, holding its partitions, reading and recording nothing
        while not stop.is_set():
            silent.poll(0.1)
            if held := silent.assignment():
                silent.pause(held)

    feeder = relay(fresh_database, broker)  # creates the topic
    wait_for(lambda: kafka_statuses(fresh_database).get(RELAY) is not None, timeout=60, what="the relay")
    silent.subscribe([TOPIC])
    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    member = ProjectorProcess(fresh_database, env=bus_env(broker), name="member")
    try:
        wait_for(lambda: members_holding_partitions(broker, group) == 2, timeout=120,
                 what="both members to hold partitions")  # fmt: skip
        wait_for(lambda: recorded_partitions(fresh_database) > 0, timeout=60, what="a first record")
        lag_over_writes_the_live_member_applied(
            fresh_database, broker, "the silent member holds nothing: nothing proved"
        )
    finally:
        stop.set()
        holder.join(timeout=10)
        silent.close()
        member.stop()
        feeder.stop()


def test_a_member_joining_a_group_that_committed_rebuilds_nothing(
    fresh_database: str, broker: KafkaBroker
) -> None:
    """Only a group that never committed builds its sink from the store. Cooperative
    rebalancing tells a member only of the partitions it gains, often none, and no
    partitions passed for "none committed": each rebalance (a member joining, leaving,
    dying) made every member rebuild its sink from the whole store (found by
    tests/test_production_faults.py)."""
    write_history(fresh_database, 100)
    feeder = relay(fresh_database, broker)
    members = [ProjectorProcess(fresh_database, env=bus_env(broker), name="member-a")]
    try:
        wait_for(lambda: unapplied(fresh_database) == 0, timeout=120, what="the read model fed from Kafka")
        wait_for(lambda: recorded_partitions(fresh_database) == 3, timeout=60, what="the topic read")
        members.append(ProjectorProcess(fresh_database, env=bus_env(broker), name="member-b"))
        wait_for(lambda: members_holding_partitions(broker, "warriors-warriors_read_model") == 2, timeout=120,
                 what="both members to hold partitions")  # fmt: skip
        write_history(fresh_database, 20)  # and the stream goes on
        wait_for(lambda: unapplied(fresh_database) == 0, timeout=120, what="both members")
    finally:
        feeder.stop()
        for member in members:
            member.stop()
    rebuilt = [member.log_path.read_text().count("built from the event store") for member in members]
    assert rebuilt == [1, 0]  # the new group's first member, once
    assert exact(fresh_database)


def retention_ms(broker: KafkaBroker) -> str:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers()})
    [future] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, TOPIC)]).values()
    return str(future.result(timeout=30)["retention.ms"].value)


def test_a_flushed_cache_is_rebuilt_whole_from_the_store_whatever_the_topic_kept(
    fresh_database: str, broker: KafkaBroker, redis_url: str
) -> None:
    """Two members in each consumer group; the topic's records deleted (retention), then
    Redis flushed: the member that notices rebuilds the whole cache from the event store
    (not its own partitions from what the topic kept), and the cache ends equal to the
    store, count included."""
    write_history(fresh_database, 300)
    env = {**bus_env(broker), "REDIS_URL": redis_url}
    processes = [
        relay(fresh_database, broker),
        *(ProjectorProcess(fresh_database, env=env) for _ in range(2)),
    ]
    try:
        wait_for(lambda: cache_matches_the_store(fresh_database, redis_url), timeout=120, what="the cache")
        assert retention_ms(broker) == str(7 * 24 * 3600 * 1000)  # set explicitly (KAFKA_RETENTION_HOURS)
        drop_the_topics_records(broker)
        with redis.Redis.from_url(redis_url) as client:
            client.flushall()
        write_history(fresh_database, 10)  # and the stream goes on
        wait_for(lambda: cache_matches_the_store(fresh_database, redis_url), timeout=120,
                 what="the cache rebuilt from the store")  # fmt: skip
    finally:
        for process in processes:
            process.stop()


def test_an_operators_cache_rebuild_in_kafka_mode_never_serves_a_partial_cache(
    fresh_database: str, broker: KafkaBroker, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's rebuild of the cache (the Dagster job, the CLI) emptied it and
    replayed the store with its own engine; the group's member, idle at the topic's end,
    saw a count and an epoch and called the cache ready again after a few batches, and
    readers were served a partial count (issue 25, item 1). Fed from Kafka, the rebuild is
    asked of the group now: the cache stays partial, never served, until the member's
    replay is over. Throughout, the count is either not served or the store's."""
    write_history(fresh_database, 3000)
    env = {**bus_env(broker), "REDIS_URL": redis_url, "CACHE_COUNT_FRESH_SECONDS": "0.6"}
    processes = [relay(fresh_database, broker), ProjectorProcess(fresh_database, env=env)]
    served: list[int] = []
    done = threading.Event()

    def sample() -> None:  # what a reader of the count is served, over and over
        while not done.is_set():
            if (count := redis_count(redis_url)) is not None:
                served.append(count)

    try:
        wait_for(lambda: cache_matches_the_store(fresh_database, redis_url), timeout=180, what="the cache")
        living_now = living(fresh_database)
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers())
        monkeypatch.setenv("REDIS_URL", redis_url)
        get_settings.cache_clear()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        async def operator_rebuild() -> RebuildReport:
            async with AsyncConnectionPool(fresh_database, kwargs={"autocommit": True}) as pool:
                return await rebuild(pool, ProjectionName.WARRIORS_CACHE, batch_size=50, progress=print)

        report = asyncio.run(operator_rebuild())
        wait_for(
            lambda: cache_matches_the_store(fresh_database, redis_url), timeout=60, what="the cache again"
        )
        done.set()
        sampler.join(timeout=10)
    finally:
        done.set()
        get_settings.cache_clear()
        for process in processes:
            process.stop()
    assert report.projection == "warriors_cache"
    assert served, "the count was never served"
    assert set(served) == {living_now}, f"a partial count was served: {sorted(set(served))[:5]}"


def consistency(url: str, redis_url: str, *, kafka: bool) -> tuple[ConsistencyReport, ConsistencyReport]:
    """The nightly checks of the read model and of the cache, as Dagster runs them."""

    async def check() -> tuple[ConsistencyReport, ConsistencyReport]:
        models = RedisReadModels(redis_url)
        try:
            async with await AsyncConnection.connect(url, autocommit=True) as conn:
                read_model = await check_read_model(
                    conn, "warriors_read_model", "warriors_read_model", 50, kafka=kafka
                )
                cache = await check_cache(conn, models, "warriors_cache", 50, kafka=kafka)
            return read_model, cache
        finally:
            await models.close()

    return asyncio.run(check())


def test_the_consistency_checks_hold_when_fed_from_kafka(
    fresh_database: str, broker: KafkaBroker, redis_url: str
) -> None:
    """Kafka consumers never move projection_offsets: checked against it, a healthy read
    model failed every night. Fed from Kafka the counts are compared with the whole store
    when the consumers stand at the head, and not compared (said so) while they move."""
    write_history(fresh_database, 200)
    env = {**bus_env(broker), "REDIS_URL": redis_url}
    processes = [relay(fresh_database, broker), ProjectorProcess(fresh_database, env=env)]
    try:
        wait_for(lambda: cache_matches_the_store(fresh_database, redis_url), timeout=120, what="the sinks")
        wait_for(
            lambda: all(s.lag_events == 0 for s in kafka_statuses(fresh_database).values()), what="no lag"
        )
        wrong, _ = consistency(fresh_database, redis_url, kafka=False)
        assert not wrong.consistent  # the store-fed check's checkpoint means nothing here
        read_model, cache = consistency(fresh_database, redis_url, kafka=True)
        assert read_model.consistent, read_model
        assert (read_model.rows, read_model.counted, read_model.expected) == (180, 180, 180)
        assert read_model.counts_compared
        assert read_model.sampled == 50
        assert cache.consistent, cache
        assert cache.counts_compared
        assert (cache.rows, cache.expected) == (180, 180)

        processes[1].process.kill()  # the consumers stop; the store moves on
        processes[1].stop()
        write_history(fresh_database, 10)
        wait_for(lambda: kafka_statuses(fresh_database)["warriors_read_model"].lag_events > 0, what="lag")
        read_model, cache = consistency(fresh_database, redis_url, kafka=True)
        assert not read_model.counts_compared  # said, not failed
        assert read_model.consistent
        assert any("not compared" in note for note in read_model.notes)
        assert not cache.counts_compared
    finally:
        for process in processes:
            process.stop()


def test_a_position_waits_for_the_consumer_to_apply_a_deletion(
    fresh_database: str, broker: KafkaBroker
) -> None:
    """Fed from Kafka, `?position=` of a deletion is answered once the read model applied
    it, not as soon as the store holds it (before, a stored deletion counted as applied:
    a read answered while the consumer had applied nothing)."""
    write_history(fresh_database, 3)  # w0: created, renamed, deleted
    with psycopg.connect(fresh_database) as conn:
        deleted, position = conn.execute(
            "SELECT aggregate_id, position FROM event_store WHERE event_type = 'WarriorDeleted'"
        ).fetchone() or (None, None)
    feeder = relay(fresh_database, broker)  # published, but no consumer yet
    service = ServiceProcess(
        fresh_database, free_port(), env={**bus_env(broker), "READ_WAIT_TIMEOUT_SECONDS": "1"}
    )
    projector: ProjectorProcess | None = None
    try:
        wait_for(lambda: kafka_statuses(fresh_database)[RELAY].lag_events == 0, what="the relay")
        url = f"{service.base_url}/api/v1/queries/warriors/count?position={position}"
        early = httpx.get(url, timeout=10)
        assert early.status_code == 503, early.text  # the read model is behind: it says so
        projector = ProjectorProcess(fresh_database, env=bus_env(broker))
        wait_for(
            lambda: httpx.get(url, timeout=10).status_code == 200, timeout=120, what="the deletion applied"
        )
        assert httpx.get(url, timeout=10).json() == {"count": 2}  # w1 and w2; w0 gone
        assert deleted not in {row[0] for row in read_model_rows(fresh_database)}
    finally:
        service.stop()
        feeder.stop()
        if projector is not None:
            projector.stop()
