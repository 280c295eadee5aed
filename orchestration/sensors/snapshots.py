"""Aggregates with SNAPSHOT_EVERY_EVENTS or more events since their last snapshot get
one. The cursor is a gap-safe stream position ("transaction_id:position"); each tick
reads at most a few chunks of events after it, so it stays far under Dagster's 60 s
limit however far behind it starts, and the next tick goes on from there."""

import time

import dagster as dg

from orchestration.assets.snapshots import SNAPSHOTS
from orchestration.jobs import take_snapshots
from orchestration.resources import EventStoreResource
from warriors.config import get_settings
from warriors.eventstore.records import StreamPosition

CHUNK_EVENTS = 5000
TICK_BUDGET_SECONDS = 10.0
RUN_SIZE = 1000  # aggregates per snapshot run: a failed run retakes little


def parse_cursor(cursor: str | None) -> StreamPosition:
    if not cursor:
        return StreamPosition()
    transaction_id, position = cursor.split(":")
    return StreamPosition(int(transaction_id), int(position))


def format_cursor(position: StreamPosition) -> str:
    return f"{position.transaction_id}:{position.position}"


@dg.sensor(
    name="snapshots_due",
    job=take_snapshots,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Aggregates with SNAPSHOT_EVERY_EVENTS or more events since their last snapshot:"
    " a snapshot run.",
)
def snapshots_due(context: dg.SensorEvaluationContext, store: EventStoreResource) -> dg.SensorResult:
    threshold = get_settings().snapshot_every_events
    start = parse_cursor(context.cursor)
    position = start
    due: set[str] = set()
    scanned = 0
    deadline = time.monotonic() + TICK_BUDGET_SECONDS
    while time.monotonic() < deadline:
        found, read, position = store.due_after(position, threshold, CHUNK_EVENTS)
        due.update(str(aggregate_id) for aggregate_id in found)
        scanned += read
        if read < CHUNK_EVENTS:
            break
    cursor = format_cursor(position)
    if not due:
        return dg.SensorResult(cursor=cursor, skip_reason=f"{scanned} events read, no aggregate due")
    ordered = sorted(due)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"snapshots:{format_cursor(start)}-{cursor}:{index}",
                run_config=dg.RunConfig(
                    ops={SNAPSHOTS.path[-1]: {"config": {"aggregate_ids": ordered[index : index + RUN_SIZE]}}}
                ),
                tags={"warriors/trigger": "snapshots_due"},
            )
            for index in range(0, len(ordered), RUN_SIZE)
        ],
        cursor=cursor,
    )
