"""Mixed open-loop load against the platform as `make run` serves it (GitHub issue 10).

`warriors run` is started in a fresh data folder on free ports (embedded PostgreSQL,
migrations, the HTTP workers, the live projector and Dagster); with --services it also
gets Kafka, OpenSearch and Redis of this run's own. Then, for each step of --rates,
warriors-loadgen (bench/loadgen, Go) runs three open-loop streams at once, each ramping
linearly from 0 over --ramp and holding for --hold:

* creations: varied POSTs at RATE/s, about 1 in 10 invalid in a varied way (400/422 due);
* follow-ups: each accepted creation's Location fetched 1-30 ms later (200, same name);
* searches: RATE/s, terms in equal parts common, rare, one-letter typos, random letters.

After each step the count is compared with the creations accepted so far (exact, or the
difference). One table per step, then the highest rate held with no errors, no Location
misses, an exact count and p99 < 100 ms on every stream.

    make bench-load                  # or: .venv/bin/python -m bench.mixed_load --rates 50 100
    make bench-load SERVICES=1       # with Kafka, OpenSearch and Redis
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.platform import Platform, Services, machine_busy, read_pids, tree_cpu
from bench.tools import RESULTS, machine, require, save
from tests.dataset import created_events
from tests.history import copy_events

P99_LIMIT_MS = 100.0
STREAMS = ["creations", "locations", "searches"]  # the three streams the verdict covers
CLASSES = ["searches/common", "searches/rare", "searches/typo", "searches/random"]


def read_count(client: httpx.Client, surface: str) -> int:
    if surface == "compat":
        answer = client.get("/counting-warriors")
        answer.raise_for_status()
        return int(answer.text.strip())
    answer = client.get("/api/v1/queries/warriors/count")
    answer.raise_for_status()
    count: int = answer.json()["count"]
    return count


def wait_count(
    client: httpx.Client, surface: str, expected: int, timeout: float, stable: float = 10.0
) -> tuple[int | None, float]:
    """Poll the count until it is `expected`, the deadline passes, or it stays the same
    (but different) for `stable` seconds; returns (the last count read, seconds waited)."""
    started = time.monotonic()
    last: int | None = None
    changed = started
    while True:
        try:
            count: int | None = read_count(client, surface)
        except (httpx.HTTPError, ValueError, KeyError):
            count = None
        now = time.monotonic()
        if count != last:
            last, changed = count, now
        if count == expected or now - started > timeout or (count is not None and now - changed > stable):
            return last, now - started
        time.sleep(0.2)  # polling the projector's progress, bounded by the deadline


def seed(platform: Platform, surface: str, warriors: int, timeout: float) -> None:
    print(f"seeding {warriors:,} warriors (COPY into the event store) ...", flush=True)
    copy_events(platform.postgres.url(), list(created_events(warriors)))
    written = warriors
    with httpx.Client(base_url=platform.url, timeout=10) as client:
        count, waited = wait_count(client, surface, written, timeout + written / 2000)
    if count != written:
        sys.exit(f"the projector did not catch up with the seed: count {count}, expected {written}")
    print(f"seeded: count {count:,} after {waited:.1f}s", flush=True)


def run_step(
    args: argparse.Namespace,
    platform: Platform,
    services: Services | None,
    rate: int,
    step_seed: int,
    workdir: Path,
) -> dict[str, Any]:
    out = workdir / f"step-{rate}.json"
    with httpx.Client(base_url=platform.url, timeout=10) as client:
        count_before = read_count(client, args.surface)
        service_pids = read_pids(services.pid_files()) if services else []
        platform_cpu, postgres_cpu = tree_cpu(platform.pids()), tree_cpu(platform.pids()[1:])
        services_cpu, busy, started = tree_cpu(service_pids), machine_busy(), time.monotonic()
        subprocess.run(
            [args.loadgen, "-base", platform.url, "-surface", args.surface,
             "-create-rate", str(rate), "-search-rate", str(rate), "-ramp", f"{args.ramp}s",
             "-hold", f"{args.hold}s", "-timeout", f"{args.timeout}s", "-seed", str(step_seed),
             "-max-in-flight", str(args.max_in_flight), "-out", str(out),
             "-key-file", str(platform.key_file)],  # creations carry the run's key; reads go without
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wall = time.monotonic() - started
        roots = platform.pids()
        cpu = {
            "wall_s": round(wall, 2),
            "platform_s": round(tree_cpu(roots) - platform_cpu, 2),
            "postgres_s": round(tree_cpu(roots[1:]) - postgres_cpu, 2),
            "services_s": round(tree_cpu(service_pids) - services_cpu, 2),
        }
        busy_after = machine_busy()
        cpu["machine_busy_share"] = round((busy_after[0] - busy[0]) / max(1, busy_after[1] - busy[1]), 3)
        summary: dict[str, Any] = json.loads(out.read_text())
        cpu["generator_s"] = summary["cpu_s"]
        expected = count_before + summary["accepted_creations"]
        count, waited = wait_count(client, args.surface, expected, args.count_timeout)
    streams = summary["streams"]
    clean = all(
        streams[s]["errors"] == 0
        and streams[s]["location_misses"] == 0
        and streams[s]["p99_ms"] < P99_LIMIT_MS
        for s in STREAMS
    )
    return {
        "rate": rate,
        "seed": step_seed,
        "count_before": count_before,
        "count_expected": expected,
        "count_read": count,
        "count_exact": count == expected,
        "count_difference": None if count is None else count - expected,
        "count_wait_s": round(waited, 2),
        "cpu": cpu,
        "passed": clean and count == expected,
        "loadgen": summary,
    }


def print_step(step: dict[str, Any]) -> None:
    summary = step["loadgen"]
    streams = summary["streams"]
    rate = step["rate"]
    print(
        f"\nstep {rate}/s creations + {rate}/s searches (ramp {summary['ramp_s']:.0f}s, hold"
        f" {summary['hold_s']:.0f}s, surface {summary['surface']}, seed {step['seed']})"
    )
    print(f"{'stream':<18} {'rate/s':>7} {'ok/s hold':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>9}"
          f" {'errors':>7} {'misses':>7}")  # fmt: skip
    for name in STREAMS + CLASSES:
        s = streams[name]
        target = s["target_rate"] if name != "locations" else rate * (1 - summary["invalid_share"])
        label = name if name in STREAMS else "  " + name.split("/")[1]
        print(f"{label:<18} {target:>7.0f} {s['throughput_hold']:>10.1f} {s['p50_ms']:>8.2f}"
              f" {s['p99_ms']:>8.2f} {s['max_ms']:>9.2f} {s['errors']:>7} {s['location_misses']:>7}")  # fmt: skip
    for name in STREAMS:
        kinds = {**streams[name]["errors_by_kind"], **streams[name]["misses_by_kind"]}
        if kinds:
            print(f"  {name}: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
    exact = "yes" if step["count_exact"] else "no"
    print(
        f"count: {summary['accepted_creations']} creations accepted; expected {step['count_expected']},"
        f" read {step['count_read']}: exact {exact} (difference {step['count_difference']},"
        f" after {step['count_wait_s']:.1f}s)"
    )
    cpu = step["cpu"]
    wall = cpu["wall_s"]
    services = f", services {cpu['services_s'] / wall:.2f}" if cpu["services_s"] else ""
    print(
        f"CPU (cores, averaged over {wall:.0f}s): platform {cpu['platform_s'] / wall:.2f} (of which PostgreSQL"
        f" {cpu['postgres_s'] / wall:.2f}){services}, generator {cpu['generator_s'] / wall:.2f};"
        f" machine busy {cpu['machine_busy_share']:.0%} of {os.cpu_count()} cores"
    )
    lag = summary["send_lag"]
    print(
        f"generator: sends left p50 {lag['p50_ms']:.2f} / p99 {lag['p99_ms']:.2f} / max {lag['max_ms']:.1f} ms"
        f" after their scheduled time (included in the latencies); peak in flight {summary['peak_in_flight']}"
    )
    print(f"step {'passed' if step['passed'] else 'failed'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 300, 1000],
                        help="steps: creations/s and searches/s each")  # fmt: skip
    parser.add_argument("--ramp", type=float, default=10, help="seconds from 0 to the rate, per step")
    parser.add_argument("--hold", type=float, default=30, help="seconds the rate is held, per step")
    parser.add_argument("--timeout", type=float, default=10, help="per-request timeout, seconds")
    parser.add_argument("--surface", choices=["api", "compat"], default="api")
    parser.add_argument("--seed", type=int, default=None, help="the first step's seed (default: random)")
    parser.add_argument("--seed-warriors", type=int, default=0, help="warriors stored before the first step")
    parser.add_argument("--settle", type=float, default=10, help="seconds of quiet before each step")
    parser.add_argument("--count-timeout", type=float, default=60, help="longest wait for an exact count")
    parser.add_argument("--start-timeout", type=float, default=300, help="longest wait for readiness")
    parser.add_argument("--max-in-flight", type=int, default=5000)
    parser.add_argument("--services", action="store_true", help="with Kafka, OpenSearch and Redis")
    parser.add_argument("--loadgen", default=None, help="path of warriors-loadgen (default: .venv/bin)")
    args = parser.parse_args()
    args.loadgen = args.loadgen or require("warriors-loadgen")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big") or 1

    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / f"mixed_load-{time.strftime('%Y%m%d-%H%M%S')}-platform.log"
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    services = Services(workdir / "services") if args.services else None
    platform: Platform | None = None
    steps: list[dict[str, Any]] = []
    try:
        env = services.start() if services else {}
        platform = Platform(workdir / "data", env, log)
        print(f"starting warriors run on {platform.url} (log: {log}) ...", flush=True)
        platform.wait_ready(args.start_timeout)
        if args.seed_warriors:
            seed(platform, args.surface, args.seed_warriors, args.count_timeout)
        for i, rate in enumerate(args.rates):
            print(f"\nsettling {args.settle:.0f}s, then {rate}/s ...", flush=True)
            time.sleep(args.settle)  # let start-up (Dagster) or the previous step's tail quieten
            steps.append(run_step(args, platform, services, rate, args.seed + i, workdir))
            print_step(steps[-1])
    finally:
        if platform is not None:
            print("\nstopping warriors run ...", flush=True)
            platform.stop()
        if services is not None:
            services.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    passed = [s["rate"] for s in steps if s["passed"]]
    held = f"{max(passed)}/s" if passed else f"none of {', '.join(str(r) for r in args.rates)}/s"
    mode = "with Kafka, OpenSearch and Redis" if args.services else "PostgreSQL only"
    print(f"\nplatform: warriors run ({mode}), surface {args.surface}; machine: {machine()};"
          " the generator shares these cores")  # fmt: skip
    print(f"highest held rate with 0 errors, 0 misses, exact count and p99 < {P99_LIMIT_MS:.0f} ms on every"
          f" stream: {held}")  # fmt: skip
    path = save("mixed_load", {"machine": machine(), "args": vars(args), "mode": mode, "highest_held_rate": held,
                               "steps": steps})  # fmt: skip
    print(f"results saved to {path}")


if __name__ == "__main__":
    main()
