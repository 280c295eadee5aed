"""Aggregate snapshots: loading a warrior reads its latest snapshot and only the events
after it. A materialization snapshots the aggregates it is given (the snapshot sensor
passes those it found due), or, given none, sweeps every aggregate in chunks."""

from uuid import UUID

import dagster as dg
from pydantic import Field

from orchestration.assets.event_store import EVENT_STORE
from orchestration.resources import EventStoreResource
from warriors.config import get_settings

SNAPSHOTS = dg.AssetKey("aggregate_snapshots")
_SWEEP_CHUNK = 5000


class SnapshotConfig(dg.Config):
    aggregate_ids: list[str] = Field(
        default_factory=list, description="Aggregates to snapshot; empty: every aggregate that is due."
    )


@dg.asset(
    key=SNAPSHOTS,
    deps=[EVENT_STORE],
    group_name="snapshots",
    description="Snapshots of aggregates with SNAPSHOT_EVERY_EVENTS or more events since their last one.",
)
def aggregate_snapshots(
    context: dg.AssetExecutionContext, config: SnapshotConfig, store: EventStoreResource
) -> dg.MaterializeResult[None]:
    threshold = get_settings().snapshot_every_events
    if config.aggregate_ids:
        taken = store.snapshot([UUID(raw) for raw in config.aggregate_ids])
        scanned = len(config.aggregate_ids)
    else:
        taken = scanned = 0
        after: UUID | None = None
        while True:
            due, after = store.due_by_id(after, threshold, _SWEEP_CHUNK)
            taken += store.snapshot(due)
            scanned += _SWEEP_CHUNK if after else 0
            context.log.info(f"swept to {after or 'the end'}: {taken} snapshots so far")
            if after is None:
                break
    return dg.MaterializeResult(
        metadata={
            "snapshots_taken": dg.MetadataValue.int(taken),
            "aggregates_given": dg.MetadataValue.int(len(config.aggregate_ids)),
            "threshold_events": dg.MetadataValue.int(threshold),
        }
    )
