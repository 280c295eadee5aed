"""One asset per projection. Materializing it catches the projection up from its
checkpoint to the head of the store (alongside the live projector: both take the
projection's lock per batch, so they never apply the same events twice).

Checks on each: `lag_under_threshold` (events and seconds behind, and not FAILED),
`consistent_with_event_store` (counts, and a sample folded again from its events) and
`no_parked_events` (nothing passed over and waiting for a replay or a discard)."""

import time

import dagster as dg

from orchestration.assets.event_store import EVENT_STORE
from orchestration.resources import ProjectionsResource
from warriors.config import get_settings
from warriors.projections.catalog import ProjectionName
from warriors.projections.parked import ParkedEvent
from warriors.projections.status import ProjectionStatus

LAG_CHECK = "lag_under_threshold"
CONSISTENCY_CHECK = "consistent_with_event_store"
PARKED_CHECK = "no_parked_events"


def projection_key(name: ProjectionName) -> dg.AssetKey:
    return dg.AssetKey(str(name))


def lag_check_key(name: ProjectionName) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(projection_key(name), LAG_CHECK)


def lag_problem(status: ProjectionStatus) -> str | None:
    """Why `status` counts as lagging, or None when it does not."""
    settings = get_settings()
    if status.status == "FAILED":
        return f"FAILED: {status.last_error}"
    if status.lag_events > settings.lag_threshold_events:
        return f"{status.lag_events} events behind (threshold {settings.lag_threshold_events})"
    if status.lag_seconds > settings.lag_threshold_seconds:
        return f"{status.lag_seconds:.1f}s behind (threshold {settings.lag_threshold_seconds}s)"
    return None


def _status_metadata(status: ProjectionStatus) -> dict[str, dg.MetadataValue]:
    return {
        "position": dg.MetadataValue.int(status.position),
        "status": dg.MetadataValue.text(status.status),
        "lag_events": dg.MetadataValue.int(status.lag_events),
        "lag_seconds": dg.MetadataValue.float(round(status.lag_seconds, 3)),
    }


def build_projection_asset(name: ProjectionName) -> dg.AssetsDefinition:
    @dg.asset(
        key=projection_key(name),
        deps=[EVENT_STORE],
        group_name="projections",
        description=f"The `{name}` projection, caught up from its checkpoint to the head of the store.",
    )
    def projection(
        context: dg.AssetExecutionContext, projections: ProjectionsResource
    ) -> dg.MaterializeResult[None]:
        started = time.monotonic()
        start, end, applied = projections.catch_up(name)
        status = projections.status(name)
        if status.status == "FAILED":
            raise dg.Failure(
                f"{name} is FAILED at event {status.failed_event_id}: {status.last_error}."
                f" Fix the cause and `warriors projections retry {name}`, or park the event.",
                metadata=_status_metadata(status),
            )
        context.log.info(f"{name}: {applied} events applied, position {start.position} -> {end.position}")
        return dg.MaterializeResult(
            metadata={
                "from_position": dg.MetadataValue.int(start.position),
                "to_position": dg.MetadataValue.int(end.position),
                "events_applied": dg.MetadataValue.int(applied),
                "duration_seconds": dg.MetadataValue.float(round(time.monotonic() - started, 3)),
                "lag_events_after": dg.MetadataValue.int(status.lag_events),
                "lag_seconds_after": dg.MetadataValue.float(round(status.lag_seconds, 3)),
            },
        )

    return projection


def build_projection_checks(name: ProjectionName) -> list[dg.AssetChecksDefinition]:
    """Separate check ops, so that a sensor or the nightly job can run them alone."""

    @dg.asset_check(
        asset=projection_key(name),
        name=LAG_CHECK,
        description="Fewer events and seconds behind than LAG_THRESHOLD_EVENTS/SECONDS, and not FAILED.",
    )
    def lag(projections: ProjectionsResource) -> dg.AssetCheckResult:
        return lag_check_result(projections, name)

    @dg.asset_check(
        asset=projection_key(name),
        name=CONSISTENCY_CHECK,
        description="Row counts agree with the events, and a random sample of rows equals its"
        " warriors folded again from their events (CONSISTENCY_SAMPLE_SIZE).",
    )
    def consistency(projections: ProjectionsResource) -> dg.AssetCheckResult:
        return _consistency_result(projections, name)

    @dg.asset_check(
        asset=projection_key(name),
        name=PARKED_CHECK,
        description="No event waits parked (the sink misses its effect). The table lists them;"
        " replay them after a fix with the replay_parked job, or discard them with a reason (CLI).",
    )
    def parked(projections: ProjectionsResource) -> dg.AssetCheckResult:
        return _parked_result(projections.parked(name))

    return [lag, consistency, parked]


def _parked_result(events: list[ParkedEvent]) -> dg.AssetCheckResult:
    rows = "\n".join(
        f"| `{e.event_id}` | {e.position} | {e.event_type or '?'} | `{e.aggregate_id}` |"
        f" {e.parked_at:%Y-%m-%d %H:%M:%S} | {_cell(e.error)} |"
        for e in events[:100]
    )
    table = "| event | position | type | warrior | parked at | error |\n|---|---|---|---|---|---|\n" + rows
    return dg.AssetCheckResult(
        check_name=PARKED_CHECK,
        passed=not events,
        severity=dg.AssetCheckSeverity.WARN,  # the projection goes on; an operator must look
        description=f"{len(events)} parked event(s) waiting" if events else "none parked",
        metadata={"parked_events": dg.MetadataValue.int(len(events)), "parked": dg.MetadataValue.md(table)},
    )


def _cell(text: str) -> str:
    """Text that fits one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")[:300]


def lag_check_result(projections: ProjectionsResource, name: ProjectionName) -> dg.AssetCheckResult:
    """What the check `lag_under_threshold` of `name` evaluates: its whole body, callable
    without Dagster's invocation machinery (which makes an ephemeral instance per call:
    about 0.1 s of CPU, a third of a core for tests/test_production_faults.py's sampler)."""
    return _lag_result(projections.status(name))


def _lag_result(status: ProjectionStatus) -> dg.AssetCheckResult:
    problem = lag_problem(status)
    return dg.AssetCheckResult(
        check_name=LAG_CHECK,
        passed=problem is None,
        severity=dg.AssetCheckSeverity.ERROR,
        description=problem or "within the thresholds",
        metadata=_status_metadata(status),
    )


def _consistency_result(projections: ProjectionsResource, name: ProjectionName) -> dg.AssetCheckResult:
    report = projections.check_consistency(name, get_settings().consistency_sample_size)
    problems = ([] if report.counts_agree else [
        f"rows {report.rows}, warrior_count {report.counted}, events say {report.expected}"
        f" ({report.parked_events} parked events)"
    ]) + report.mismatches[:10]  # fmt: skip
    return dg.AssetCheckResult(
        check_name=CONSISTENCY_CHECK,
        passed=report.consistent,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems + report.notes) or "consistent",
        metadata={
            "checkpoint": dg.MetadataValue.int(report.checkpoint),
            "rows": dg.MetadataValue.int(report.rows),
            "expected_rows": dg.MetadataValue.int(report.expected),
            "warrior_count": dg.MetadataValue.int(report.counted),
            "sampled": dg.MetadataValue.int(report.sampled),
            "mismatches": dg.MetadataValue.int(len(report.mismatches)),
            "parked_events": dg.MetadataValue.int(report.parked_events),
        },
    )
