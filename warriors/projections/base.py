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

    async def intact(self, checkpoint: StreamPosition, *, fresh: bool = False) -> bool:
        """False when the projection's target lost its data behind the engine's back (a
        flushed cache) while the checkpoint is past the start: the engine then resets it
        and moves the checkpoint to 0, and the next batch (from 0) finds it intact.

        A target may answer from a recent look (the search index: the live projector asks
        ten times a second); `fresh` asks the target itself, for a decision that must not
        rest on a moment-old answer (whether a rebuild may resume into the sink)."""
        ...

    async def caught_up(self) -> None:
        """Called after a batch that reached the head of the store."""
        ...

    async def close(self) -> None:
        """Release the projection's clients (a search engine, Redis)."""
        ...


class BlueGreenProjection(Projection, Protocol):
    """A projection whose storage (a table, a search index) a rebuild can build anew
    beside the live one and swap in (warriors/projections/rebuild.py)."""

    def shadow(self) -> "BlueGreenProjection":
        """The same projection into new storage, under a checkpoint of its own."""
        ...

    async def create_shadow(self, conn: AsyncConnection[Any], shadow: "BlueGreenProjection") -> None:
        """Create the shadow's (empty) storage, dropping a crashed rebuild's leftovers."""
        ...

    async def swap_in(self, conn: AsyncConnection[Any], shadow: "BlueGreenProjection") -> None:
        """Make the shadow's storage the live one, inside the swap's transaction (which
        holds both projections' locks). May raise psycopg's LockNotAvailable: the swap is
        then undone and tried again later."""
        ...

    async def retire(self, conn: AsyncConnection[Any]) -> None:
        """Drop the storage the last swap replaced (after the swap's commit)."""
        ...

    async def drop_shadow(self, conn: AsyncConnection[Any], shadow: "BlueGreenProjection") -> None:
        """Drop the shadow's storage (a failed rebuild)."""
        ...
