"""Read-side benchmarks, each with its baseline in the same run:

* get-by-id over HTTP at 16 and 64 clients, against (a) pgbench running the same SQL the
  service runs (the read model's row and the store's head version by primary key) and
  (b) the framework ceiling (bench/trivial_app.py, same server and workers);
* search p50/p99 over HTTP on 100,000 warriors, a rotating mix of terms (exact, accented,
  fuzzy, synonyms);
* projection lag (202 to visible in the read model) p50/p99 while vegeta writes at a
  fixed rate, with the live projector running;
* replay throughput: rebuilding the read model from 1,000,000 events, against a raw COPY
  of the same resulting rows into the same table.

    make bench-read     # or: .venv/bin/python -m bench.read_path --help
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from bench.tools import (
    KEY_VARIABLE,
    LoadResult,
    Server,
    bearer,
    load_options,
    machine,
    median,
    print_table,
    save,
    writer_key,
    wrk,
)
from tests.support import ProjectorProcess
from warriors.eventstore.database import apply_migrations
from warriors.projections.engine import ProjectionEngine
from warriors.projections.read_model import READ_MODEL, WarriorsReadModel
from warriors.projections.status import projection_statuses
from warriors.servers import free_port
from warriors.servers.embedded_postgres import EmbeddedPostgres

FIRST = ["Miyamoto", "José", "Bruce", "Tomoe", "Ip", "Chuck", "Zhang", "Ana", "Hattori", "Nakano"]
LAST = ["Musashi", "Aldo", "Lee", "Gozen", "Man", "Norris", "Sanfeng", "Maria", "Hanzo", "Takeko"]
SKILLS = ["Katana", "Kick", "Boxing", "Judo", "Wing Chun", "Archery", "Naginata", "Capoeira", "Bo", "Combat"]
JSON = {"Content-Type": "application/json"}  # a write without it answers 415
TERMS = [
    "musashi",
    "jose",
    "musashy",
    "blade",
    "punch",
    "martial arts",
    "wing",
    "hanzo",
    "takeko maria",
    "lee",
]
COPY_EVENTS = """COPY event_store
    (event_id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata) FROM STDIN"""


def seed_events(url: str, warriors: int, events_per_warrior: int = 1) -> int:
    """`warriors` WarriorCreated events (plus updates), written with COPY; returns the count."""
    written = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(COPY_EVENTS) as copy:
        for i in range(warriors):
            wid = uuid.uuid4()
            name = f"{FIRST[i % 10]} {LAST[(i // 10) % 10]} {i}"
            skills = [SKILLS[i % 10], SKILLS[(i // 7) % 10]] if i % 7 % 10 != i % 10 else [SKILLS[i % 10]]
            data = {"name": name, "dob": "1980-01-01", "fight_skills": list(dict.fromkeys(skills))}
            copy.write_row(
                (uuid.uuid4(), wid, "Warrior", "WarriorCreated", 1, orjson.dumps(data).decode(), "{}")
            )
            written += 1
            for version in range(2, events_per_warrior + 1):
                update = orjson.dumps({"name": f"{name} v{version}"}).decode()
                copy.write_row((uuid.uuid4(), wid, "Warrior", "WarriorUpdated", version, update, "{}"))
                written += 1
    return written


async def catch_up(url: str, batch: int = 5000) -> tuple[int, float]:
    async with AsyncConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        engine = ProjectionEngine(pool, WarriorsReadModel(), batch)
        await engine.register()
        started = time.perf_counter()
        applied = await engine.catch_up()
        return applied, time.perf_counter() - started


def get_by_id(
    args: argparse.Namespace, url: str, postgres: EmbeddedPostgres, workdir: Path
) -> list[LoadResult]:
    socket_url = postgres.socket_url()  # the services and pgbench use the socket, as make run does
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [
            row[0] for row in conn.execute("SELECT id FROM warriors_read_model ORDER BY random() LIMIT 10000")
        ]
        conn.execute("CREATE TABLE IF NOT EXISTS bench_ids (n int PRIMARY KEY, id uuid NOT NULL)")
        conn.execute("TRUNCATE bench_ids")
        with conn.cursor().copy("COPY bench_ids (n, id) FROM STDIN") as copy:
            for n, wid in enumerate(ids, 1):
                copy.write_row((n, wid))
    script = workdir / "get.lua"
    script.write_text(
        "local ids = {" + ",".join(f'"{i}"' for i in ids) + "}\n"
        "request = function() return wrk.format('GET', '/api/v1/queries/warriors/' .. ids[math.random(#ids)]) end\n"
    )
    trivial_script = workdir / "trivial.lua"
    trivial_script.write_text("request = function() return wrk.format('GET', '/ping') end\n")
    sql = workdir / "get.sql"
    # The same primary-key select the service needs, one per transaction.
    sql.write_text(
        f"\\set n random(1, {len(ids)})\n"
        "SELECT id, name, dob, fight_skills, version, created_at, updated_at FROM warriors_read_model"
        " WHERE id = (SELECT id FROM bench_ids WHERE n = :n);\n"
    )
    results: list[LoadResult] = []
    trivial = Server("bench.trivial_app:create_app", free_port(), args.workers, {}, workdir / "trivial.log")
    service = Server(
        "api.gateway:create_app", free_port(), args.workers, {"DATABASE_URL": socket_url}, workdir / "svc.log"
    )
    try:
        for c in args.concurrency:
            rounds: dict[str, list[LoadResult]] = {"ceiling": [], "pgbench": [], "platform": []}
            for r in range(args.rounds):
                rounds["ceiling"].append(
                    wrk(trivial.url, c, args.seconds, trivial_script, "framework ceiling")
                )
                rounds["pgbench"].append(
                    _pgbench(postgres, socket_url, c, args.seconds, sql, workdir / f"g{c}-{r}")
                )
                rounds["platform"].append(wrk(service.url, c, args.seconds, script, "platform: get by id"))
            results += [median(v) for v in rounds.values()]
    finally:
        service.stop()
        trivial.stop()
    return results


def _pgbench(
    postgres: EmbeddedPostgres, url: str, c: int, seconds: int, script: Path, logs: Path
) -> LoadResult:
    logs.mkdir(parents=True)
    out = subprocess.run(
        [str(postgres.bin_dir / "pgbench"), "-n", "-c", str(c), "-j", "2", "-T", str(seconds), "-f", str(script),
         "--log", f"--log-prefix={logs}/tx", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    latencies = sorted(
        int(line.split()[2]) / 1000 for f in logs.iterdir() for line in f.read_text().splitlines()
    )
    cut = statistics.quantiles(latencies, n=100)
    return LoadResult(
        "raw PostgreSQL (pgbench, PK select)", c, float(out.split("tps = ")[1].split()[0]), cut[49], cut[98]
    )


def search(args: argparse.Namespace, socket_url: str, workdir: Path) -> list[LoadResult]:
    script = workdir / "search.lua"
    terms = ",".join(f'"{t.replace(" ", "%20")}"' for t in TERMS)
    script.write_text(
        f"local terms = {{{terms}}}\nlocal i = 0\n"
        "request = function() i = i + 1\n"
        "  return wrk.format('GET', '/api/v1/queries/warriors?term=' .. terms[i % #terms + 1]) end\n"
    )
    service = Server(
        "api.gateway:create_app", free_port(), args.workers, {"DATABASE_URL": socket_url}, workdir / "s.log"
    )
    try:
        with httpx.Client(base_url=service.url) as client:
            for term in TERMS:
                found = client.get("/api/v1/queries/warriors", params={"term": term}).json()
                print(
                    f"  search {term!r}: {len(found)} results, first {found[0]['name'] if found else None!r}"
                )
        return [wrk(service.url, c, args.seconds, script, "platform: search") for c in (1, 16)]
    finally:
        service.stop()


async def lag(args: argparse.Namespace, url: str, socket_url: str, workdir: Path) -> dict[str, float]:
    """Probe writes during a fixed-rate load, the live projector tailing the store."""
    service = Server(
        "api.gateway:create_app", free_port(), args.workers, {"DATABASE_URL": socket_url}, workdir / "l.log"
    )
    projector = ProjectorProcess(socket_url, name="bench-projector")
    key = writer_key(url, "bench read_path lag")  # the probes and the load are creations
    try:
        return await probe_lag(service.url, url, args.lag_rate, args.lag_seconds, workdir, key)
    finally:
        projector.stop()
        service.stop()


async def probe_lag(
    service_url: str, url: str, rate: int, seconds: int, workdir: Path, key: str, *, kafka: bool = False
) -> dict[str, float]:
    """While vegeta writes `rate` creations/s for `seconds`, probe: the time from each
    probe's 202 until its warrior is in the read model (whatever feeds it). The load and
    the probes carry `key` (a writer key); vegeta's wrapper gets it in its environment."""
    body = orjson.dumps({"name": "Lag Probe", "dob": "1990-01-01"})
    headers = {**JSON, **bearer(key)}
    await _warm_up(service_url, url, body, headers, kafka=kafka)
    load = subprocess.Popen(
        [sys.executable, "-c", "import bench.tools as t, os, pathlib;"
         f"t.vegeta('{service_url}/api/v1/commands/warriors', {body!r}, {rate}, {seconds},"
         f"'load', pathlib.Path('{workdir}'), headers=t.bearer(os.environ[t.KEY_VARIABLE]))"],
        cwd=Path(__file__).resolve().parent.parent, env={**os.environ, KEY_VARIABLE: key},
    )  # fmt: skip
    lags: list[float] = []
    try:
        async with (
            httpx.AsyncClient(base_url=service_url) as client,
            await AsyncConnection.connect(url, autocommit=True) as conn,
        ):
            await asyncio.sleep(2)  # let the load reach its rate before probing
            deadline = time.monotonic() + seconds - 4
            while time.monotonic() < deadline:
                answer = await client.post("/api/v1/commands/warriors", content=body, headers=headers)
                accepted = time.perf_counter()
                warrior = answer.json()["id"]
                while True:
                    cursor = await conn.execute("SELECT 1 FROM warriors_read_model WHERE id = %s", (warrior,))
                    if await cursor.fetchone():
                        break
                    await asyncio.sleep(0.0005)
                lags.append((time.perf_counter() - accepted) * 1000)
                await asyncio.sleep(0.02)
    finally:
        load.wait()
    cut = statistics.quantiles(lags, n=100)
    return {"probes": len(lags), "rate": rate, "p50_ms": cut[49], "p99_ms": cut[98]}


async def _warm_up(service_url: str, url: str, body: bytes, headers: dict[str, str], *, kafka: bool) -> None:
    """One write, waited for until visible and the read model's projection caught up (no
    lag, as /projections reports it): the pipeline is flowing (a consumer group has
    joined, connections are open) before anything is measured. Visible alone is not
    enough through Kafka: a new group's member builds the read model from the store (the
    write is visible then), and then still reads the topic's backlog (the earlier rounds'
    events, applied already); probes taken meanwhile measured that backlog (seconds)."""
    async with httpx.AsyncClient(base_url=service_url) as client:
        answer = await client.post("/api/v1/commands/warriors", content=body, headers=headers)
        if answer.status_code != 202:  # say why (a refused key: 401/403), not a KeyError
            sys.exit(f"the warm-up write answered {answer.status_code}: {answer.text[:300]}")
        warrior = answer.json()["id"]
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            cursor = await conn.execute("SELECT 1 FROM warriors_read_model WHERE id = %s", (warrior,))
            if await cursor.fetchone():
                [status] = await projection_statuses(conn, READ_MODEL, kafka=kafka)
                if status.lag_events == 0:
                    return
            await asyncio.sleep(0.05)
    sys.exit("the warm-up write never became visible, or the read model never caught up")


async def replay(args: argparse.Namespace, workdir: Path, postgres: EmbeddedPostgres) -> dict[str, float]:
    url = postgres.url("postgres").rsplit("/", 1)[0] + "/bench_replay"
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench_replay")
    apply_migrations(url)
    events = seed_events(url, args.replay_events // 2, events_per_warrior=2)
    applied, seconds = await catch_up(url, batch=5000)
    assert applied == events
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE copy_target (LIKE warriors_read_model INCLUDING ALL)")
        columns = "id, name, dob, fight_skills, created_at, updated_at, version"
        data = workdir / "rows.copy"
        with (
            data.open("wb") as out,
            conn.cursor().copy(f"COPY warriors_read_model ({columns}) TO STDOUT") as copy,
        ):
            for chunk in copy:
                out.write(chunk)
        started = time.perf_counter()
        with (
            conn.cursor().copy(f"COPY copy_target ({columns}) FROM STDIN") as copy,
            data.open("rb") as source,
        ):
            while chunk := source.read(1 << 20):
                copy.write(chunk)
        copy_seconds = time.perf_counter() - started
    rows = applied // 2
    return {"events": applied, "replay_seconds": seconds, "events_per_second": applied / seconds,
            "rows": rows, "copy_seconds": copy_seconds, "ratio": copy_seconds / seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    load_options(parser)
    parser.add_argument(
        "--lag-rate",
        type=int,
        default=3600,
        help="writes/s during the lag probe (default: half the write path's measured maximum)",
    )
    parser.add_argument("--lag-seconds", type=int, default=20)
    parser.add_argument("--replay-events", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["get", "search", "lag", "replay"], nargs="+")
    args = parser.parse_args()
    parts = args.only or ["get", "search", "lag", "replay"]
    print(f"machine: {machine()}; load generators share these cores; uvicorn with {args.workers} workers\n")
    report: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        workdir = Path(tmp)
        postgres = EmbeddedPostgres(workdir / "pg", free_port())
        url = postgres.start()
        try:
            apply_migrations(url)
            seed_events(url, args.warriors)
            applied, seconds = asyncio.run(catch_up(url))
            print(
                f"seeded {args.warriors} warriors ({applied} events projected in {seconds:.1f}s)\n",
                flush=True,
            )
            if "get" in parts:
                report["get_by_id"] = [
                    r.__dict__ for r in _print_get(get_by_id(args, url, postgres, workdir))
                ]
            if "search" in parts:
                results = search(args, postgres.socket_url(), workdir)
                for r in results:
                    print(f"search on {args.warriors} warriors, {r.concurrency} client(s): {r.requests_per_second:.0f}"
                          f" req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms (target p50 < 10 ms)")  # fmt: skip
                report["search"] = [r.__dict__ for r in results]
            if "lag" in parts:
                report["lag"] = result = asyncio.run(lag(args, url, postgres.socket_url(), workdir))
                print(f"\nprojection lag (202 to visible) at {result['rate']} writes/s: {result['probes']} probes,"
                      f" p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms (target p99 < 100 ms)")  # fmt: skip
            if "replay" in parts:
                report["replay"] = r2 = asyncio.run(replay(args, workdir, postgres))
                print(f"\nreplay: {r2['events']} events in {r2['replay_seconds']:.1f}s = {r2['events_per_second']:.0f}"
                      f" events/s; raw COPY of the same {r2['rows']} rows: {r2['copy_seconds']:.1f}s;"
                      f" ratio {r2['ratio']:.2f} of raw COPY (target >= 0.3)")  # fmt: skip
        finally:
            postgres.destroy()
    print(f"\nresults saved to {save('read_path', report)}")


def _print_get(results: list[LoadResult]) -> list[LoadResult]:
    print_table("get by id", results)
    by = {(r.label.split(":")[0].split(" (")[0], r.concurrency): r for r in results}
    for c in sorted({r.concurrency for r in results}, key=str):
        ours = by[("platform", c)].requests_per_second
        print(
            f"  {c} clients: {ours / by[('framework ceiling', c)].requests_per_second:.2f} of the ceiling,"
            f" {ours / by[('raw PostgreSQL', c)].requests_per_second:.2f} of pgbench (target >= 0.4 of the ceiling)"
        )
    print()
    return results


if __name__ == "__main__":
    main()
