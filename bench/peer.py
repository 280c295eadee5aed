"""The platform against another implementation of the same compat routes, on this machine,
one after the other, with the same generator and seeds (issue 24, item 3).

    make bench-peer PEER_URL=http://127.0.0.1:3000

First `warriors run` in a fresh data folder (as `make run` serves it, PostgreSQL only),
then the peer at PEER_URL (started by the user beforehand, idle meanwhile; see
docs/benchmarks.md for how the Rust peer of the tables was built and started). Each gets:

* **cost**: creations (with their Location followed) and searches at --rate each, open
  loop: the server side's CPU per answered request, that is the machine's busy CPU
  (/proc/stat) minus the generator's own (it reports it), over the answers; p50/p99 of
  each stream;
* **held rate**: --rates in turn, each creations and searches at that rate, until one
  fails: no capacity error (time-out, transport error, 5xx, a send skipped), nothing
  shed, no Location miss, p99 under 100 ms in every stream, and the count read after it
  equal to the count before plus the creations answered 2xx. A valid creation answered
  400 (the Rust peer refuses non-ASCII names) is counted apart as *refused*, not as a
  capacity failure;
* **overload**: 2x and 4x the held rate: the goodput (answers within 100 ms, per second of
  the hold) against the held step's, what was shed (503) and how fast, time-outs, the count.

The machine must be otherwise idle: the CPU is the whole machine's. The table at the end is
the one docs/benchmarks.md shows.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.mixed_load import P99_LIMIT_MS, STREAMS, read_count, wait_count
from bench.platform import Platform, cpu_by_group, machine_busy, process_groups
from bench.stream_cost import GROUPS
from bench.tools import RESULTS, machine, require, save

CAPACITY_ERRORS = ("timeout", "transport", "connection_refused", "connection_reset", "eof", "skipped")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    name: str
    url: str
    key_file: Path | None  # the platform's writes carry its key; the peer takes none
    platform: Platform | None = None  # its processes' CPU is also shown by group


def run_load(
    args: argparse.Namespace, target: Target, rate: int, seed: int, out: Path
) -> tuple[dict[str, Any], float]:
    """warriors-loadgen (compat surface) at `rate` creations and searches per second:
    (its summary, the server side's CPU seconds over the run)."""
    command = [require("warriors-loadgen"), "-base", target.url, "-surface", "compat",
               "-create-rate", str(rate), "-search-rate", str(rate), "-ramp", f"{args.ramp}s",
               "-hold", f"{args.hold}s", "-timeout", f"{args.timeout}s", "-seed", str(seed),
               "-progress", "0", "-out", str(out)]  # fmt: skip
    if target.key_file is not None:
        command += ["-key-file", str(target.key_file)]
    busy = machine_busy()[0]
    groups = process_groups(target.platform.pids()) if target.platform else {}
    before = cpu_by_group(groups)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    summary: dict[str, Any] = json.loads(out.read_text())
    after = cpu_by_group(groups)
    summary["cpu_by_group_s"] = {g: round(after[g] - before.get(g, 0.0), 2) for g in GROUPS if g in after}
    return summary, (machine_busy()[0] - busy) / _TICKS - summary["cpu_s"]


def step(args: argparse.Namespace, target: Target, rate: int, seed: int, workdir: Path) -> dict[str, Any]:
    with httpx.Client(base_url=target.url, timeout=10) as client:
        before = read_count(client, "compat")
        summary, server_cpu = run_load(args, target, rate, seed, workdir / f"{target.name}-{rate}.json")
        expected = before + summary["accepted_creations"]
        count, _ = wait_count(client, "compat", expected, args.count_timeout)
    streams = summary["streams"]
    kinds = [(kind, n) for s in STREAMS for kind, n in streams[s]["errors_by_kind"].items()]
    capacity = sum(n for kind, n in kinds if kind.startswith(CAPACITY_ERRORS) or kind.startswith("status 5"))
    refused = sum(n for kind, n in kinds if kind in ("status 400", "status 422"))
    answered = sum(streams[s]["ok"] + streams[s]["shed"] for s in STREAMS) + sum(
        n for kind, n in kinds if kind.startswith(("status", "invalid", "body", "another"))
    )
    result = {
        "rate": rate,
        "capacity_errors": capacity,
        "refused_valid": refused,
        "other_errors": sum(n for _, n in kinds) - capacity - refused,
        "misses": sum(streams[s]["location_misses"] for s in STREAMS),
        "shed": sum(streams[s]["shed"] for s in STREAMS),
        "shed_p99_ms": max(streams[s]["shed_p99_ms"] for s in STREAMS),
        "timeouts": sum(n for kind, n in kinds if kind == "timeout"),
        "p50_ms": {s: streams[s]["p50_ms"] for s in STREAMS},
        "p99_ms": {s: streams[s]["p99_ms"] for s in STREAMS},
        "goodput": sum(streams[s]["goodput_hold"] for s in STREAMS),
        "answered_per_second": answered / max(summary["duration_s"], 1e-9),
        "server_cpu_s": server_cpu,
        "ms_per_answer": 1000 * server_cpu / max(answered, 1),
        "count_exact": count == expected,
        "count_difference": None if count is None else count - expected,
        "cpu_by_group_s": summary["cpu_by_group_s"],
    }
    result["held"] = (
        capacity == 0
        and result["misses"] == 0
        and result["shed"] == 0
        and all(p < P99_LIMIT_MS for p in result["p99_ms"].values())
        and result["count_exact"]
    )
    print(f"  {target.name} {rate}/s: {describe(result)}", flush=True)
    if result["cpu_by_group_s"]:
        print(f"    CPU seconds by group: {result['cpu_by_group_s']}", flush=True)
    return result


def describe(r: dict[str, Any]) -> str:
    p99 = " / ".join(f"{r['p99_ms'][s]:.0f}" for s in STREAMS)
    count = "exact" if r["count_exact"] else f"off by {r['count_difference']}"
    return (
        f"{r['ms_per_answer']:.2f} ms CPU per answer, p99 {p99} ms, goodput {r['goodput']:.0f}/s,"
        f" capacity errors {r['capacity_errors']} (time-outs {r['timeouts']}), refused valid"
        f" {r['refused_valid']}, misses {r['misses']}, shed {r['shed']} (p99 {r['shed_p99_ms']:.0f} ms),"
        f" count {count}"
    )


def campaign(args: argparse.Namespace, target: Target, workdir: Path) -> dict[str, Any]:
    # Not measured: a server's first seconds (connections opened, caches filled; Dagster's
    # first sensor ticks) are not what it costs.
    print(
        f"{target.name} ({target.url}): warming up for {args.warmup}s at {args.rate // 2}/s ...", flush=True
    )
    warm = argparse.Namespace(**{**vars(args), "ramp": 1, "hold": args.warmup})
    run_load(warm, target, args.rate // 2, args.seed - 1, workdir / f"{target.name}-warmup.json")
    print(f"{target.name}: cost at {args.rate}/s ...", flush=True)
    report: dict[str, Any] = {"cost": step(args, target, args.rate, args.seed, workdir), "steps": []}
    held: dict[str, Any] | None = None
    for rate in args.rates:
        result = step(args, target, rate, args.seed + rate, workdir)
        report["steps"].append(result)
        if not result["held"]:
            break
        held = result
    report["held"] = held
    report["overload"] = []
    if held is not None:
        for factor in (2, 4):
            result = step(args, target, held["rate"] * factor, args.seed + factor, workdir)
            result["goodput_share"] = result["goodput"] / max(held["goodput"], 1e-9)
            report["overload"].append(result)
    return report


def print_table(args: argparse.Namespace, peer: dict[str, Any], ours: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    cost_p, cost_o = peer["cost"], ours["cost"]
    rows.append((f"server CPU per answered request, mix at {args.rate}/s each",
                 f"{cost_p['ms_per_answer']:.2f} ms", f"{cost_o['ms_per_answer']:.2f} ms"
                 f" ({cost_o['ms_per_answer'] / max(cost_p['ms_per_answer'], 1e-9):.1f}x)"))  # fmt: skip
    rows.append((f"p99 at {args.rate}/s (creations / follow-ups / searches)",
                 " / ".join(f"{cost_p['p99_ms'][s]:.0f}" for s in STREAMS) + " ms",
                 " / ".join(f"{cost_o['p99_ms'][s]:.0f}" for s in STREAMS) + " ms"))  # fmt: skip
    rows.append((f"valid creations refused (400) at {args.rate}/s", str(cost_p["refused_valid"]),
                 str(cost_o["refused_valid"])))  # fmt: skip
    rows.append(("held mix rate (each stream)", held_rate(peer), held_rate(ours)))
    for index, factor in enumerate((2, 4)):
        rows.append((f"{factor}x the held rate: goodput share, shed (p99), time-outs, count",
                     overload(peer, index), overload(ours, index)))  # fmt: skip
    print(f"\n| measure | peer ({args.peer_url}) | this platform |\n|---|---|---|")
    for measure, theirs, mine in rows:
        print(f"| {measure} | {theirs} | {mine} |")
    print(f"\nmachine: {machine()}; the generator shares these cores")


def held_rate(report: dict[str, Any]) -> str:
    return f"{report['held']['rate']}/s" if report["held"] else f"below {report['steps'][0]['rate']}/s"


def overload(report: dict[str, Any], index: int) -> str:
    if len(report["overload"]) <= index:
        return "-"
    r = report["overload"][index]
    count = "exact" if r["count_exact"] else f"off by {r['count_difference']}"
    return f"{r['goodput_share']:.0%}, {r['shed']} ({r['shed_p99_ms']:.0f} ms), {r['timeouts']}, {count}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-url", default=os.environ.get("PEER_URL"), help="the peer (PEER_URL)")
    parser.add_argument(
        "--rate", type=int, default=200, help="the cost step's creations and searches per second"
    )
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 200, 300, 400, 600])
    parser.add_argument("--ramp", type=int, default=5)
    parser.add_argument(
        "--warmup", type=int, default=15, help="seconds at half the cost rate first, not measured"
    )
    parser.add_argument("--hold", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=10, help="per-request time-out, seconds")
    parser.add_argument("--count-timeout", type=float, default=60)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the platform (e.g. ADMISSION_QUEUE=8); repeatable")  # fmt: skip
    parser.add_argument("--platform-only", action="store_true", help="measure the platform alone (no peer)")
    parser.add_argument(
        "--seed", type=int, default=24, help="the generator's seed (each step derives its own)"
    )
    args = parser.parse_args()
    if not args.peer_url and not args.platform_only:
        parser.error(
            "set PEER_URL (or --peer-url) to the peer's base URL; docs/benchmarks.md says how to start one"
        )
    if not args.platform_only:
        with httpx.Client(base_url=args.peer_url, timeout=5) as client:
            try:
                read_count(client, "compat")
            except (httpx.HTTPError, ValueError) as exc:
                parser.error(f"the peer at {args.peer_url} does not answer GET /counting-warriors: {exc}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    log = RESULTS / f"peer-{time.strftime('%Y%m%d-%H%M%S')}-platform.log"
    platform = Platform(workdir / "data", dict(item.split("=", 1) for item in args.env), log)
    try:
        print(f"starting warriors run on {platform.url} (log: {log}) ...", flush=True)
        platform.wait_ready(300)
        ours = campaign(args, Target("platform", platform.url, platform.key_file, platform), workdir)
    finally:
        print("stopping warriors run ...", flush=True)
        platform.stop()
    try:
        peer = None if args.platform_only else campaign(args, Target("peer", args.peer_url, None), workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if peer is not None:
        print_table(args, peer, ours)
    saved = save("peer", {"args": vars(args), "machine": machine(), "platform": ours, "peer": peer})
    print(f"results saved to {saved}")


if __name__ == "__main__":
    main()
