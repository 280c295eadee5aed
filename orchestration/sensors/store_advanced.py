"""When the store's head moves, catch up the projections that are behind it.

The cursor is the last head seen; the run key is the head, so a tick evaluated twice
never starts two runs for the same head. Usually the live projector is already there
and the tick only moves the cursor."""

import dagster as dg

from orchestration.assets.projections import projection_key
from orchestration.jobs import PROJECTION_ASSETS
from orchestration.resources import EventStoreResource, ProjectionsResource
from warriors.projections.catalog import ProjectionName


@dg.sensor(
    name="store_advanced",
    asset_selection=PROJECTION_ASSETS,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="The event store's head moved: catch up the projections that lag behind it.",
)
def store_advanced(
    context: dg.SensorEvaluationContext, store: EventStoreResource, projections: ProjectionsResource
) -> dg.SensorResult | dg.SkipReason:
    head = store.head_position()
    last_seen = int(context.cursor or 0)
    if head <= last_seen:
        return dg.SkipReason(f"the head is still at {head}")
    known = {str(name) for name in ProjectionName}
    behind = [
        s.name
        for s in projections.statuses()
        if s.name in known and s.lag_events > 0 and s.status != "FAILED"
    ]
    if not behind:
        return dg.SensorResult(skip_reason=f"head {head}: every projection is there", cursor=str(head))
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"catch-up:{head}",
                asset_selection=[projection_key(ProjectionName(name)) for name in sorted(behind)],
                tags={"warriors/trigger": "store_advanced"},
            )
        ],
        cursor=str(head),
    )
