"""Kafka through confluent-kafka (librdkafka): creating the topics, and the idempotent
producer the relay and the dead-letter path publish with.

The producer is idempotent with `acks=all`: a retried send is written once, and a
message counts as delivered only once every in-sync replica has it. `publish` returns
only when the broker has confirmed every message of the batch; otherwise it raises
`BusUnavailable` and the caller (the relay) keeps its checkpoint where it was.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

log = logging.getLogger("warriors.bus")

TOPIC = "warrior-events"
DLQ_TOPIC = f"{TOPIC}.dlq"
DELIVERY_TIMEOUT_SECONDS = 15.0


class BusUnavailable(Exception):
    """The broker did not confirm every message in time."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    key: bytes
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


def ensure_topics(
    bootstrap_servers: str,
    partitions: int,
    replication: int,
    retention_hours: int = 168,
    timeout: float = 30.0,
) -> None:
    """Create the event topic and its dead-letter topic unless they exist (idempotent),
    with their retention set explicitly rather than left to the broker's default. An
    existing topic is left as it is (change it with the broker's kafka-configs tool)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    config = {"retention.ms": str(retention_hours * 3600 * 1000)}
    wanted = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication, config=config)
        for name in (TOPIC, DLQ_TOPIC)
    ]
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            log.info("created topic %s (%d partitions, replication %d)", name, partitions, replication)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BusUnavailable(f"could not create topic {name}: {exc}") from exc
        except TimeoutError as exc:  # no broker answered (not up yet, or unreachable)
            raise BusUnavailable(f"no broker at {bootstrap_servers} answered within {timeout:.0f}s") from exc


class BusProducer:
    def __init__(self, bootstrap_servers: str) -> None:
        self._config = {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            # A message not confirmed by then fails, rather than waiting in the queue
            # behind the retries of a relay whose broker is down.
            "message.timeout.ms": int(DELIVERY_TIMEOUT_SECONDS * 1000),
        }
        self._producer = Producer(self._config)

    async def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        """Send `messages` in order; return once the broker confirmed every one."""
        failures: list[str] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(str(error))

        try:
            await self._send(topic, messages, delivered)
        except KafkaException as exc:  # a fatal producer error among them: start afresh
            self._producer.purge()
            self._producer = Producer(self._config)
            raise BusUnavailable(f"the producer failed: {exc}") from exc
        remaining = await asyncio.to_thread(self._producer.flush, DELIVERY_TIMEOUT_SECONDS + 1)
        if remaining or failures:
            self._producer.purge()  # what is still queued is sent again with the retry
            raise BusUnavailable(
                f"of {len(messages)} messages {remaining} unconfirmed, {len(failures)} failed {failures[:1]}"
            )

    async def _send(
        self,
        topic: str,
        messages: Sequence[OutgoingMessage],
        delivered: Callable[[KafkaError | None, Message], None],
    ) -> None:
        for message in messages:
            while True:
                try:
                    self._producer.produce(
                        topic,
                        key=message.key,
                        value=message.value,
                        headers=message.headers,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    await asyncio.to_thread(self._producer.poll, 0.1)

    def close(self) -> None:
        self._producer.flush(5)
