"""The platform as deployed (GitHub issue 11): what `make run` serves, measured whole.

`warriors run` is started in a fresh data folder (embedded PostgreSQL, migrations, the
HTTP workers, the live projector, the Dagster webserver, daemon and code server), with
--redis also a Redis of its own. It is seeded with realistic warriors (COPY into the
event store, then projected), left to settle, and measured idle; then, at --concurrency
connections (wrk, closed loop), for --seconds each:

* /health/live of the same server: the ceiling of its HTTP stack;
* creations: POST /api/v1/commands/warriors, every body different (names, dates of birth
  and skills drawn from bench/loadgen/words.json), while the projections' lag is sampled
  from PostgreSQL every 10 ms (events behind, and the age of the oldest event not yet
  applied);
* get-by-id: GET /api/v1/queries/warriors/{id} of warriors created in that run.

Baseline in the same run, before the platform starts: a trivial FastAPI app
(bench/trivial_app.py) under the same ASGI server and worker count. The table gives each
figure's ratio to /health/live (and /health/live's to the trivial app), and the CPU each
group of processes used (HTTP workers, projector, Dagster, PostgreSQL, wrk).

    make bench-deployed                     # or: .venv/bin/python -m bench.deployed --help
    make bench-deployed REDIS=1             # get-by-id served through Redis
    .venv/bin/python -m bench.deployed --profile bench/results/profiles   # py-spy too
"""

import argparse
import json
import os
import resource
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.platform import Platform, cpu_by_group, process_groups, python_processes, read_pids, tear_down
from bench.tools import RESULTS, LoadResult, bearer, lua_table, machine, require, save, write_private, wrk
from tests.dataset import created_events, words
from tests.history import copy_events
from warriors.http_server import serve_command
from warriors.servers import free_port
from warriors.servers.redis_server import RedisServer

CREATE_PATH = "/api/v1/commands/warriors"
GROUPS = ["http", "projector", "dagster", "postgres", "supervisor", "redis"]


@dataclass
class Phase:
    """One measured load: wrk's result, the CPU each group used (cores) and, for the
    creations, the projection lag sampled during it."""

    load: LoadResult
    cores: dict[str, float]
    lag: dict[str, float] = field(default_factory=dict)


def create_script(path: Path, seed: int, key: str) -> Path:
    """wrk's request(): a different warrior each time, like tests/dataset.warrior, sent
    with `key` (the file is 0600: it holds the key)."""
    w = words()

    def table(values: list[str]) -> str:
        return "{" + ",".join(json.dumps(v, ensure_ascii=False) for v in values) + "}"

    headers = lua_table({"Content-Type": "application/json", **bearer(key)})
    write_private(
        path,
        f"local first = {table(w['first_names'])}\n"
        f"local surnames = {table(w['common_surnames'])}\n"
        f"local skills = {table(w['skills'])}\n"
        "local counter = 0\n"
        f"setup = function(thread) thread:set('seed', {seed} + counter); counter = counter + 1 end\n"
        "init = function() math.randomseed(seed) end\n"
        f"local headers = {headers}\n"
        "request = function()\n"
        "  local name = first[math.random(#first)] .. ' ' .. surnames[math.random(#surnames)]\n"
        "  if math.random() < 0.3 then name = name .. ' ' .. surnames[math.random(#surnames)] end\n"
        "  local picked, chosen = {}, {}\n"
        "  for _ = 1, math.random(0, 6) do\n"
        "    local s = skills[math.random(#skills)]\n"
        "    if not chosen[s] then chosen[s] = true; picked[#picked + 1] = '\"' .. s .. '\"' end\n"
        "  end\n"
        '  local body = string.format(\'{"name":"%s","dob":"%d-%02d-%02d","fight_skills":[%s]}\',\n'
        "    name, math.random(1900, 2010), math.random(12), math.random(28), table.concat(picked, ','))\n"
        f"  return wrk.format('POST', '{CREATE_PATH}', headers, body)\n"
        "end\n",
    )
    return path


def get_script(path: Path, ids: list[str]) -> Path:
    path.write_text(
        "local ids = {" + ",".join(f'"{i}"' for i in ids) + "}\n"
        "request = function() return wrk.format('GET', '/api/v1/queries/warriors/' .. ids[math.random(#ids)]) end\n"
    )
    return path


def path_script(path: Path, url_path: str) -> Path:
    path.write_text(f"request = function() return wrk.format('GET', '{url_path}') end\n")
    return path


class LagSampler(threading.Thread):
    """Every 10 ms: each projection's distance from the store's head, in events and in
    seconds (the age of the oldest stored event it has not applied, in the store's order;
    0 when caught up). Started and stopped by hand, or as a context manager."""

    QUERY = """
        SELECT p.projection_name, (SELECT coalesce(max(position), 0) FROM event_store) - p.last_position,
               coalesce(extract(epoch FROM clock_timestamp() - (
                   SELECT e.created_at FROM event_store e
                   WHERE (e.transaction_id, e.position) > (p.last_transaction_id, p.last_position)
                   ORDER BY e.transaction_id, e.position LIMIT 1)), 0)
        FROM projection_offsets p
    """

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: dict[str, list[tuple[int, float]]] = {}
        self.stopping = threading.Event()

    def __enter__(self) -> "LagSampler":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.join()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stopping.wait(0.01):
                for name, events, seconds in conn.execute(self.QUERY):
                    self.samples.setdefault(name, []).append((int(events), float(seconds)))

    def percentile_ms(self, name: str, p: float) -> float:
        """Projection `name`'s lag at percentile `p` (0-1), in ms (0 if never sampled)."""
        ms = sorted(seconds * 1000 for _, seconds in self.samples.get(name, [])) or [0.0]
        return round(ms[int(p * (len(ms) - 1))], 1)

    def summary(self) -> dict[str, float]:
        """Per projection: lag p99 in ms and events, and the largest."""
        out: dict[str, float] = {}
        for name, samples in sorted(self.samples.items()):
            events = sorted(e for e, _ in samples)
            out[f"{name} p99 ms"] = self.percentile_ms(name, 0.99)
            out[f"{name} max ms"] = self.percentile_ms(name, 1.0)
            out[f"{name} p99 events"] = events[int(0.99 * (len(events) - 1))]
        return out


def measure(
    args: argparse.Namespace, platform: Platform, label: str, script: Path, lag_url: str | None = None
) -> Phase:
    groups = process_groups(platform.pids(), args.others)
    before = cpu_by_group(groups)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler = LagSampler(lag_url) if lag_url else None
    profilers = (
        start_profiles(Path(args.profile), platform, label, args.seconds, args.others) if args.profile else []
    )
    if sampler:
        sampler.start()
    started = time.monotonic()
    result = wrk(platform.url, args.concurrency, args.seconds, script, label)
    wall = time.monotonic() - started
    if sampler:
        sampler.stopping.set()
        sampler.join()
    for profiler in profilers:
        profiler.wait()
    after = cpu_by_group(process_groups(platform.pids(), args.others))
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = {g: round((after.get(g, 0.0) - before.get(g, 0.0)) / wall, 2) for g in GROUPS}
    wrk_cpu = (done.ru_utime - children.ru_utime) + (done.ru_stime - children.ru_stime)
    cores["wrk"] = round(wrk_cpu / wall, 2)
    return Phase(result, cores, sampler.summary() if sampler else {})


def start_profiles(
    out: Path, platform: Platform, label: str, seconds: float, others: dict[str, list[int]] | None = None
) -> list[subprocess.Popen[bytes]]:
    """py-spy on every HTTP worker and on the projector for `seconds`, one collapsed-stack
    file each (speedscope.app and flamegraph.pl draw them, grep reads them)."""
    out.mkdir(parents=True, exist_ok=True)
    groups = process_groups(platform.pids(), others)
    targets = [("http", pid) for pid in groups.get("http-worker", [])]
    targets += [("projector", pid) for pid in python_processes(groups.get("projector", []))[:1]]
    started = []
    slug = label.split(":")[-1].strip().replace(" ", "-").replace("/", "")
    for index, (name, pid) in enumerate(targets):
        folded = out / f"{slug}-{name}-{index}.folded"
        command = [require("py-spy"), "record", "--pid", str(pid), "--duration", str(int(seconds)),
                   "--rate", "250", "--nonblocking", "--format", "raw", "--output", str(folded)]  # fmt: skip
        started.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return started


def wait_dagster_quiet(platform: Platform, timeout: float) -> None:
    """Until no Dagster run is queued or running: the seed's new events start the
    sensors' catch-up runs, work that is not the standing cost measured next."""
    url = platform.postgres.url().rsplit("/", 1)[0] + "/dagster"
    active = "('QUEUED', 'NOT_STARTED', 'STARTING', 'STARTED', 'CANCELING')"
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while (row := conn.execute(f"SELECT count(*) FROM runs WHERE status IN {active}").fetchone()) and row[
            0
        ]:
            if time.monotonic() > deadline:
                raise SystemExit(f"Dagster runs were still active after {timeout:.0f}s")
            time.sleep(0.5)  # polling Dagster's run storage, bounded by the deadline


def idle_cores(args: argparse.Namespace, platform: Platform, seconds: float) -> dict[str, float]:
    groups = process_groups(platform.pids(), args.others)
    before = cpu_by_group(groups)
    time.sleep(seconds)  # measuring the idle platform's standing CPU over this window
    after = cpu_by_group(process_groups(platform.pids(), args.others))
    return {g: round((after.get(g, 0.0) - before.get(g, 0.0)) / seconds, 3) for g in GROUPS}


def trivial_baseline(args: argparse.Namespace, workdir: Path) -> LoadResult:
    port = free_port()
    log = (workdir / "trivial.log").open("wb")
    command = serve_command("bench.trivial_app:create_app", "127.0.0.1", port, args.workers)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/ping", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(
                        f"the trivial app did not start; see {workdir / 'trivial.log'}"
                    ) from None
                time.sleep(0.1)  # waiting for the server to listen, bounded by the deadline
        return wrk(
            url, args.concurrency, args.seconds, path_script(workdir / "ping.lua", "/ping"), "trivial app"
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def seed(platform: Platform, warriors: int, timeout: float) -> None:
    url = platform.postgres.url()
    print(f"seeding {warriors:,} warriors (COPY into the event store) ...", flush=True)
    copy_events(url, list(created_events(warriors, seed=7)))
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            behind = conn.execute(
                "SELECT coalesce(max((SELECT max(position) FROM event_store) - last_position), 0)"
                " FROM projection_offsets"
            ).fetchone()
            if behind is not None and behind[0] == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the projections did not catch up with the seed within {timeout:.0f}s")
            time.sleep(0.2)  # polling the projector's progress, bounded by the deadline
        conn.execute("VACUUM ANALYZE")


def created_ids(platform: Platform, count: int) -> list[str]:
    with psycopg.connect(platform.postgres.url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id::text FROM warriors_read_model ORDER BY created_at DESC LIMIT %s", (count,)
        ).fetchall()
    return [row[0] for row in rows]


def print_report(report: dict[str, Any]) -> None:
    phases: dict[str, Phase] = report["phases"]
    live = phases["health"].load.requests_per_second
    trivial = report["trivial"]
    print(f"\n{report['title']}")
    print(
        f"{'load':<34} {'req/s':>8} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}   CPU cores by group"
    )
    print(f"{trivial.label + ' (baseline)':<34} {trivial.requests_per_second:>8.0f} {'':>7} {trivial.p50_ms:>8.2f}"
          f" {trivial.p99_ms:>8.2f} {trivial.errors:>7}")  # fmt: skip
    for phase in phases.values():
        r = phase.load
        base = trivial.requests_per_second if phase is phases["health"] else live
        cores = ", ".join(f"{g} {c:.2f}" for g, c in phase.cores.items() if c >= 0.005)
        print(f"{r.label:<34} {r.requests_per_second:>8.0f} {r.requests_per_second / base:>7.2f} {r.p50_ms:>8.2f}"
              f" {r.p99_ms:>8.2f} {r.errors:>7}   {cores}")  # fmt: skip
    print("ratio: /health/live to the trivial app; the others to /health/live")
    lag = phases["create"].lag
    if lag:
        print("projection lag during the creations: " + ", ".join(f"{k} {v}" for k, v in lag.items()))
    idle = ", ".join(f"{g} {c:.3f}" for g, c in report["idle"].items() if c >= 0.0005)
    print(f"idle, {report['idle_seconds']:.0f}s after settling (cores): {idle}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=15, help="length of each load")
    parser.add_argument("--concurrency", type=int, default=64, help="wrk connections")
    parser.add_argument("--workers", type=int, default=None, help="HTTP workers (default: HTTP_WORKERS)")
    parser.add_argument("--warriors", type=int, default=50_000, help="warriors stored before measuring")
    parser.add_argument("--settle", type=float, default=30, help="seconds after start before measuring")
    parser.add_argument("--idle", type=float, default=60, help="seconds the idle platform is measured")
    parser.add_argument("--redis", action="store_true", help="with a Redis of its own (REDIS_URL)")
    parser.add_argument("--profile", default=None, help="folder for py-spy flame graphs of each load")
    parser.add_argument("--start-timeout", type=float, default=300)
    args = parser.parse_args()
    from warriors.config import get_settings  # after argparse: --help needs no settings

    args.workers = args.workers or get_settings().http_workers
    args.others = {}  # process trees measured beside the platform's: the Redis server
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = RESULTS / f"deployed-{stamp}-platform.log"
    workdir = Path(tempfile.mkdtemp(prefix="bench-deployed-"))
    redis: RedisServer | None = None
    platform: Platform | None = None
    report: dict[str, Any] = {}
    try:
        print(
            f"baseline: the trivial app, {args.workers} workers, {args.concurrency} connections ...",
            flush=True,
        )
        report["trivial"] = trivial_baseline(args, workdir)
        env = {"HTTP_WORKERS": str(args.workers)}
        if args.redis:
            redis = RedisServer(workdir / "redis", free_port())
            env["REDIS_URL"] = redis.start()
            args.others = {"redis": read_pids([redis.pid_file])}
        platform = Platform(workdir / "data", env, log)
        print(f"starting warriors run on {platform.url} (log: {log}) ...", flush=True)
        platform.wait_ready(args.start_timeout)
        if args.warriors:
            seed(platform, args.warriors, args.start_timeout)
        print(f"settling {args.settle:.0f}s, then until no Dagster run is active ...", flush=True)
        time.sleep(args.settle)  # start-up (Dagster's code loading, the seed's projection) quietens
        wait_dagster_quiet(platform, args.start_timeout)
        report["idle_seconds"] = args.idle
        report["idle"] = idle_cores(args, platform, args.idle)
        phases: dict[str, Phase] = {}
        print("load: /health/live ...", flush=True)
        phases["health"] = measure(
            args, platform, "platform: /health/live", path_script(workdir / "live.lua", "/health/live")
        )
        print("load: creations ...", flush=True)
        # The writes carry the run's own key (operator: it can write too); the reads
        # and /health/live go without, as anonymous readers do.
        script = create_script(
            workdir / "create.lua", int.from_bytes(os.urandom(3), "big"), platform.api_key()
        )
        phases["create"] = measure(
            args, platform, "platform: create warrior", script, platform.postgres.url()
        )
        ids = created_ids(platform, 20_000)
        print(f"load: get-by-id over {len(ids):,} warriors just created ...", flush=True)
        phases["get"] = measure(
            args, platform, "platform: get warrior by id", get_script(workdir / "get.lua", ids)
        )
        report["phases"] = phases
    finally:
        tear_down(platform, redis, workdir=workdir)
    mode = "with Redis" if args.redis else "PostgreSQL only"
    report["title"] = (
        f"warriors run ({mode}, uvicorn with {args.workers} HTTP workers), {args.concurrency} connections, {args.seconds}s each,"
        f" {args.warriors:,} warriors seeded; machine: {machine()}; wrk shares these cores"
    )
    print_report(report)
    payload = {**report, "args": vars(args), "phases": {k: asdict(v) for k, v in report["phases"].items()},
               "trivial": asdict(report["trivial"])}  # fmt: skip
    print(f"results saved to {save('deployed', payload)}")


if __name__ == "__main__":
    main()
