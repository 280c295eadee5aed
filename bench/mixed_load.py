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
difference). One table per step, then the highest rate held with no errors, nothing shed,
no Location misses, an exact count and p99 < 100 ms on every stream.

Then the overload steps (--overload, default 1.5 2 4): the held rate times each factor,
to see what happens past capacity (issue 24). A 503 (admission control shedding) is not
an error there but its own column, with its latency; the goodput is what was answered
well within 100 ms per second of the hold. An overload step passes when its goodput is
at least 90% of the held step's, every shed answer came with Retry-After in under 10 ms
(p99), nothing timed out, and the count is exact.

    make bench-load                  # or: .venv/bin/python -m bench.mixed_load --rates 50 100
    make bench-load SERVICES=1       # with Kafka, OpenSearch and Redis
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.platform import Platform, Services, machine_busy, read_pids, tear_down, tree_cpu
from bench.tools import RESULTS, machine, require, save
from tests.dataset import created_events
from tests.history import copy_events

P99_LIMIT_MS = 100.0
SHED_P99_LIMIT_MS = 10.0
GOODPUT_SHARE = 0.9
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
        and streams[s]["shed"] == 0
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
        "goodput": round(sum(streams[s]["goodput_hold"] for s in STREAMS), 1),
        "loadgen": summary,
    }


def judge_overload(step: dict[str, Any], held: dict[str, Any]) -> None:
    """An overload step's verdict, next to the held step's goodput (issue 24)."""
    streams = step["loadgen"]["streams"]
    shed = [streams[s] for s in STREAMS if streams[s]["shed"]]
    step["timeouts"] = sum(streams[s]["errors_by_kind"].get("timeout", 0) for s in STREAMS)
    step["shed"] = sum(streams[s]["shed"] for s in STREAMS)
    step["shed_p99_ms"] = max((s["shed_p99_ms"] for s in shed), default=0.0)
    step["shed_without_retry_after"] = sum(s["shed_without_retry_after"] for s in shed)
    step["goodput_share"] = round(step["goodput"] / held["goodput"], 3) if held["goodput"] else 0.0
    step["passed"] = (
        step["goodput_share"] >= GOODPUT_SHARE
        and step["shed_p99_ms"] < SHED_P99_LIMIT_MS
        and step["shed_without_retry_after"] == 0
        and step["timeouts"] == 0
        and step["count_exact"]
    )
    print(
        f"overload {step['rate']}/s: goodput {step['goodput']:.0f}/s = {step['goodput_share']:.0%} of the held"
        f" step's {held['goodput']:.0f}/s; shed {step['shed']} (p99 {step['shed_p99_ms']:.1f} ms,"
        f" {step['shed_without_retry_after']} without Retry-After); time-outs {step['timeouts']};"
        f" count exact {'yes' if step['count_exact'] else 'no'}: {'passed' if step['passed'] else 'failed'}",
        flush=True,
    )


def print_step(step: dict[str, Any]) -> None:
    summary = step["loadgen"]
    streams = summary["streams"]
    rate = step["rate"]
    print(
        f"\nstep {rate}/s creations + {rate}/s searches (ramp {summary['ramp_s']:.0f}s, hold"
        f" {summary['hold_s']:.0f}s, surface {summary['surface']}, seed {step['seed']})"
    )
    print(f"{'stream':<18} {'rate/s':>7} {'ok/s hold':>10} {'good/s':>7} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'max ms':>9} {'errors':>7} {'misses':>7} {'shed':>6} {'shed p99':>9}")  # fmt: skip
    for name in STREAMS + CLASSES:
        s = streams[name]
        target = s["target_rate"] if name != "locations" else rate * (1 - summary["invalid_share"])
        label = name if name in STREAMS else "  " + name.split("/")[1]
        print(f"{label:<18} {target:>7.0f} {s['throughput_hold']:>10.1f} {s['goodput_hold']:>7.1f}"
              f" {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['max_ms']:>9.2f} {s['errors']:>7}"
              f" {s['location_misses']:>7} {s['shed']:>6} {s['shed_p99_ms']:>9.2f}")  # fmt: skip
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


# Bounds no load reaches: admission control off, as before issue 24.
UNBOUNDED = {"ADMISSION_READS_IN_FLIGHT": "1000000", "ADMISSION_WRITES_IN_FLIGHT": "1000000"}


def campaign(
    args: argparse.Namespace,
    label: str,
    env: dict[str, str],
    rates: list[int],
    *,
    overload_after: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A fresh `warriors run` (and services): the steps at `rates`, then (with
    `overload_after`) the overload steps from the highest rate held. Returns both lists."""
    log = RESULTS / f"mixed_load-{time.strftime('%Y%m%d-%H%M%S')}-platform.log"
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    services = Services(workdir / "services") if args.services else None
    platform: Platform | None = None
    steps: list[dict[str, Any]] = []
    overload: list[dict[str, Any]] = []
    print(f"\n=== {label} ===", flush=True)
    try:
        platform_env = {**(services.start() if services else {}), **env}
        platform = Platform(workdir / "data", platform_env, log)
        print(f"starting warriors run on {platform.url} (log: {log}) ...", flush=True)
        platform.wait_ready(args.start_timeout)
        if args.seed_warriors:
            seed(platform, args.surface, args.seed_warriors, args.count_timeout)
        for i, rate in enumerate(rates):
            print(f"\nsettling {args.settle:.0f}s, then {rate}/s ...", flush=True)
            time.sleep(args.settle)  # let start-up (Dagster) or the previous step's tail quieten
            steps.append(run_step(args, platform, services, rate, args.seed + i, workdir))
            print_step(steps[-1])
        held_steps = [s for s in steps if s["passed"]]
        if overload_after and args.overload and held_steps:
            held_step = max(held_steps, key=lambda s: s["rate"])
            for j, factor in enumerate(args.overload):
                rate = round(held_step["rate"] * factor)
                print(
                    f"\nsettling {args.settle:.0f}s, then {rate}/s ({factor}x the held rate) ...", flush=True
                )
                time.sleep(args.settle)
                step = run_step(args, platform, services, rate, args.seed + len(rates) + j, workdir)
                step["overload_factor"] = factor
                print_step(step)
                judge_overload(step, held_step)
                overload.append(step)
    finally:
        tear_down(platform, services, workdir=workdir)
    return steps, overload


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
    parser.add_argument("--overload", type=float, nargs="*", default=[1.5, 2, 4],
                        help="factors of the highest held rate to run after the steps (none: skip)")  # fmt: skip
    parser.add_argument("--compare-unbounded", action=argparse.BooleanOptionalAction, default=True,
                        help="then the held rate and the overload rates again with admission control off")  # fmt: skip
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the platform (e.g. ADMISSION_QUEUE=8); repeatable")  # fmt: skip
    parser.add_argument("--services", action="store_true", help="with Kafka, OpenSearch and Redis")
    parser.add_argument("--loadgen", default=None, help="path of warriors-loadgen (default: .venv/bin)")
    args = parser.parse_args()
    args.loadgen = args.loadgen or require("warriors-loadgen")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big") or 1

    RESULTS.mkdir(parents=True, exist_ok=True)
    settings = dict(item.split("=", 1) for item in args.env)
    label = f"admission control on ({', '.join(args.env) or 'the defaults'})"
    steps, overload = campaign(args, label, settings, args.rates)
    held_steps = [s for s in steps if s["passed"]]
    unbounded: list[dict[str, Any]] = []
    if args.compare_unbounded and held_steps and overload:
        # The baseline of the overload steps, in the same run: the platform as it was
        # before admission control (every request admitted), at the same rates.
        held_rate = max(s["rate"] for s in held_steps)
        unbounded_steps, _ = campaign(
            args, "admission control off (every request admitted)", UNBOUNDED,
            [held_rate, *(s["rate"] for s in overload)], overload_after=False,
        )  # fmt: skip
        reference = unbounded_steps[0]
        for step in unbounded_steps[1:]:
            judge_overload(step, reference)
            unbounded.append(step)

    passed = [s["rate"] for s in steps if s["passed"]]
    held = f"{max(passed)}/s" if passed else f"none of {', '.join(str(r) for r in args.rates)}/s"
    mode = "with Kafka, OpenSearch and Redis" if args.services else "PostgreSQL only"
    print(f"\nplatform: warriors run ({mode}), surface {args.surface}; machine: {machine()};"
          " the generator shares these cores")  # fmt: skip
    print(f"highest held rate with 0 errors, 0 misses, exact count and p99 < {P99_LIMIT_MS:.0f} ms on every"
          f" stream: {held}")  # fmt: skip
    baselines: list[dict[str, Any] | None] = [*unbounded] if unbounded else [None] * len(overload)
    for step, baseline in zip(overload, baselines, strict=True):
        versus = ""
        if baseline is not None:
            versus = (f"; without admission control {baseline['goodput']:.0f}/s = {baseline['goodput_share']:.0%},"
                      f" time-outs {baseline['timeouts']}: ratio {step['goodput'] / max(baseline['goodput'], 1):.2f}x")  # fmt: skip
        print(f"overload {step['overload_factor']}x ({step['rate']}/s): goodput {step['goodput']:.0f}/s ="
              f" {step['goodput_share']:.0%} of the held step's, shed p99 {step['shed_p99_ms']:.1f} ms,"
              f" time-outs {step['timeouts']}: {'passed' if step['passed'] else 'failed'}{versus}")  # fmt: skip
    path = save("mixed_load", {"machine": machine(), "args": vars(args), "mode": mode, "highest_held_rate": held,
                               "steps": steps, "overload": overload, "unbounded": unbounded})  # fmt: skip
    print(f"results saved to {path}")


if __name__ == "__main__":
    main()
