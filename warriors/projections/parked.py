"""Parked events as a first-class thing: list them, replay them after a fix, or discard
them with a reason (recorded).

An event is parked when a projection could not apply it and an operator (`warriors
projections park`) or a Kafka consumer (after its retries, with a copy in the dead-letter
topic) moved past it. The projection's sink then misses that event's effect. Replaying
rebuilds the projection with the event applied this time (blue/green for a table or an
index: readers see the old sink until the new one is complete; in place for the Redis
cache): the whole history is folded again, so later events of the same warrior are
applied on top of it, not of the state that skipped it. Should the event fail again, the
rebuild fails, the live sink is untouched (blue/green) and the event stays parked with
its new error. A discarded event stays passed over for good and is no longer counted.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from warriors.eventstore.errors import translated_errors
from warriors.projections.catalog import ProjectionName, rebuild
from warriors.projections.rebuild import RebuildFailed, RebuildReport

REASON_MAX_LENGTH = 500


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    projection: str
    event_id: UUID
    position: int
    aggregate_id: UUID | None
    event_type: str | None
    error: str
    parked_at: datetime
    discarded_at: datetime | None
    discard_reason: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "projection": self.projection, "event_id": str(self.event_id), "position": self.position,
            "aggregate_id": str(self.aggregate_id) if self.aggregate_id else None,
            "event_type": self.event_type, "error": self.error, "parked_at": self.parked_at.isoformat(),
            "discarded_at": self.discarded_at.isoformat() if self.discarded_at else None,
            "discard_reason": self.discard_reason,
        }  # fmt: skip


class NothingParked(LookupError):
    """No parked (and not discarded) event matches."""


_LIST = """
SELECT p.projection_name AS projection, p.event_id, p.position, e.aggregate_id, e.event_type, p.error,
       p.parked_at, p.discarded_at, p.discard_reason
FROM projection_parked_events p LEFT JOIN event_store e ON e.event_id = p.event_id
WHERE p.projection_name = %(name)s AND (%(discarded)s OR p.discarded_at IS NULL)
ORDER BY p.position
"""


_NEW_ERROR = "UPDATE projection_parked_events SET error = %s WHERE projection_name = %s AND event_id = %s"


async def parked_events(
    conn: AsyncConnection[Any], name: str, *, discarded: bool = False
) -> list[ParkedEvent]:
    """The projection's parked events, oldest first; with `discarded`, the discarded too."""
    async with conn.cursor(row_factory=class_row(ParkedEvent)) as cur:
        await cur.execute(_LIST, {"name": name, "discarded": discarded})
        return await cur.fetchall()


async def discard(conn: AsyncConnection[Any], name: str, event_id: UUID, reason: str) -> ParkedEvent:
    """Record that the event is never to be applied, and why."""
    reason = " ".join(reason.split())
    if not 1 <= len(reason) <= REASON_MAX_LENGTH:
        raise ValueError(f"give a reason of 1-{REASON_MAX_LENGTH} characters")
    cursor = await conn.execute(
        "UPDATE projection_parked_events SET discarded_at = now(), discard_reason = %s"
        " WHERE projection_name = %s AND event_id = %s AND discarded_at IS NULL",
        (reason, name, event_id),
    )
    if cursor.rowcount != 1:
        raise NothingParked(f"{name} has no parked event {event_id} (or it is discarded already)")
    [found] = [e for e in await parked_events(conn, name, discarded=True) if e.event_id == event_id]
    return found


async def replay(
    pool: AsyncConnectionPool[AsyncConnection],
    name: ProjectionName,
    event_ids: Iterable[UUID] | None = None,
    *,
    batch_size: int = 1000,
    progress: Callable[[str], None] = print,
) -> tuple[list[ParkedEvent], RebuildReport]:
    """Apply the parked events (`event_ids`, or all those not discarded) by rebuilding
    the projection with them; returns them and the rebuild's report. RebuildFailed if one
    fails again: it stays parked, with the new error recorded."""
    with translated_errors():
        async with pool.connection() as conn:
            waiting = await parked_events(conn, name)
    wanted = set(event_ids) if event_ids is not None else {e.event_id for e in waiting}
    chosen = [e for e in waiting if e.event_id in wanted]
    if not chosen or len(chosen) != len(wanted):
        missing = ", ".join(str(i) for i in sorted(wanted - {e.event_id for e in chosen}, key=str))
        raise NothingParked(f"{name} has no parked event {missing}" if missing else f"{name} has none parked")
    progress(f"{name}: replaying {len(chosen)} parked event(s) by a rebuild")
    try:
        report = await rebuild(
            pool,
            name,
            batch_size=batch_size,
            progress=progress,
            replaying=frozenset(e.event_id for e in chosen),
        )
    except RebuildFailed as failed:
        if failed.event_id is not None and failed.error:
            async with pool.connection() as conn:
                await conn.execute(_NEW_ERROR, (failed.error, name, failed.event_id))
        raise
    return chosen, report
