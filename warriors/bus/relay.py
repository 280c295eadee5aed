"""The relay: publishes every stored event to the topic `warrior-events`, in the order of
the gap-safe reader, as a projection of the store (`warriors_kafka_relay`).

Its checkpoint moves in the engine's transaction only after the broker confirmed every
message of the batch, so a crash or a dead broker loses nothing: the batch is published
again (at least once; consumers apply idempotently). Its lag shows with the projections'.
"""

from typing import Any

from psycopg import AsyncConnection

from warriors.adapters.kafka_bus import TOPIC, BusProducer, BusUnavailable, OutgoingMessage
from warriors.bus import envelope
from warriors.eventstore.records import StoredEvent, StreamPosition
from warriors.projections.base import ProjectionTargetUnavailable
from warriors.projections.status import RELAY

__all__ = ["RELAY", "KafkaRelay"]


class KafkaRelay:
    def __init__(self, producer: BusProducer, name: str = RELAY, topic: str = TOPIC) -> None:
        self.name = name
        self.producer = producer
        self.topic = topic

    async def apply(self, conn: AsyncConnection[Any], events: list[StoredEvent]) -> None:
        messages = [OutgoingMessage(envelope.key(e), envelope.value(e), envelope.headers(e)) for e in events]
        try:
            await self.producer.publish(self.topic, messages)
        except BusUnavailable as exc:
            raise ProjectionTargetUnavailable(str(exc)) from exc

    async def skip(self, conn: AsyncConnection[Any], event: StoredEvent) -> None:
        """Every event can be published; nothing is ever parked here."""

    async def reset(self, conn: AsyncConnection[Any]) -> None:
        """A topic is not emptied: a replay publishes everything again (consumers apply
        idempotently, so that only costs time)."""

    async def intact(self, checkpoint: StreamPosition, *, fresh: bool = False) -> bool:
        return True

    async def caught_up(self) -> None:
        pass

    async def close(self) -> None:
        self.producer.close()
