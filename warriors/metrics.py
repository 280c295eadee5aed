"""The platform's own Prometheus metrics (beside the HTTP ones in api/common/middleware.py),
defined in one place. Counters and histograms are updated where things happen (the
projector, a Dagster run, an HTTP worker); with PROMETHEUS_MULTIPROC_DIR set (`warriors
run` sets it for every process it starts) each process writes its own file and `/metrics`
adds them up. The lag and parked gauges are read from PostgreSQL each time `/metrics` is
scraped (`warriors/projections/gauges.py`), so they are live facts, whichever process is
up. Instruments only: this module imports nothing of the platform's, so that the event
store and the projections' engine can count without reaching the projections' status.
"""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_APPLIED = Counter(
    "warriors_projection_events_applied",
    "Events a projection applied (live projector, Kafka consumer, catch-up run or rebuild)",
    ["projection"],
)
APPEND_BATCH_SIZE = Histogram(
    "warriors_append_batch_size",
    "Commands written by one group-commit INSERT",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
REBUILD_SECONDS = Histogram(
    "warriors_rebuild_duration_seconds",
    "Time a rebuild took, from the start to the swap (or the replay's end)",
    ["projection"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
# Read at scrape time; "mostrecent": the value the last scrape wrote, whichever worker.
LAG_EVENTS = Gauge(
    "warriors_projection_lag_events", "Events a projection has not applied yet", ["projection"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
LAG_SECONDS = Gauge(
    "warriors_projection_lag_seconds", "Age of the oldest event a projection has not applied", ["projection"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
PARKED_EVENTS = Gauge(
    "warriors_parked_events", "Parked events waiting for a replay or a discard", ["projection"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
FAILED = Gauge(
    "warriors_projection_failed", "1 while a projection is FAILED (stopped at an event)", ["projection"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
RELAY_LAG_EVENTS = Gauge(
    "warriors_relay_lag_events", "Stored events the relay has not published to Kafka yet",
    multiprocess_mode="mostrecent",
)  # fmt: skip
