"""Schedules (UTC): statistics refresh, the nightly daily-statistics partition, the
nightly consistency check and the hourly housekeeping."""

import dagster as dg

from orchestration.jobs import consistency_check, daily_statistics, housekeeping, refresh_statistics

statistics_refresh_schedule = dg.ScheduleDefinition(
    name="statistics_refresh",
    job=refresh_statistics,
    cron_schedule="*/10 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 10 minutes: refresh the warrior_statistics materialized view.",
)

daily_statistics_schedule = dg.build_schedule_from_partitioned_job(
    daily_statistics,
    name="daily_statistics_nightly",
    hour_of_day=0,
    minute_of_hour=15,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="00:15 UTC: compute yesterday's daily warrior statistics.",
)

nightly_consistency_schedule = dg.ScheduleDefinition(
    name="nightly_consistency_check",
    job=consistency_check,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="03:00 UTC: lag and read-model consistency checks of every projection.",
)

housekeeping_schedule = dg.ScheduleDefinition(
    name="hourly_housekeeping",
    job=housekeeping,
    cron_schedule="7 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour at :07 UTC: expire old idempotency keys, prune old snapshots.",
)
