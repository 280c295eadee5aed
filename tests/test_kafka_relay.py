"""The relay against a real Kafka broker: every stored event reaches the topic, each
aggregate's events in version order; a SIGKILLed relay and a stopped broker lose nothing."""

import os
import signal
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
from confluent_kafka import Consumer, TopicPartition

from tests.history import checkpoint, head, write_history
from tests.support import LoggedProcess, ServiceProcess, wait_for
from warriors.adapters.kafka_bus import TOPIC
from warriors.bus.relay import RELAY
from warriors.servers import free_port
from warriors.servers.kafka_broker import KafkaBroker

COMMANDS = "/api/v1/commands/warriors"


def relayed(url: str) -> bool:
    return checkpoint(url, RELAY) == head(url)


class RelayProcess(LoggedProcess):
    """`warriors relay` in a subprocess."""

    def __init__(self, database_url: str, bootstrap: str) -> None:
        env = {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_PARTITIONS": "3"}
        super().__init__(["-m", "warriors.cli", "relay"], env, "relay")


def topic_events(bootstrap: str) -> list[dict[str, object]]:
    """Every message on the topic, partition by partition, in offset order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    try:
        metadata = consumer.list_topics(TOPIC, timeout=10)
        partitions = [TopicPartition(TOPIC, p, 0) for p in metadata.topics[TOPIC].partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        consumer.assign(partitions)
        seen: dict[int, int] = defaultdict(int)
        events = []
        while any(seen[p] < end for p, end in ends.items()):
            for message in consumer.consume(500, timeout=2):
                assert message.error() is None, message.error()
                partition, offset, value = message.partition(), message.offset(), message.value()
                assert partition is not None
                assert offset is not None
                assert value is not None
                seen[partition] = offset + 1
                events.append({"partition": partition, **orjson.loads(value)})
        return events
    finally:
        consumer.close()


def assert_complete_and_ordered(url: str, bootstrap: str) -> None:
    events = topic_events(bootstrap)
    positions = {e["position"] for e in events}
    assert positions == set(range(1, head(url) + 1)), "an event is missing from the topic"
    by_aggregate: dict[object, list[tuple[int, int]]] = defaultdict(list)
    for e in events:
        by_aggregate[e["aggregate_id"]].append((int(e["version"]), int(e["partition"])))  # type: ignore[call-overload]
    for versions in by_aggregate.values():
        assert len({p for _, p in versions}) == 1, "one aggregate's events on several partitions"
        ordered = [v for v, _ in versions]
        first_seen = list(dict.fromkeys(ordered))  # a republished batch repeats, in order
        assert first_seen == sorted(first_seen), f"versions out of order: {ordered}"


def test_every_event_reaches_the_topic_in_order(fresh_database: str, broker: KafkaBroker) -> None:
    write_history(fresh_database, 4700)  # 9,870 events, with deletions
    service = ServiceProcess(fresh_database, free_port(), workers=2)
    relay = RelayProcess(fresh_database, broker.bootstrap_servers())
    try:

        def writer(n: int) -> None:  # concurrent writers through the API while the relay runs
            with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
                for i in range(50):
                    client.post(COMMANDS, json={"name": f"Live {n}-{i}", "dob": "1990-01-01"})

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(writer, range(4)))
        wait_for(lambda: relayed(fresh_database), timeout=120, what="the relay")
    finally:
        relay.stop()
        service.stop()
    assert head(fresh_database) >= 10_000
    assert_complete_and_ordered(fresh_database, broker.bootstrap_servers())


def test_a_killed_relay_and_a_stopped_broker_lose_nothing(fresh_database: str, broker: KafkaBroker) -> None:
    write_history(fresh_database, 5000)
    relay = RelayProcess(fresh_database, broker.bootstrap_servers())
    try:
        wait_for(lambda: 0 < checkpoint(fresh_database, RELAY) < head(fresh_database), timeout=120,
                 what="the relay mid-stream")  # fmt: skip
        os.kill(relay.process.pid, signal.SIGKILL)
        relay.process.wait()
    finally:
        relay.stop()
    service = ServiceProcess(fresh_database, free_port(), workers=1)
    relay = RelayProcess(fresh_database, broker.bootstrap_servers())
    try:
        broker.stop()
        with httpx.Client(
            base_url=service.base_url, headers=service.headers, timeout=10
        ) as client:  # the store takes writes
            for i in range(50):
                answer = client.post(
                    "/api/v1/commands/warriors", json={"name": f"Down {i}", "dob": "1990-01-01"}
                )
                assert answer.status_code == 202
        assert checkpoint(fresh_database, RELAY) < head(fresh_database)
        broker.start()
        wait_for(lambda: checkpoint(fresh_database, RELAY) == head(fresh_database), timeout=180,
                 what="the relay to catch up after the broker came back")  # fmt: skip
    finally:
        relay.stop()
        service.stop()
    assert_complete_and_ordered(fresh_database, broker.bootstrap_servers())
