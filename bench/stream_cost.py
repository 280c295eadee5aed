"""What each stream of the mixed load costs, in CPU per request, as `make run` serves it
(issues 10 and 11: where the 2 cores go at the rates of the stress test).

`warriors run` is started in a fresh data folder (as bench/mixed_load.py does), seeded
with --seed-warriors, and then one open-loop stream at a time runs at --rate for --hold
seconds after a ramp, the others idle:

* live (the baseline): `GET /health/live` (vegeta): the HTTP stack's own cost per request
  at the same rate, a constant answer with no database;
* creations: warriors-loadgen's creations (varied, 1 in 10 invalid) with their Location
  followed 1-30 ms later, while the projection's lag is sampled from PostgreSQL;
* searches: warriors-loadgen's searches, the four term classes in equal parts.

For each: throughput, p50/p99, errors, the cores each group of processes used during the
hold (HTTP workers, projector, PostgreSQL, Dagster, the generator), and the CPU per ok
request in ms of the processes that serve requests (HTTP workers, projector, PostgreSQL;
Dagster's sensors and schedules run whatever the load and are shown apart), with its
ratio to the baseline's. The last line turns the measured costs
into the cores the stress test's full rate (--target creations/s, their follow-ups and as
many searches) would need here, against the cores the machine has: arithmetic on this
run's figures, not a measurement of that rate (bench/mixed_load.py measures it).

    make bench-stream-cost          # or: .venv/bin/python -m bench.stream_cost --rate 200
    .venv/bin/python -m bench.stream_cost --profile bench/results/profiles   # py-spy too (it costs CPU:
                                                                             # a profiled run's figures are not the headline)
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.deployed import LagSampler, start_profiles, wait_dagster_quiet
from bench.mixed_load import seed
from bench.platform import Platform, cpu_by_group, process_groups, tree_cpu
from bench.tools import RESULTS, machine, require, save
from warriors.projections.read_model import READ_MODEL

GROUPS = ["http", "projector", "postgres", "dagster"]
# The processes that serve the requests: the CPU per request is theirs. Dagster's sensors
# and schedules run whatever the load (a scheduled run may land in one stream's window):
# its cores are shown apart.
SERVING = ["http", "projector", "postgres"]
SENSOR_TICK_SECONDS = 30  # orchestration/sensors: the store and lag sensors' interval


def live_generator(platform: Platform, rate: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """vegeta at `rate` GETs of /health/live for `seconds`, its results into `out`."""
    attack = subprocess.Popen(
        [require("vegeta"), "attack", f"-rate={rate}", f"-duration={seconds:.0f}s", "-max-workers=512",
         f"-output={out}"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert attack.stdin is not None
    attack.stdin.write(f"GET {platform.url}/health/live\n".encode())
    attack.stdin.close()
    return attack


def live_summary(out: Path) -> dict[str, Any]:
    report = json.loads(
        subprocess.run(
            [require("vegeta"), "report", "-type=json", str(out)], capture_output=True, check=True
        ).stdout
    )
    return {
        "ok_per_second": report["throughput"],
        "p50_ms": report["latencies"]["50th"] / 1e6,
        "p99_ms": report["latencies"]["99th"] / 1e6,
        "errors": report["requests"] - report["status_codes"].get("200", 0),
        "requests": report["requests"],
    }


def loadgen(
    args: argparse.Namespace, platform: Platform, create: int, search: int, out: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [require("warriors-loadgen"), "-base", platform.url, "-create-rate", str(create),
         "-search-rate", str(search), "-ramp", f"{args.ramp:.0f}s", "-hold", f"{args.hold:.0f}s",
         "-key-file", str(platform.key_file), "-progress", "0", "-seed", str(args.seed), "-out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def loadgen_summary(out: Path, streams: list[str]) -> dict[str, Any]:
    summary = json.loads(out.read_text())["streams"]
    measured = [summary[s] for s in streams]
    return {
        "ok_per_second": sum(s["throughput_hold"] for s in measured),
        "p50_ms": max(s["p50_ms"] for s in measured),
        "p99_ms": max(s["p99_ms"] for s in measured),
        "errors": sum(s["errors"] for s in measured) + sum(s["location_misses"] for s in measured),
        "per_stream": {name: summary[name] for name in streams},
    }


def run_stream(args: argparse.Namespace, platform: Platform, name: str, workdir: Path) -> dict[str, Any]:
    time.sleep(args.settle)  # the previous stream's tail, Dagster's ticks after it
    out = workdir / f"{name}.out"
    groups = process_groups(platform.pids())
    if name == "live":
        generator = live_generator(platform, args.rate, args.ramp + args.hold, out)
    else:
        generator = loadgen(args, platform, args.rate if name == "creations" else 0,
                            args.rate if name == "searches" else 0, out)  # fmt: skip
    # Measured over the hold, but for its last 2 s: the generator must still be there to
    # be measured (it exits at the hold's end).
    time.sleep(args.ramp)
    profilers = start_profiles(Path(args.profile), platform, name, args.hold - 2) if args.profile else []
    before, generator_before, started = cpu_by_group(groups), tree_cpu([generator.pid]), time.monotonic()
    with LagSampler(platform.postgres.url()) as lag:
        while generator.poll() is None and time.monotonic() - started < args.hold - 2:
            time.sleep(0.1)  # until the measured window is over, bounded
        after, generator_after, seconds = (
            cpu_by_group(groups),
            tree_cpu([generator.pid]),
            time.monotonic() - started,
        )
    generator.wait()
    for profiler in profilers:
        profiler.wait()
    cores = {g: (after.get(g, 0.0) - before.get(g, 0.0)) / seconds for g in GROUPS}
    cores["generator"] = (generator_after - generator_before) / seconds
    if name == "live":
        result = live_summary(out)
    else:
        result = loadgen_summary(out, ["creations", "locations"] if name == "creations" else ["searches"])
    platform_cores = sum(cores[g] for g in SERVING)
    return {
        "stream": name,
        **result,
        "cores": cores,
        "platform_cores": platform_cores,
        "ms_per_request": 1000 * platform_cores / max(result["ok_per_second"], 1e-9),
        "lag_p50_ms": lag.percentile_ms(READ_MODEL, 0.5),
        "lag_p99_ms": lag.percentile_ms(READ_MODEL, 0.99),
    }


def print_results(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    base = results[0]["ms_per_request"]
    print(
        f"\nrate {args.rate}/s per stream, one stream at a time, {args.hold:.0f}s held; cores during the hold"
    )
    print(f"{'stream':<10} {'ok/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
          + " ".join(f"{g:>9}" for g in [*GROUPS, "generator"])
          + f" {'ms/req':>7} {'x live':>7} {'lag p99':>8}")  # fmt: skip
    for r in results:
        print(f"{r['stream']:<10} {r['ok_per_second']:>7.1f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.1f} {r['errors']:>6} "
              + " ".join(f"{r['cores'][g]:>9.3f}" for g in [*GROUPS, "generator"])
              + f" {r['ms_per_request']:>7.2f} {r['ms_per_request'] / base:>7.1f} {r['lag_p99_ms']:>7.0f}ms")  # fmt: skip
    by_name = {r["stream"]: r for r in results}
    creations, searches = by_name["creations"], by_name["searches"]
    # Cores per creation (with its follow-up) and per search, from their streams' own figures.
    per_creation = creations["platform_cores"] / max(
        creations["per_stream"]["creations"]["throughput_hold"], 1e-9
    )
    per_search = searches["platform_cores"] / max(searches["ok_per_second"], 1e-9)
    needed = args.target * (per_creation + per_search)
    print(f"\nthe stress test's {args.target}/s of creations (with their follow-ups) and {args.target}/s of searches"
          f" at these costs: {needed:.1f} cores of CPU for the HTTP workers, the projector and PostgreSQL ({per_creation * 1000:.2f} ms a creation with its"
          f" follow-up, {per_search * 1000:.2f} ms a search), before the generator; this machine has"
          f" {os.cpu_count()}")  # fmt: skip
    print(f"machine: {machine()}; the generator shares these cores")


def measure(args: argparse.Namespace, env: dict[str, str]) -> list[dict[str, Any]]:
    """The three streams against a fresh `warriors run` with `env` as its settings."""
    log = RESULTS / f"stream_cost-{time.strftime('%Y%m%d-%H%M%S')}-platform.log"
    workdir = Path(tempfile.mkdtemp(prefix="bench-stream-cost-"))
    platform = Platform(workdir / "data", env, log)
    try:
        print(f"starting warriors run on {platform.url} ({env or 'defaults'}; log: {log}) ...", flush=True)
        platform.wait_ready(300)
        if args.seed_warriors:
            seed(platform, "api", args.seed_warriors, 120)
        # The seed's events start the sensors' catch-up and lag-check runs at their next
        # tick (every 30 s): work that is not the streams'. One tick, then until no run is active.
        time.sleep(SENSOR_TICK_SECONDS + 5)
        wait_dagster_quiet(platform, 300)
        results = []
        for name in ("live", "creations", "searches"):
            print(f"{name} at {args.rate}/s ...", flush=True)
            results.append(run_stream(args, platform, name, workdir))
        return results
    finally:
        print("stopping warriors run ...", flush=True)
        platform.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def print_comparison(results: list[dict[str, Any]], baseline: list[dict[str, Any]], label: str) -> None:
    print(f"\nCPU per ok request, the defaults against {label} (same run, one after the other):")
    for ours, theirs in zip(results, baseline, strict=True):
        print(f"  {ours['stream']:<10} {ours['ms_per_request']:>6.2f} ms against {theirs['ms_per_request']:>6.2f} ms:"
              f" {ours['ms_per_request'] / max(theirs['ms_per_request'], 1e-9):.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", type=int, default=200, help="requests (live), creations or searches per second"
    )
    parser.add_argument("--ramp", type=float, default=5)
    parser.add_argument("--hold", type=float, default=30, help="seconds held (measured: all but the last 2)")
    parser.add_argument("--settle", type=float, default=10)
    parser.add_argument("--seed-warriors", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=1, help="the generator's payload and term choices")
    parser.add_argument(
        "--profile",
        default=None,
        help="folder for py-spy stacks of every HTTP worker and the projector per stream",
    )
    parser.add_argument("--baseline-env", action="append", default=[], metavar="NAME=VALUE",
                        help="then measure again on a fresh platform with this setting (repeatable): the"
                             " baseline, in the same run (e.g. INLINE_READ_MODEL=false)")  # fmt: skip
    parser.add_argument("--target", type=int, default=1000, help="the stress test's rate, for the last line")
    args = parser.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    results = measure(args, {})
    print_results(args, results)
    saved: dict[str, Any] = {"args": vars(args), "machine": machine(), "results": results}
    if args.baseline_env:
        label = ", ".join(args.baseline_env)
        baseline = measure(args, dict(item.split("=", 1) for item in args.baseline_env))
        print(f"\nbaseline: {label}")
        print_results(args, baseline)
        print_comparison(results, baseline, label)
        saved["baseline"] = baseline
    print(f"results saved to {save('stream_cost', saved)}")


if __name__ == "__main__":
    main()
