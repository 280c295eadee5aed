"""The upcaster regression: every (event type, schema version) the store holds, read by the
current code. For each pair, a sample of its events is upcast and parsed, and the
warriors they belong to are folded from their whole history (parked events left out: an
operator already knows they do not apply); any failure names the pair, the event and
the error. A rebuild refuses to start while this fails (a rebuild would
stop at the first such event, or worse, fold it wrongly)."""

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from warriors.application.warrior_commands import rebuild
from warriors.domain.events import event_from_data
from warriors.eventstore.opening import keyring_for
from warriors.eventstore.reader import EVENT_COLUMNS, stored_event
from warriors.eventstore.store import AggregateStream

SAMPLE_PER_VERSION = 50

_VERSIONS = "SELECT event_type, schema_version, count(*) FROM event_store GROUP BY 1, 2 ORDER BY 1, 2"
# The newest of each pair (the position index, backwards) and the oldest (forwards).
# Parked events are known not to apply (an operator decided about each): they are not
# what this checks, and they would fail it for good.
_SAMPLE = f"""
(SELECT {EVENT_COLUMNS} FROM event_store WHERE event_type = %(type)s AND schema_version = %(version)s
   AND event_id NOT IN (SELECT event_id FROM projection_parked_events)
 ORDER BY position DESC LIMIT %(half)s)
UNION
(SELECT {EVENT_COLUMNS} FROM event_store WHERE event_type = %(type)s AND schema_version = %(version)s
   AND event_id NOT IN (SELECT event_id FROM projection_parked_events)
 ORDER BY position LIMIT %(half)s)
"""
_PARKED = "SELECT DISTINCT event_id FROM projection_parked_events"
_HISTORY = f"SELECT {EVENT_COLUMNS} FROM event_store WHERE aggregate_id = %s ORDER BY event_version"


@dataclass
class RegressionReport:
    versions: dict[str, int] = field(default_factory=dict)  # "Type v1" -> events stored
    sampled: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


async def check_upcasters(conn: AsyncConnection[Any], sample: int = SAMPLE_PER_VERSION) -> RegressionReport:
    report = RegressionReport()
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_VERSIONS)
        pairs = await cur.fetchall()
        aggregates: set[UUID] = set()
        for event_type, version, count in pairs:
            report.versions[f"{event_type} v{version}"] = count
            await cur.execute(_SAMPLE, {"type": event_type, "version": version, "half": max(1, sample // 2)})
            events = [stored_event(row) for row in await cur.fetchall()]
            keyring = await keyring_for(conn, list({e.aggregate_id for e in events}))
            for event in events:
                report.sampled += 1
                aggregates.add(event.aggregate_id)
                try:  # upcast, opened with the warrior's key (the master key is checked too)
                    event_from_data(event.event_type, keyring.open_event(event).data)
                except Exception as exc:  # any error is the regression to report
                    report.failures.append(f"{event_type} v{version}: event {event.event_id}: {exc!r}")
        await cur.execute(_PARKED)
        parked = {row[0] for row in await cur.fetchall()}
        for aggregate_id in sorted(aggregates):
            await cur.execute(_HISTORY, (aggregate_id,))
            history = [
                e for e in (stored_event(row) for row in await cur.fetchall()) if e.event_id not in parked
            ]
            try:
                keyring = await keyring_for(conn, [aggregate_id])
                rebuild(aggregate_id, AggregateStream.from_events([keyring.open_event(e) for e in history]))
            except Exception as exc:
                report.failures.append(f"warrior {aggregate_id}: its history does not fold: {exc!r}")
    return report
