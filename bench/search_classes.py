"""Search per class of term, over HTTP as `make run` serves it (the gateway, 2 workers,
PostgreSQL search over its Unix socket), on 100,000 realistic warriors (tests/dataset.py:
the load generator's word lists), with get-by-id on the same server in the same run as
the reference:

* at 1 client, each class on its own: a common word of the data set, a rare word, a
  one-letter typo of a word, 1-50 random letters and spaces (the four classes of the
  mixed load profile), and get-by-id; rounds interleaved, medians reported;
* at 64 connections, the four classes mixed (3,000 terms each by default: typos and random
  letters seldom repeat, common words do, as in real traffic), and get-by-id.

Searches run with the workers' answer cache off (SEARCH_CACHE_SECONDS=0: what a search
costs) and, at 64 connections, also with it on as `make run` serves it (1 s).

Targets (issue 10): every class p50 <= 3x get-by-id's p50 and p99 <= 20 ms at 1 client;
mixed search throughput at 64 connections >= 0.3 of get-by-id's.

    make bench-search-classes   # or: .venv/bin/python -m bench.search_classes --help
"""

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg_pool import AsyncConnectionPool

from bench.tools import LoadResult, Server, load_options, machine, median, print_table, save, wrk
from tests.dataset import created_events, words
from tests.history import copy_events
from warriors.eventstore.database import apply_migrations
from warriors.projections.engine import ProjectionEngine
from warriors.projections.read_model import WarriorsReadModel
from warriors.servers import free_port
from warriors.servers.embedded_postgres import EmbeddedPostgres

CLASSES = ("common", "rare", "typo", "random")
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def terms(rng: random.Random, count: int) -> dict[str, list[str]]:
    """`count` terms per class, drawn like the load generator draws them."""
    w = words()
    common = [
        *w["first_names"],
        *w["common_surnames"],
        *(word for skill in w["skills"] for word in skill.split()),
    ]
    rare = w["rare_surnames"]

    def typo(word: str) -> str:
        i = rng.randrange(len(word))
        kind = rng.choice(("substitute", "delete", "insert", "transpose"))
        if kind == "substitute":
            return word[:i] + rng.choice(LETTERS[:26]) + word[i + 1 :]
        if kind == "delete" and len(word) > 2:
            return word[:i] + word[i + 1 :]
        if kind == "transpose" and i < len(word) - 1:
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        return word[:i] + rng.choice(LETTERS[:26]) + word[i:]

    def random_letters() -> str:
        return "".join(rng.choice(LETTERS + " " * 8) for _ in range(rng.randint(1, 50))).strip() or "x"

    return {
        "common": [rng.choice(common) for _ in range(count)],
        "rare": [rng.choice(rare) for _ in range(count)],
        "typo": [typo(rng.choice([*common, *rare])) for _ in range(count)],
        "random": [random_letters() for _ in range(count)],
    }


def _script(path: Path, paths: list[str]) -> Path:
    """A wrk script sending GETs of `paths` in turn."""
    listed = ",".join(f'"{p}"' for p in paths)
    path.write_text(
        f"local paths = {{{listed}}}\nlocal i = 0\n"
        "request = function() i = i + 1\n  return wrk.format('GET', paths[i % #paths + 1]) end\n"
    )
    return path


async def _catch_up(url: str) -> float:
    async with AsyncConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        engine = ProjectionEngine(pool, WarriorsReadModel(), 5000)
        await engine.register()
        started = time.perf_counter()
        await engine.catch_up()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    load_options(parser)
    parser.add_argument("--terms", type=int, default=3000, help="terms per class")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"machine: {machine()}; wrk and the servers share these cores; uvicorn with {args.workers} workers;"
          f" seed {args.seed}\n")  # fmt: skip
    report: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-search-classes-") as tmp:
        workdir = Path(tmp)
        postgres = EmbeddedPostgres(workdir / "pg", free_port())
        url = postgres.start()
        try:
            apply_migrations(url)
            copy_events(url, list(created_events(args.warriors, seed=args.seed)))
            seconds = asyncio.run(_catch_up(url))
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE warriors_read_model")
                ids = [
                    r[0]
                    for r in conn.execute("SELECT id FROM warriors_read_model ORDER BY random() LIMIT 5000")
                ]
            print(f"seeded {args.warriors} warriors (projected in {seconds:.1f}s)\n", flush=True)
            by_class = terms(rng, args.terms)
            scripts = {
                name: _script(
                    workdir / f"{name}.lua", [f"/api/v1/queries/warriors?term={quote(t)}" for t in found]
                )
                for name, found in by_class.items()
            }
            mixed = [t for found in zip(*by_class.values(), strict=True) for t in found]
            scripts["mixed"] = _script(
                workdir / "mixed.lua", [f"/api/v1/queries/warriors?term={quote(t)}" for t in mixed]
            )
            scripts["get"] = _script(workdir / "get.lua", [f"/api/v1/queries/warriors/{i}" for i in ids])
            env = {"DATABASE_URL": postgres.socket_url(), "REDIS_URL": "", "SEARCH_URL": "",
                   "KAFKA_BOOTSTRAP_SERVERS": ""}  # fmt: skip
            service = Server("api.gateway:create_app", free_port(), args.workers,
                             {**env, "SEARCH_CACHE_SECONDS": "0"}, workdir / "service.log")  # fmt: skip
            cached = Server("api.gateway:create_app", free_port(), args.workers, env, workdir / "cached.log")
            # The baseline of the worker's vocabulary (issue 24): every term to PostgreSQL.
            queried = Server("api.gateway:create_app", free_port(), args.workers,
                             {**env, "SEARCH_CACHE_SECONDS": "0", "SEARCH_VOCABULARY_IN_WORKER": "false"},
                             workdir / "queried.log")  # fmt: skip
            try:
                for name in scripts:  # warm up: connections, plans
                    wrk(service.url, 1, 1, scripts[name], name)
                wrk(cached.url, 1, 1, scripts["get"], "get")
                wrk(queried.url, 1, 1, scripts["random"], "random")
                one: dict[str, list[LoadResult]] = {name: [] for name in ("get", *CLASSES, "queried")}
                many: dict[str, list[LoadResult]] = {"get": [], "mixed": [], "cached": [], "queried": []}
                for _ in range(args.rounds):
                    for name in one:
                        if name == "queried":
                            label = "search: random, vocabulary off"
                            one[name].append(wrk(queried.url, 1, args.seconds, scripts["random"], label))
                            continue
                        label = "get by id" if name == "get" else f"search: {name}"
                        one[name].append(wrk(service.url, 1, args.seconds, scripts[name], label))
                    many["get"].append(wrk(service.url, 64, args.seconds, scripts["get"], "get by id"))
                    many["mixed"].append(
                        wrk(service.url, 64, args.seconds, scripts["mixed"], "search: mixed, no answer cache")
                    )
                    many["cached"].append(
                        wrk(cached.url, 64, args.seconds, scripts["mixed"], "search: mixed, answer cache 1 s")
                    )
                    many["queried"].append(
                        wrk(queried.url, 64, args.seconds, scripts["mixed"], "search: mixed, vocabulary off")
                    )
            finally:
                queried.stop()
                cached.stop()
                service.stop()
        finally:
            postgres.destroy()
    single = [median(v) for v in one.values()]
    loaded = [median(v) for v in many.values()]
    print_table(f"1 client, {args.warriors:,} warriors", single)
    get = single[0]
    for r in single[1:]:
        print(f"  {r.label}: p50 {r.p50_ms / get.p50_ms:.1f}x get-by-id's (target <= 3), p99 {r.p99_ms:.1f} ms"
              " (target <= 20)")  # fmt: skip
    print()
    print_table("64 connections", loaded)
    for r in loaded[1:]:
        print(f"  {r.label}: throughput {r.requests_per_second / loaded[0].requests_per_second:.2f} of"
              " get-by-id's (target >= 0.3)")  # fmt: skip
    on, off = single[CLASSES.index("random") + 1], single[-1]
    print(f"\nthe worker's vocabulary (issue 24): random letters p50 {on.p50_ms:.2f} ms against {off.p50_ms:.2f} ms"
          f" queried ({off.p50_ms / on.p50_ms:.1f}x); mixed at 64 connections {loaded[1].requests_per_second:,.0f}"
          f" against {loaded[3].requests_per_second:,.0f} req/s queried"
          f" ({loaded[1].requests_per_second / loaded[3].requests_per_second:.2f}x)")  # fmt: skip
    report["one_client"] = [r.__dict__ for r in single]
    report["64_connections"] = [r.__dict__ for r in loaded]
    report["terms"] = {name: found[:20] for name, found in by_class.items()}
    print(f"\nresults saved to {save('search_classes', report)}")


if __name__ == "__main__":
    main()
