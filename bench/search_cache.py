"""Search-engine and Redis read models, each with its baseline in the same run:

* search p50/p99 over HTTP on 100,000 warriors with SEARCH_URL set (a rotating mix of
  terms: exact, accented, fuzzy, synonyms), against the same query bodies sent straight to
  the OpenSearch node (wrk POSTing to `_search`): the API's overhead as a ratio;
* get-by-id over HTTP with Redis against without it, and against the framework ceiling
  (bench/trivial_app.py, same server and workers), at 16 and 64 clients; rounds
  interleaved, medians reported.

    make bench-search   # or: .venv/bin/python -m bench.search_cache --help
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from bench.read_path import TERMS, seed_events
from bench.tools import LoadResult, Server, load_options, machine, median, print_table, save, wrk
from warriors.adapters.redis_cache import RedisReadModels
from warriors.adapters.search_engine import EngineKind, SearchEngine
from warriors.eventstore.database import apply_migrations
from warriors.projections.base import Projection
from warriors.projections.cache import WarriorsCache
from warriors.projections.engine import ProjectionEngine
from warriors.projections.read_model import WarriorsReadModel
from warriors.projections.search import WarriorsSearch
from warriors.readside import search_index
from warriors.servers import free_port
from warriors.servers.embedded_postgres import EmbeddedPostgres
from warriors.servers.opensearch_server import OpenSearchServer
from warriors.servers.redis_server import RedisServer


async def project(url: str, search_url: str, redis_url: str) -> dict[str, float]:
    """Catch the read model, the search index and the cache up; seconds each."""
    timings: dict[str, float] = {}
    async with AsyncConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True}) as pool:
        projections: list[Projection] = [
            WarriorsReadModel(),
            WarriorsSearch(SearchEngine(search_url, EngineKind.OPENSEARCH), refresh=False),
            WarriorsCache(RedisReadModels(redis_url)),
        ]
        for projection in projections:
            engine = ProjectionEngine(pool, projection, 5000)
            await engine.register()
            started = time.perf_counter()
            await engine.catch_up()
            timings[projection.name] = time.perf_counter() - started
            await projection.close()
    async with httpx.AsyncClient() as client:
        await client.post(f"{search_url}/{search_index.ALIAS}/_refresh")
    return timings


def search(args: argparse.Namespace, env: dict[str, str], search_url: str, workdir: Path) -> list[LoadResult]:
    api_script = workdir / "search-api.lua"
    terms = ",".join(f'"{t.replace(" ", "%20")}"' for t in TERMS)
    api_script.write_text(
        f"local terms = {{{terms}}}\nlocal i = 0\n"
        "request = function() i = i + 1\n"
        "  return wrk.format('GET', '/api/v1/queries/warriors?term=' .. terms[i % #terms + 1]) end\n"
    )
    engine_script = workdir / "search-engine.lua"
    bodies = ",".join(
        "[[" + orjson.dumps(search_index.search_body(t, search_index.MAX_RESULTS)).decode() + "]]"
        for t in TERMS
    )
    engine_script.write_text(
        f"local bodies = {{{bodies}}}\nlocal i = 0\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        "request = function() i = i + 1\n"
        f"  return wrk.format('POST', '/{search_index.ALIAS}/_search', nil, bodies[i % #bodies + 1]) end\n"
    )
    service = Server("api.gateway:create_app", free_port(), args.workers, env, workdir / "search.log")
    results: list[LoadResult] = []
    try:
        with httpx.Client(base_url=service.url) as client:
            for term in TERMS:
                found = client.get("/api/v1/queries/warriors", params={"term": term}).json()
                print(
                    f"  search {term!r}: {len(found)} results, first {found[0]['name'] if found else None!r}"
                )
        for c in (1, 16):
            rounds: dict[str, list[LoadResult]] = {"engine": [], "api": []}
            for _ in range(args.rounds):
                rounds["engine"].append(
                    wrk(search_url, c, args.seconds, engine_script, "OpenSearch _search, direct")
                )
                rounds["api"].append(wrk(service.url, c, args.seconds, api_script, "platform: search API"))
            results += [median(v) for v in rounds.values()]
    finally:
        service.stop()
    return results


def get_by_id(
    args: argparse.Namespace, url: str, env: dict[str, str], redis_url: str, workdir: Path
) -> list[LoadResult]:
    with psycopg.connect(url) as conn:
        ids = [
            row[0] for row in conn.execute("SELECT id FROM warriors_read_model ORDER BY random() LIMIT 10000")
        ]
    script = workdir / "get.lua"
    script.write_text(
        "local ids = {" + ",".join(f'"{i}"' for i in ids) + "}\n"
        "request = function() return wrk.format('GET', '/api/v1/queries/warriors/' .. ids[math.random(#ids)]) end\n"
    )
    trivial_script = workdir / "trivial.lua"
    trivial_script.write_text("request = function() return wrk.format('GET', '/ping') end\n")
    trivial = Server("bench.trivial_app:create_app", free_port(), args.workers, {}, workdir / "trivial.log")
    without = Server(
        "api.gateway:create_app", free_port(), args.workers, {**env, "REDIS_URL": ""}, workdir / "pg.log"
    )
    cached = Server(
        "api.gateway:create_app",
        free_port(),
        args.workers,
        {**env, "REDIS_URL": redis_url},
        workdir / "redis.log",
    )
    results: list[LoadResult] = []
    try:
        with httpx.Client(base_url=cached.url) as client:  # reads fill the cache: warm it once
            for warrior_id in ids:
                client.get(f"/api/v1/queries/warriors/{warrior_id}")
        for c in args.concurrency:
            rounds: dict[str, list[LoadResult]] = {"ceiling": [], "postgres": [], "redis": []}
            for _ in range(args.rounds):
                rounds["ceiling"].append(
                    wrk(trivial.url, c, args.seconds, trivial_script, "framework ceiling")
                )
                rounds["postgres"].append(
                    wrk(without.url, c, args.seconds, script, "get by id, PostgreSQL only")
                )
                rounds["redis"].append(wrk(cached.url, c, args.seconds, script, "get by id, with Redis"))
            results += [median(v) for v in rounds.values()]
    finally:
        for server in (cached, without, trivial):
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    load_options(parser)
    parser.add_argument("--only", choices=["search", "get"], nargs="+")
    args = parser.parse_args()
    parts = args.only or ["search", "get"]
    print(
        f"machine: {machine()}; load generators and servers share these cores; uvicorn with {args.workers} workers\n"
    )
    report: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        workdir = Path(tmp)
        postgres = EmbeddedPostgres(workdir / "pg", free_port())
        opensearch = OpenSearchServer(Path(tempfile.mkdtemp(prefix="bench-os-")), free_port())
        redis = RedisServer(workdir / "redis", free_port())
        url = postgres.start()
        try:
            search_url, redis_url = opensearch.start(), redis.start()
            apply_migrations(url)
            seed_events(url, args.warriors)
            timings = asyncio.run(project(url, search_url, redis_url))
            print(
                f"seeded {args.warriors} warriors; projected in "
                + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
            )
            env = {
                "DATABASE_URL": postgres.socket_url(),
                "SEARCH_URL": search_url,
                "SEARCH_ENGINE": "opensearch",
            }
            if "search" in parts:
                results = search(args, env, search_url, workdir)
                print()
                print_table("search (100k warriors)", results)
                for c in (1, 16):
                    engine, api = (r for r in results if r.concurrency == c)
                    print(
                        f"  {c} client(s): the API's p50 is {api.p50_ms / engine.p50_ms:.2f}x the engine's,"
                        f" throughput {api.requests_per_second / engine.requests_per_second:.2f} of the engine's"
                    )
                report["search"] = [r.__dict__ for r in results]
            if "get" in parts:
                results = get_by_id(args, url, env, redis_url, workdir)
                print()
                print_table("get by id", results)
                for c in args.concurrency:
                    ceiling, pg, cached = (r for r in results if r.concurrency == c)
                    print(
                        f"  {c} clients: with Redis {cached.requests_per_second / ceiling.requests_per_second:.2f}"
                        f" of the ceiling (target >= 0.6), without {pg.requests_per_second / ceiling.requests_per_second:.2f};"
                        f" Redis/PostgreSQL-only {cached.requests_per_second / pg.requests_per_second:.2f}x"
                    )
                report["get_by_id"] = [r.__dict__ for r in results]
        finally:
            redis.stop()
            opensearch.stop()
            postgres.destroy()
    print(f"\nresults saved to {save('search_cache', report)}")


if __name__ == "__main__":
    main()
