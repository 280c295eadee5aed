"""The development Kafka broker (warriors/servers/kafka_broker.py), real and on free ports:
topics, an idempotent producer, consumer groups, restarts on the same data, the CLI."""

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # confluent_kafka.admin uses it without re-exporting it

from warriors.servers import free_port
from warriors.servers.kafka_broker import KafkaBroker

MESSAGES = 100
KEYS = 7
TIMEOUT_SECONDS = 60.0


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    server = KafkaBroker(Path(tempfile.mkdtemp(prefix="warriors-test-kafka-")), free_port(), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


def _create_topic(bootstrap: str, partitions: int) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=TIMEOUT_SECONDS)
    described = admin.list_topics(topic=name, timeout=TIMEOUT_SECONDS).topics[name]
    assert len(described.partitions) == partitions
    return name


def _produce(bootstrap: str, topic: str) -> None:
    """MESSAGES keyed messages, `key:sequence-within-key`, every delivery acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    reports: list[tuple[KafkaError | None, Message]] = []
    for i in range(MESSAGES):
        key = f"k{i % KEYS}"
        producer.produce(
            topic,
            key=key,
            value=f"{key}:{i // KEYS}",
            on_delivery=lambda err, msg: reports.append((err, msg)),
        )
        producer.poll(0)
    assert producer.flush(TIMEOUT_SECONDS) == 0
    assert len(reports) == MESSAGES
    assert [err for err, _ in reports if err is not None] == []
    offsets = [msg.offset() for _, msg in reports]
    assert all(offset is not None and offset >= 0 for offset in offsets)


def _consume(bootstrap: str, topic: str, group: str) -> list[tuple[str, str]]:
    """(key, value) pairs as a new consumer group reads them from the earliest offset, until
    MESSAGES have arrived or the deadline."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    received: list[tuple[str, str]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while len(received) < MESSAGES and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            key, value = msg.key(), msg.value()
            assert isinstance(key, bytes)
            assert isinstance(value, bytes)
            received.append((key.decode(), value.decode()))
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return received


def _assert_all_in_key_order(received: list[tuple[str, str]]) -> None:
    assert len(received) == MESSAGES
    by_key: dict[str, list[int]] = {}
    for key, value in received:
        value_key, sequence = value.split(":")
        assert value_key == key
        by_key.setdefault(key, []).append(int(sequence))
    assert sorted(by_key) == sorted(f"k{k}" for k in range(KEYS))
    for key, sequences in by_key.items():
        expected = len([i for i in range(MESSAGES) if f"k{i % KEYS}" == key])
        assert sequences == list(range(expected)), key


def test_keyed_messages_arrive_in_order_and_survive_a_restart(broker: KafkaBroker) -> None:
    bootstrap = broker.bootstrap_servers()
    topic = _create_topic(bootstrap, partitions=3)
    _produce(bootstrap, topic)
    _assert_all_in_key_order(_consume(bootstrap, topic, group=f"g-{uuid.uuid4().hex}"))

    broker.stop()
    assert not broker.running()
    assert broker.start() == bootstrap
    assert broker.running()

    _assert_all_in_key_order(_consume(bootstrap, topic, group=f"g-{uuid.uuid4().hex}"))


def test_start_is_idempotent(broker: KafkaBroker) -> None:
    bootstrap = broker.start()
    pid = broker.pid_file.read_text()
    assert broker.start() == bootstrap
    assert broker.pid_file.read_text() == pid
    # Another object on the same data folder finds the running broker, whatever port it asks.
    assert KafkaBroker(broker.data_dir, free_port()).start() == bootstrap
    assert broker.pid_file.read_text() == pid


def test_cli_start_status_stop(broker: KafkaBroker) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "warriors.servers.kafka_broker",
            *args,
            "--data-dir",
            str(broker.data_dir),
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS * 2)

    bootstrap = broker.start()
    started = cli("start", "--port", str(free_port()))
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == bootstrap
    assert cli("status").stdout.strip() == bootstrap

    stopped = cli("stop")  # a broker this process started, stopped from another one
    assert stopped.returncode == 0, stopped.stderr
    assert not broker.running()
    assert cli("status").returncode == 1

    assert broker.start() == bootstrap
