"""Jobs an operator launches from the Dagster UI (Jobs -> job -> Launchpad -> Launch run),
and that the sensors and schedules start."""

import dagster as dg
from pydantic import Field

from orchestration.assets.projections import CONSISTENCY_CHECK, LAG_CHECK, projection_key
from orchestration.assets.snapshots import SNAPSHOTS
from orchestration.assets.statistics import DAILY_STATISTICS, STATISTICS_VIEW
from orchestration.resources import ProjectionsResource
from warriors.projections.catalog import ProjectionName, configured

# The run queue (dagster.yaml) runs at most one run carrying this tag at a time: two
# rebuilds never overlap. The rebuild itself also refuses to start while another rebuild
# of the same projection holds its lock (a rebuild started from the CLI, say).
REBUILD_TAG = "warriors/rebuild"

# The projections this configuration runs (the cache only with REDIS_URL, say).
PROJECTION_ASSETS = dg.AssetSelection.assets(*(projection_key(name) for name in configured()))


class RebuildConfig(dg.Config):
    projection: ProjectionName = Field(
        default=ProjectionName.WARRIORS_READ_MODEL, description="The projection to rebuild."
    )


@dg.op(description="Blue/green rebuild: a shadow table from position 0, then an atomic swap.")
def rebuild_projection_op(
    context: dg.OpExecutionContext, config: RebuildConfig, projections: ProjectionsResource
) -> None:
    report = projections.rebuild(config.projection, progress=context.log.info)
    context.log_event(
        dg.AssetMaterialization(
            asset_key=projection_key(config.projection),
            description="rebuilt from position 0 and swapped in",
            metadata={
                "rebuilt": dg.MetadataValue.bool(True),
                "events_applied": dg.MetadataValue.int(report.events),
                "events_during_swap": dg.MetadataValue.int(report.events_during_swap),
                "to_position": dg.MetadataValue.int(report.position),
                "duration_seconds": dg.MetadataValue.float(round(report.seconds, 3)),
                "swap_milliseconds": dg.MetadataValue.float(round(report.swap_seconds * 1000, 1)),
            },
        )
    )


@dg.job(
    description="Rebuild a projection without downtime (default: the primary read model)."
    " The live table serves until the atomic swap; writes go on throughout.",
    tags={REBUILD_TAG: "true"},
)
def rebuild_projection() -> None:
    rebuild_projection_op()


catch_up_all = dg.define_asset_job(
    "catch_up_all",
    selection=PROJECTION_ASSETS,
    description="Catch every projection up to the head of the store, then check lag and consistency.",
)

refresh_statistics = dg.define_asset_job(
    "refresh_statistics",
    selection=dg.AssetSelection.assets(STATISTICS_VIEW),
    description="REFRESH MATERIALIZED VIEW CONCURRENTLY warrior_statistics.",
)

daily_statistics = dg.define_asset_job(
    "daily_statistics",
    selection=dg.AssetSelection.assets(DAILY_STATISTICS),
    description="Compute one day's warrior statistics (a partition); backfill ranges from the asset's page.",
)

take_snapshots = dg.define_asset_job(
    "take_snapshots",
    selection=dg.AssetSelection.assets(SNAPSHOTS),
    description="Snapshot the aggregates given in the config (the snapshot sensor fills it)"
    " or, given none, all that are due.",
)

consistency_check = dg.define_asset_job(
    "consistency_check",
    selection=dg.AssetSelection.checks(
        *(
            dg.AssetCheckKey(projection_key(name), check)
            for name in configured()
            for check in (LAG_CHECK, CONSISTENCY_CHECK)
        )
    ),
    description="Run the projections' lag and consistency checks (nothing is materialized).",
)
