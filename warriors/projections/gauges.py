"""The projections' gauges (warriors/metrics.py) set from their statuses, when `/metrics`
is scraped."""

from warriors.metrics import FAILED, LAG_EVENTS, LAG_SECONDS, PARKED_EVENTS, RELAY_LAG_EVENTS
from warriors.projections.status import RELAY, ProjectionStatus


def set_projection_gauges(statuses: list[ProjectionStatus]) -> None:
    """The gauges from `projection_statuses` (Kafka-aware when the platform is)."""
    for status in statuses:
        if status.name == RELAY:
            RELAY_LAG_EVENTS.set(status.lag_events)
            continue
        LAG_EVENTS.labels(status.name).set(status.lag_events)
        LAG_SECONDS.labels(status.name).set(status.lag_seconds)
        PARKED_EVENTS.labels(status.name).set(status.parked_events)
        FAILED.labels(status.name).set(1 if status.status == "FAILED" else 0)
