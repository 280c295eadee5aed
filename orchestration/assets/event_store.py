"""The event store, as an observable source asset: Dagster does not produce it (the
command API does); observing it records its head, counts and append rate, and its data
version is the head position, so downstream assets show as stale when the store moves."""

import warnings

import dagster as dg

from orchestration.resources import EventStoreResource
from warriors.eventstore.observation import StoreObservation

EVENT_STORE = dg.AssetKey("event_store")

# observable_source_asset is marked beta; its warning would repeat in every process's log.
warnings.filterwarnings("ignore", message=".*observable_source_asset.*", category=dg.BetaWarning)


@dg.observable_source_asset(
    key=EVENT_STORE,
    group_name="event_store",
    description="The append-only PostgreSQL event store, the source of truth (observed, not produced).",
)
def event_store(store: EventStoreResource) -> dg.ObserveResult:
    seen = store.observe()
    return dg.ObserveResult(
        data_version=dg.DataVersion(str(seen.head_position)), metadata=observation_metadata(seen)
    )


def observation_metadata(seen: StoreObservation) -> dict[str, dg.MetadataValue]:
    """What an observation of the store records (the asset, and the store_advanced sensor)."""
    by_type = "\n".join(f"| {kind} | {count:,} |" for kind, count in seen.events_by_type.items())
    return {
        "head_position": dg.MetadataValue.int(seen.head_position),
        "events": dg.MetadataValue.int(seen.events),
        "counts_exact": dg.MetadataValue.bool(seen.exact),
        "appends_per_second": dg.MetadataValue.float(round(seen.appends_per_second, 2)),
        "events_by_type": dg.MetadataValue.md(f"| event type | events |\n|---|---|\n{by_type}"),
    }


UPCASTER_REGRESSION = dg.AssetKey("upcaster_regression")
EVERY_VERSION_READS = "every_stored_version_reads"


@dg.asset(
    key=UPCASTER_REGRESSION,
    deps=[EVENT_STORE],
    group_name="event_store",
    description="Every (event type, schema version) the store holds, read by the current code: a"
    " sample of each upcast and parsed, their warriors folded from their whole history. Rebuilds"
    " refuse to start while it fails.",
    check_specs=[
        dg.AssetCheckSpec(
            EVERY_VERSION_READS,
            asset=UPCASTER_REGRESSION,
            blocking=True,
            description="No sampled event fails its upcasters or its warrior's fold (blocks the"
            " assets downstream in the same run; rebuilds check it themselves).",
        )
    ],
)
def upcaster_regression(store: EventStoreResource) -> dg.MaterializeResult:  # type: ignore[type-arg]  # Dagster reads it
    report = store.upcaster_regression()
    rows = "\n".join(f"| {pair} | {count:,} |" for pair, count in report.versions.items())
    versions = f"| event type and schema version | events |\n|---|---|\n{rows}"
    return dg.MaterializeResult(
        metadata={
            "versions": dg.MetadataValue.md(
                f"| event type and schema version | events |\n|---|---|\n{versions}"
            ),
            "sampled_events": dg.MetadataValue.int(report.sampled),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=EVERY_VERSION_READS,
                passed=report.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description="; ".join(report.failures[:10]) or "every stored version reads",
                metadata={"failures": dg.MetadataValue.int(len(report.failures))},
            )
        ],
    )
