"""When the store's head moves, catch up the projections that are behind it.

The cursor is the last head seen; the run key is the head, so a tick evaluated twice
never starts two runs for the same head. The live projector applies events within
milliseconds, so a projection only counts as behind when its oldest unapplied event is
older than CATCH_UP_AFTER_SECONDS and its checkpoint has not moved for as long (nobody is
projecting it: the live projector is down, say). Otherwise the tick only moves the
cursor, and no run is started for events the live projector is applying anyway: after a
bulk load, or under a load it is behind on but working through, a catch-up run would
only wait for the projection's lock in a process of its own (a few seconds of a core to
start), on a machine already short of CPU. (Fed from Kafka, a projection's checkpoint row
does not move: there the age of its oldest unapplied event decides alone, as before.)"""

import dagster as dg

from orchestration.assets.event_store import EVENT_STORE, observation_metadata
from orchestration.assets.projections import lag_check_key, projection_key
from orchestration.jobs import PROJECTION_ASSETS
from orchestration.resources import EventStoreResource, ProjectionsResource
from warriors.projections.catalog import ProjectionName, configured

CATCH_UP_AFTER_SECONDS = 5.0


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
    seen = store.observe()
    head = seen.head_position
    last_seen = int(context.cursor or 0)
    if head <= last_seen:
        return dg.SkipReason(f"the head is still at {head}")
    # The store's state goes on the event_store asset's timeline at each move of the head.
    observation = dg.AssetObservation(
        asset_key=EVENT_STORE,
        metadata=observation_metadata(seen),
        tags={"dagster/data_version": str(head)},  # as the asset's own observation sets it
    )
    known = {str(name) for name in configured()}
    behind = [
        s.name
        for s in projections.statuses()
        if s.name in known
        and s.status != "FAILED"
        and s.lag_seconds > CATCH_UP_AFTER_SECONDS
        and s.checkpoint_age_seconds > CATCH_UP_AFTER_SECONDS
    ]
    if not behind:
        return dg.SensorResult(
            skip_reason=f"head {head}: every projection is there",
            cursor=str(head),
            asset_events=[observation],
        )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"catch-up:{head}",
                asset_selection=[projection_key(ProjectionName(name)) for name in sorted(behind)],
                # The lag check only: the consistency check is a full read, kept for the
                # nightly job and for runs an operator starts.
                asset_check_keys=[lag_check_key(ProjectionName(name)) for name in sorted(behind)],
                tags={"warriors/trigger": "store_advanced"},
            )
        ],
        cursor=str(head),
        asset_events=[observation],
    )
