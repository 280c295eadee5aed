"""Plain records the event store reads and writes."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True, order=True)
class StreamPosition:
    """A place in the global stream: the (transaction_id, position) of the last event read.

    The gap-safe reader orders events by this pair, so a checkpoint must keep both.
    """

    transaction_id: int = 0
    position: int = 0


START = StreamPosition()


@dataclass(frozen=True, slots=True)
class NewEvent:
    event_id: UUID
    aggregate_id: UUID
    aggregate_type: str
    event_type: str
    event_version: int
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]


@dataclass(slots=True)  # not frozen: frozen __init__ cost 10% of a replay
class StoredEvent:
    position: int
    transaction_id: int
    event_id: UUID
    aggregate_id: UUID
    aggregate_type: str
    event_type: str
    event_version: int
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    created_at: datetime

    @property
    def stream_position(self) -> StreamPosition:
        return StreamPosition(self.transaction_id, self.position)


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class NewKey:
    """A new warrior's data key, wrapped by the master key (`warrior_keys`)."""

    wrapped: bytes
    master_key_id: str


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """Events for one aggregate with consecutive versions, written all or none; with
    `new_key`, the aggregate's key is stored with them (in the same transaction); with
    `inline_row`, the appender's inline projection writes that row with them (its SQL
    says what the row holds)."""

    events: list[NewEvent]
    idempotency: IdempotencyKey | None = None
    new_key: NewKey | None = None
    inline_row: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.events:
            raise ValueError("an append needs at least one event")
        first = self.events[0]
        for offset, event in enumerate(self.events):
            if event.aggregate_id != first.aggregate_id:
                raise ValueError("one append writes one aggregate's events")
            if event.event_version != first.event_version + offset:
                raise ValueError("event versions in one append must be consecutive")


@dataclass(frozen=True, slots=True)
class Appended:
    aggregate_id: UUID
    version: int
    position: int


@dataclass(frozen=True, slots=True)
class VersionTaken:
    """Another writer appended this aggregate's version first."""


@dataclass(frozen=True, slots=True)
class KeyTaken:
    """The idempotency key already belongs to another (maybe concurrent) command."""


AppendOutcome = Appended | VersionTaken | KeyTaken


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    """What an idempotency key answered the first time."""

    fingerprint: str
    aggregate_id: UUID
    version: int
    position: int


@dataclass(slots=True)
class Snapshot:
    aggregate_id: UUID
    version: int
    state: dict[str, Any] = field(default_factory=dict)
    schema_version: int = 1  # of `state`: 1 plain text, 2 with `personal` sealed
