"""A stored event on the bus (pure: no I/O): the message key, headers and JSON value the
relay writes, and the StoredEvent a consumer reads back."""

from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from warriors.eventstore.records import StoredEvent


def key(event: StoredEvent) -> bytes:
    """The aggregate id: one warrior's events share a partition, so they stay in order."""
    return str(event.aggregate_id).encode()


def headers(event: StoredEvent) -> list[tuple[str, str | bytes | None]]:
    found: list[tuple[str, str | bytes | None]] = [
        ("event_id", str(event.event_id).encode()),
        ("event_type", event.event_type.encode()),
        ("position", str(event.position).encode()),
        ("correlation_id", str(event.metadata.get("correlation_id", "")).encode()),
    ]
    if isinstance(traceparent := event.metadata.get("traceparent"), str):  # W3C trace context
        found.append(("traceparent", traceparent.encode()))
    return found


def value(event: StoredEvent) -> bytes:
    return orjson.dumps(
        {
            "event_id": event.event_id,
            "aggregate_id": event.aggregate_id,
            "aggregate_type": event.aggregate_type,
            "event_type": event.event_type,
            "version": event.event_version,
            "schema_version": event.schema_version,
            "position": event.position,
            "transaction_id": event.transaction_id,
            "created_at": event.created_at,
            "data": event.data,
            "metadata": event.metadata,
        }
    )


class Unreadable(ValueError):
    """A message that is not an event envelope."""


def decode(raw: bytes | None) -> StoredEvent:
    try:
        envelope: dict[str, Any] = orjson.loads(raw or b"")
        return StoredEvent(
            position=int(envelope["position"]),
            transaction_id=int(envelope["transaction_id"]),
            event_id=UUID(envelope["event_id"]),
            aggregate_id=UUID(envelope["aggregate_id"]),
            aggregate_type=str(envelope["aggregate_type"]),
            event_type=str(envelope["event_type"]),
            event_version=int(envelope["version"]),
            schema_version=int(envelope["schema_version"]),
            data=dict(envelope["data"]),
            metadata=dict(envelope["metadata"]),
            created_at=datetime.fromisoformat(envelope["created_at"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise Unreadable(f"not an event envelope: {exc!r}") from exc
