"""Write-path benchmark: creating warriors over HTTP, against two baselines in the same run.

* platform: POST /api/v1/commands/warriors through the real command service (uvicorn,
  the same worker count as `make run`), each request a durable append to the event store;
* baseline (a), raw PostgreSQL: pgbench inserting the same event rows, one durable
  single-row transaction each, at the same concurrency;
* baseline (b), framework ceiling: the same ASGI server and worker count answering a
  trivial JSON endpoint that reads the same body (bench/trivial_app.py).

Closed-loop load (wrk) at 16 and 64 connections, then an open-loop fixed rate (vegeta,
1,000 creations/s by default) for the sustained-rate target. The load generator shares
the machine's cores with the servers, as stated in the output.

    make bench                       # or: .venv/bin/python -m bench.write_path --seconds 20
"""

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

import orjson

from bench.tools import (
    LoadResult,
    Server,
    bearer,
    lua_table,
    machine,
    save,
    vegeta,
    write_private,
    writer_key,
    wrk,
)
from warriors.eventstore.database import apply_migrations
from warriors.servers import free_port
from warriors.servers.embedded_postgres import EmbeddedPostgres

BODY = {"name": "Miyamoto Musashi", "dob": "1584-03-12", "fight_skills": ["Katana", "Niten Ichi-ryu"]}
PATH = "/api/v1/commands/warriors"
METADATA = {
    "correlation_id": "01936d2e-7a1c-7b3e-9f10-4c2b8e1d2a33",
    "causation_id": "01936d2e-7a1c-7b3e-9f10-4c2b8e1d2a33",
    "user_id": "api-key:01936d2e-7a1c-7b3e-9f10-4c2b8e1d2a34",  # the writer key's subject, as the API records it
    "client_ip": "127.0.0.1",
    "user_agent": "wrk",
    "occurred_at": "2026-11-26T12:00:00+00:00",
}


CEILING = "framework ceiling (trivial endpoint)"
RAW = "raw PostgreSQL (pgbench)"
PLATFORM = "platform: create warrior"


def median(runs: list[LoadResult]) -> LoadResult:
    """The run with the median throughput (its own latencies, so they stay consistent)."""
    return sorted(runs, key=lambda r: r.requests_per_second)[len(runs) // 2]


def wrk_script(workdir: Path, headers: dict[str, str]) -> Path:
    """The creation every connection sends, with `headers` (the writer key) besides the
    content type. The framework ceiling gets the same script, key included: it ignores
    the header, but parses the same request bytes, so the ratio measures what checking
    the key costs the platform, not a longer request (the file is 0600: it holds the key)."""
    body = orjson.dumps(BODY).decode()
    table = lua_table({"Content-Type": "application/json", **headers})
    return write_private(
        workdir / "post.lua", f'wrk.method = "POST"\nwrk.body = [[{body}]]\nwrk.headers = {table}\n'
    )


def pgbench(server: EmbeddedPostgres, url: str, concurrency: int, seconds: int, workdir: Path) -> LoadResult:
    """The same event row, inserted straight into the event store by pgbench.

    Ids are time-ordered like the platform's UUIDv7 (random v4 ids would scatter index
    writes and make the baseline look slower than it is)."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "insert.sql"
    script.write_text(
        "INSERT INTO event_store (event_id, aggregate_id, aggregate_type, event_type, event_version,"
        " schema_version, event_data, metadata) VALUES (uuidv7(), uuidv7(), 'Warrior',"
        f" 'WarriorCreated', 1, 1, '{orjson.dumps(BODY).decode()}', '{orjson.dumps(METADATA).decode()}');\n"
    )
    logs = workdir / f"pgbench-{concurrency}"
    logs.mkdir(parents=True)
    out = subprocess.run(
        [str(server.bin_dir / "pgbench"), "-n", "-c", str(concurrency), "-j", "2", "-T", str(seconds),
         "-f", str(script), "--log", f"--log-prefix={logs}/tx", url],
        capture_output=True, text=True, check=True, cwd=workdir,
    ).stdout  # fmt: skip
    latencies = sorted(
        int(line.split()[2]) / 1000 for log in logs.iterdir() for line in log.read_text().splitlines() if line
    )
    tps = float(out.split("tps = ")[1].split()[0])
    failed = (
        int(out.split("number of failed transactions: ")[1].split()[0]) if "failed transactions" in out else 0
    )
    cut = statistics.quantiles(latencies, n=100)
    return LoadResult("raw PostgreSQL (pgbench)", concurrency, tps, cut[49], cut[98], failed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="duration of each closed-loop run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (as make run)")
    parser.add_argument("--rate", type=int, default=1000, help="fixed creation rate for the open-loop run")
    parser.add_argument("--rate-seconds", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-write-") as tmp:
        workdir = Path(tmp)
        postgres = EmbeddedPostgres(workdir / "pg", free_port())
        platform_url = postgres.start()
        raw_url = platform_url.rsplit("/", 1)[0] + "/bench_raw"
        try:
            _run(args, workdir, postgres, platform_url, raw_url)
        finally:
            postgres.destroy()


def _run(
    args: argparse.Namespace, workdir: Path, postgres: EmbeddedPostgres, platform_url: str, raw_url: str
) -> None:
    import psycopg

    with psycopg.connect(platform_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench_raw")
    apply_migrations(platform_url)
    apply_migrations(raw_url)
    auth = bearer(writer_key(platform_url, "bench write_path"))  # creations need the writer role
    script = wrk_script(workdir, auth)
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    # As `make run` serves it: the Unix socket, multiprocess Prometheus metrics on. pgbench
    # uses the same socket.
    env = {"DATABASE_URL": postgres.socket_url(), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    results: list[LoadResult] = []
    print(f"machine: {machine()}; load generators (wrk -t2, pgbench -j2, vegeta) share these cores")
    print(
        f"servers: uvicorn with {args.workers} worker(s); {args.rounds} interleaved rounds of {args.seconds}s"
        " per closed-loop run, medians reported\n",
        flush=True,
    )

    # Both servers stay up (an idle one costs nothing) and the three runs are interleaved
    # round by round, so a slow spell of this shared machine hits all of them alike; the
    # median of the rounds is reported.
    trivial = Server("bench.trivial_app:create_app", free_port(), args.workers, {}, workdir / "trivial.log")
    service = Server("api.gateway:create_app", free_port(), args.workers, env, workdir / "service.log")
    try:
        for c in args.concurrency:
            rounds: dict[str, list[LoadResult]] = {CEILING: [], RAW: [], PLATFORM: []}
            for round_ in range(args.rounds):
                rounds[CEILING].append(wrk(trivial.url + PATH, c, args.seconds, script, CEILING))
                raw_socket = postgres.socket_url("bench_raw")
                rounds[RAW].append(pgbench(postgres, raw_socket, c, args.seconds, workdir / f"r{round_}"))
                rounds[PLATFORM].append(wrk(service.url + PATH, c, args.seconds, script, PLATFORM))
                latest = ", ".join(f"{k} {v[-1].requests_per_second:.0f}/s" for k, v in rounds.items())
                print(f"  {c} clients, round {round_ + 1}: {latest}", flush=True)
            results.extend(median(runs) for runs in rounds.values())
        sustained = vegeta(service.url + PATH, orjson.dumps(BODY), args.rate, args.rate_seconds,
                           "platform: fixed rate", workdir, headers=auth)  # fmt: skip
    finally:
        service.stop()
        trivial.stop()

    _print(results, sustained, args)
    path = save("write_path", {"machine": machine(), "args": vars(args),
                               "results": [r.__dict__ for r in [*results, sustained]]})  # fmt: skip
    print(f"\nresults saved to {path}")


def _print(results: list[LoadResult], sustained: LoadResult, args: argparse.Namespace) -> None:
    print(f"{'run':<40} {'clients':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for r in results:
        numbers = f"{r.requests_per_second:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.errors:>7}"
        print(f"{r.label:<40} {r.concurrency!s:>8} {numbers}")
    print("\nratios (platform / baseline, same concurrency):")
    by = {(r.label, r.concurrency): r for r in results}
    for c in args.concurrency:
        ours, ceiling, raw = by[(PLATFORM, c)], by[(CEILING, c)], by[(RAW, c)]
        to_ceiling = ours.requests_per_second / ceiling.requests_per_second
        to_raw = ours.requests_per_second / raw.requests_per_second
        print(f"  {c:>3} clients: {to_ceiling:.2f} of the framework ceiling,"
              f" {to_raw:.2f} of raw PostgreSQL inserts;"
              f" p99 {ours.p99_ms:.1f} ms")  # fmt: skip
    print(f"\nsustained {args.rate} creations/s for {args.rate_seconds}s (open loop): achieved"
          f" {sustained.requests_per_second:.0f}/s, p50 {sustained.p50_ms:.2f} ms,"
          f" p99 {sustained.p99_ms:.2f} ms,"
          f" {sustained.errors} non-202")  # fmt: skip


if __name__ == "__main__":
    main()
