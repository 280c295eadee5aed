"""What a projection is, for the engine that feeds it."""

from typing import Any, Protocol

from psycopg import AsyncConnection

from warriors.eventstore.records import StoredEvent, StreamPosition


class PoisonEvent(Exception):
    """An event the projection cannot apply. The engine applies the events before it,
    marks the projection FAILED at this one, and does not move past it."""

    def __init__(self, event: StoredEvent, reason: str) -> None:
        super().__init__(
            f"event {event.event_id} at position {event.position} ({event.event_type}): {reason}"
        )
        self.event = event
        self.reason = reason


class ProjectionTargetUnavailable(Exception):
    """The projection's target (a search engine, a cache) cannot be reached: the batch is
    retried later, nothing is marked FAILED."""


class Projection(Protocol):
    """A PostgreSQL projection: its rows and its checkpoint move in one transaction."""

    name: str

    async def apply(self, conn: AsyncConnection[Any], events: list[StoredEvent]) -> None:
        """Apply `events` (in stream order) inside the caller's transaction.

        Must be idempotent by aggregate version, and raise `PoisonEvent` for the first
        event it cannot apply, having written nothing (the engine re-applies the events
        before it)."""
        ...

    async def skip(self, conn: AsyncConnection[Any], event: StoredEvent) -> None:
        """The operator parked `event`: record it as passed over, so that the later events
        of its aggregate still apply (inside the caller's transaction)."""
        ...

    async def reset(self, conn: AsyncConnection[Any]) -> None:
        """Remove every row (a replay from position 0 follows), inside the caller's transaction."""
        ...

    async def intact(self, checkpoint: StreamPosition) -> bool:
        """False when the projection's target lost its data behind the engine's back (a
        flushed cache) while the checkpoint is past the start: the engine then resets it
        and moves the checkpoint to 0, and the next batch (from 0) finds it intact."""
        ...

    async def caught_up(self) -> None:
        """Called after a batch that reached the head of the store."""
        ...


class TableProjection(Projection, Protocol):
    """A projection into one PostgreSQL table, which a blue/green rebuild can replace."""

    table: str

    def shadow(self) -> "TableProjection":
        """The same projection into a shadow table, under a checkpoint of its own."""
        ...

    async def adopt(self, conn: AsyncConnection[Any], table: str) -> None:
        """`table`'s rows are about to be swapped in (inside the swap's transaction, before
        the renames): bring what follows the table (a count, say) in line."""
        ...
