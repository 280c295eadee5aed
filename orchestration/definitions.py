"""The Dagster code location: every asset, check, job, sensor and schedule, and the
resources they use (`workspace.yaml` loads `defs` from here)."""

import dagster as dg

from orchestration.assets.event_store import event_store, upcaster_regression
from orchestration.assets.projections import build_projection_asset, build_projection_checks
from orchestration.assets.snapshots import aggregate_snapshots
from orchestration.assets.statistics import daily_warrior_statistics, warrior_statistics
from orchestration.jobs import (
    catch_up_all,
    consistency_check,
    daily_statistics,
    housekeeping,
    rebuild_projection,
    refresh_statistics,
    replay_parked,
    take_snapshots,
)
from orchestration.resources import EventStoreResource, ProjectionsResource, StatisticsResource
from orchestration.schedules import (
    daily_statistics_schedule,
    housekeeping_schedule,
    nightly_consistency_schedule,
    statistics_refresh_schedule,
)
from orchestration.sensors.lag import projection_lag
from orchestration.sensors.snapshots import snapshots_due
from orchestration.sensors.store_advanced import store_advanced
from warriors.config import get_settings
from warriors.projections.catalog import configured


def resources() -> dict[str, dg.ConfigurableResource]:  # type: ignore[type-arg]
    batch_size = get_settings().projector_batch_size
    return {
        "store": EventStoreResource(),
        "projections": ProjectionsResource(batch_size=batch_size),
        "statistics": StatisticsResource(),
    }


ASSETS: list[dg.AssetsDefinition | dg.SourceAsset] = [
    event_store,
    upcaster_regression,
    *(build_projection_asset(name) for name in configured()),
    aggregate_snapshots,
    warrior_statistics,
    daily_warrior_statistics,
]
CHECKS = [check for name in configured() for check in build_projection_checks(name)]

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[
        housekeeping,
        rebuild_projection,
        replay_parked,
        catch_up_all,
        refresh_statistics,
        daily_statistics,
        take_snapshots,
        consistency_check,
    ],
    sensors=[store_advanced, projection_lag, snapshots_due],
    schedules=[
        statistics_refresh_schedule,
        daily_statistics_schedule,
        nightly_consistency_schedule,
        housekeeping_schedule,
    ],
    resources=resources(),
)
