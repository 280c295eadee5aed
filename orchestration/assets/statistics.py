"""Warrior statistics for analytics users, served by `GET /api/v1/queries/statistics`.

- `warrior_statistics`: the materialized view over the read model, refreshed
  CONCURRENTLY (readers never wait); the `daily` part of the endpoint.
- `daily_warrior_statistics`: one partition per day (UTC), computed with pandas from that
  day's WarriorCreated events: creations, skill popularity, age distribution; the
  `by_day` part of the endpoint. Events never change, so a backfill is repeatable. Each
  materialization carries plots (matplotlib PNGs, warriors/analytics/charts.py) and the
  paths of the day's Parquet files (warriors/analytics/parquet.py).
"""

import dagster as dg
import pandas as pd

from orchestration.assets.event_store import EVENT_STORE
from orchestration.assets.projections import projection_key
from orchestration.resources import StatisticsResource
from warriors.projections.catalog import ProjectionName

STATISTICS_VIEW = dg.AssetKey("warrior_statistics")
DAILY_STATISTICS = dg.AssetKey("daily_warrior_statistics")

# The first day a backfill can start from; the last partition is yesterday (a day's
# partition is complete once the day is over).
DAILY_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC")


@dg.asset(
    key=STATISTICS_VIEW,
    deps=[projection_key(ProjectionName.WARRIORS_READ_MODEL)],
    group_name="statistics",
    description="The warrior_statistics materialized view (warriors created and average skills"
    " per day), refreshed CONCURRENTLY.",
)
def warrior_statistics(statistics: StatisticsResource) -> dg.MaterializeResult[None]:
    days = statistics.refresh_view()
    return dg.MaterializeResult(metadata={"days": dg.MetadataValue.int(days)})


@dg.asset(
    key=DAILY_STATISTICS,
    deps=[EVENT_STORE],
    partitions_def=DAILY_PARTITIONS,
    group_name="statistics",
    description="Per day (UTC): warriors created, skill popularity and age distribution,"
    " computed with pandas from the day's events into the daily_* tables and their Parquet"
    " dataset (ANALYTICS_DIR); plots of each in the materialization's metadata.",
)
def daily_warrior_statistics(
    context: dg.AssetExecutionContext, statistics: StatisticsResource
) -> dg.MaterializeResult[None]:
    # matplotlib takes half a second to import: only this asset's runs pay for it, not
    # every process that loads the definitions.
    from warriors.analytics import charts

    day = DAILY_PARTITIONS.time_window_for_partition_key(context.partition_key).start.date()
    computed = statistics.compute_day(day, recent_days=charts.RECENT_DAYS)
    stats = computed.stats
    context.log.info(f"{day}: {stats.warriors_created} warriors created")
    plots = charts.daily_markdown(stats, computed.recent_creations)
    parquet: dict[str, dg.RawMetadataValue] = {
        "analytics_dir": dg.MetadataValue.path(statistics.analytics_root())
    }
    for part in computed.parquet:
        parquet[f"{part.table}_parquet"] = dg.MetadataValue.path(part.path)
        parquet[f"{part.table}_rows"] = dg.MetadataValue.int(part.rows)
    return dg.MaterializeResult(
        metadata={
            "day": dg.MetadataValue.text(day.isoformat()),
            "warriors_created": dg.MetadataValue.int(stats.warriors_created),
            "avg_skills": dg.MetadataValue.float(round(stats.avg_skills or 0.0, 3)),
            **{name: dg.MetadataValue.md(text) for name, text in plots.items()},
            "preview": _table_preview(stats.skills),
            **parquet,
        }
    )


def _table_preview(skills: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({"skill": str(s), "warriors": int(n)})
            for s, n in skills.head(20).itertuples(index=False)
        ],
        schema=dg.TableSchema(columns=[dg.TableColumn("skill", "string"), dg.TableColumn("warriors", "int")]),
    )
