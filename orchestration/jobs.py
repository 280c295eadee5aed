"""Jobs an operator launches from the Dagster UI (Jobs -> job -> Launchpad -> Launch run),
and that the sensors and schedules start."""

from uuid import UUID

import dagster as dg
from pydantic import Field

from orchestration.assets.projections import CONSISTENCY_CHECK, LAG_CHECK, PARKED_CHECK, projection_key
from orchestration.assets.snapshots import SNAPSHOTS
from orchestration.assets.statistics import DAILY_STATISTICS, STATISTICS_VIEW
from orchestration.resources import EventStoreResource, ProjectionsResource
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


class ReplayParkedConfig(dg.Config):
    projection: ProjectionName = Field(
        default=ProjectionName.WARRIORS_READ_MODEL, description="Whose parked events to replay."
    )
    event_ids: list[str] = Field(
        default=[],
        description="The parked events to replay (ids from the no_parked_events check's table);"
        " empty: all of the projection's.",
    )


@dg.op(description="Rebuild the projection with its parked events applied this time.")
def replay_parked_op(
    context: dg.OpExecutionContext, config: ReplayParkedConfig, projections: ProjectionsResource
) -> None:
    try:
        wanted = [UUID(i.strip()) for i in config.event_ids if i.strip()] or None
    except ValueError as exc:
        raise dg.Failure(f"event_ids must be event ids (UUIDs): {exc}") from None
    replayed, report = projections.replay_parked(config.projection, wanted, progress=context.log.info)
    listed = "\n".join(f"- `{e.event_id}` (position {e.position})" for e in replayed)
    context.log_event(
        dg.AssetMaterialization(
            asset_key=projection_key(config.projection),
            description=f"rebuilt with {len(replayed)} parked event(s) applied",
            metadata={
                "replayed_events": dg.MetadataValue.md(listed),
                "events_applied": dg.MetadataValue.int(report.events),
                "to_position": dg.MetadataValue.int(report.position),
                "duration_seconds": dg.MetadataValue.float(round(report.seconds, 3)),
            },
        )
    )


@dg.job(
    description="After fixing what made events fail, apply a projection's parked events (all, or"
    " those listed): the projection is rebuilt with them, without downtime. One that fails again"
    " stays parked with its new error; the live projection is untouched.",
    tags={REBUILD_TAG: "true"},
)
def replay_parked() -> None:
    replay_parked_op()


@dg.op(description="Expire old idempotency keys; keep each warrior's newest snapshots only.")
def housekeeping_op(context: dg.OpExecutionContext, store: EventStoreResource) -> None:
    keys, snapshots = store.housekeeping()
    context.log.info(f"{keys} idempotency key(s) expired, {snapshots} old snapshot(s) pruned")


@dg.job(
    description="Bounded growth: idempotency keys older than IDEMPOTENCY_KEY_HOURS are deleted, and"
    " every warrior keeps its SNAPSHOTS_KEPT newest snapshots. The events are never touched."
)
def housekeeping() -> None:
    housekeeping_op()


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
            for check in (LAG_CHECK, CONSISTENCY_CHECK, PARKED_CHECK)
        )
    ),
    description="Run the projections' lag and consistency checks (nothing is materialized).",
)
