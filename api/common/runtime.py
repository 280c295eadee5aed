"""Process-level tuning applied once a service has started."""

import gc

# gen0 threshold: CPython's default (700) runs a collection every few requests; its
# pauses were the write path's tail (p99 66 ms -> 22 ms at 64 clients, see
# docs/benchmarks.md). Cycles are still collected, only less often.
GC_THRESHOLDS = (50_000, 50, 1_000)


def tune_garbage_collector() -> None:
    """Move everything alive after start-up (modules, app, pools) out of the collector's
    sight and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
