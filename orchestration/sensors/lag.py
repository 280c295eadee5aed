"""A projection over its lag threshold (or FAILED): run its catch-up with its lag check,
which fails for as long as the lag stays over (one such run at a time per projection).
When it recovers, one more run of the check alone marks it passing again. The cursor
remembers which projections lag.

A projection whose checkpoint moved in the last CATCH_UP_AFTER_SECONDS is being projected
(the live projector is working through a load it is behind on): its run is the lag check
alone, which shows the lag in the UI; a catch-up beside it would only wait for the
projection's lock, holding a core's worth of process start and waiting on a machine
already short of CPU (bench/stream_cost.py saw it for store_advanced)."""

import json

import dagster as dg

from orchestration.assets.projections import lag_check_key, lag_problem, projection_key
from orchestration.jobs import PROJECTION_ASSETS
from orchestration.resources import ProjectionsResource
from orchestration.sensors.store_advanced import CATCH_UP_AFTER_SECONDS
from warriors.projections.catalog import ProjectionName, configured

LAG_RUN_TAG = "warriors/lagging-projection"
_IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _run_in_progress(instance: dg.DagsterInstance, name: ProjectionName) -> bool:
    runs = instance.get_run_records(
        filters=dg.RunsFilter(tags={LAG_RUN_TAG: str(name)}, statuses=_IN_PROGRESS), limit=1
    )
    return bool(runs)


@dg.sensor(
    name="projection_lag",
    asset_selection=PROJECTION_ASSETS,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A projection lags over LAG_THRESHOLD_EVENTS/SECONDS: catch it up and fail its lag check"
    " until it recovers.",
)
def projection_lag(context: dg.SensorEvaluationContext, projections: ProjectionsResource) -> dg.SensorResult:
    lagging_before: set[str] = set(json.loads(context.cursor or "[]"))
    statuses = {s.name: s for s in projections.statuses()}
    requests = []
    lagging_now = set()
    for name in configured():
        status = statuses.get(str(name))
        if status is None:
            continue
        if (problem := lag_problem(status)) is not None:
            lagging_now.add(str(name))
            context.log.info(f"{name}: {problem}")
            if _run_in_progress(context.instance, name):
                continue  # one catch-up at a time: runs would only queue up behind it
            catch_up = status.status != "FAILED" and status.checkpoint_age_seconds > CATCH_UP_AFTER_SECONDS
            requests.append(
                dg.RunRequest(
                    run_key=f"{'lag' if catch_up else 'lag-check'}:{name}:{status.position}",
                    asset_selection=[projection_key(name)] if catch_up else [],
                    asset_check_keys=[lag_check_key(name)],
                    tags={"warriors/trigger": "projection_lag", LAG_RUN_TAG: str(name)},
                )
            )
        elif str(name) in lagging_before:
            requests.append(
                dg.RunRequest(
                    run_key=f"lag-recovered:{name}:{status.position}",
                    asset_selection=[],
                    asset_check_keys=[lag_check_key(name)],
                    tags={"warriors/trigger": "projection_lag", LAG_RUN_TAG: str(name)},
                )
            )
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(sorted(lagging_now)),
        skip_reason=None if requests else "every projection is within its lag thresholds",
    )
