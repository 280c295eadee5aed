"""The production mode under faults, end to end on real servers (issue 12): the relay and
two projector members per projection (Kafka consumer groups), the read model in
PostgreSQL, the Redis cache and the OpenSearch index, writers running throughout. Faults
in a random order and timing (seeded, printed): SIGKILL a projector member, SIGKILL the
relay, restart the broker (same port, same data), flush Redis, delete the search alias,
delete the topic's records (what retention does), stop the search engine for a while.

Throughout, a sampler compares what `GET /projections` and the Dagster lag check say with
the truth (each sink's applied versions against the store's last events): whenever a sink
is behind, they must say so (no false green). At the end every sink (the read model and
its count, every Redis entry and the Redis count, every search document) equals a fresh
fold of the event store, entry by entry.

`make test` runs a short version (SOAK_SECONDS=20, the search engine down 3 s) with the
faults' order and timing drawn from a pinned seed (PINNED_SEED), so that every build
draws the same schedule; `make soak` a longer one (SOAK_SECONDS=300, the engine down
10 s) from a fresh seed each time (SOAK_SEED=random), printed; SOAK_SEED=N repeats a
run's faults. (The servers' own timing still varies from run to run: what is pinned is
what the test chooses.)
"""

import asyncio
import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest
import redis

from orchestration.assets.projections import lag_check_result
from orchestration.resources import ProjectionsResource
from tests.kafka_support import (
    SINKS,
    bus_env,
    cache_differences,
    caught_up,
    drop_the_topics_records,
    index_differences,
    read_model_differences,
    relay,
)
from tests.support import LoggedProcess, ProjectorProcess, ServiceProcess, fresh_search_engine, wait_for
from tests.writers import Writers
from warriors.adapters.redis_cache import VERSIONS
from warriors.config import get_settings
from warriors.projections.cache import CACHE
from warriors.projections.catalog import ProjectionName
from warriors.projections.read_model import READ_MODEL
from warriors.projections.search import SEARCH
from warriors.readside.search_index import ALIAS
from warriors.servers import free_port
from warriors.servers.kafka_broker import KafkaBroker
from warriors.servers.opensearch_server import OpenSearchServer

SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
PINNED_SEED = 917749
_SEED = os.environ.get("SOAK_SEED", "")
SEED = random.SystemRandom().randrange(1, 1_000_000) if _SEED == "random" else int(_SEED or PINNED_SEED)
# How long the search engine stays stopped: the 10 s under `make soak`, 3 s in
# `make test`'s short run (its restart adds several seconds of its own either way).
ENGINE_DOWN_SECONDS = 10.0 if SECONDS >= 60 else 3.0
# The pause after each fault: 0.5-3 s, longer in a long run (each round of faults stops the
# search engine once, and its restart alone takes tens of seconds on a busy machine).
GAP_SCALE = max(1.0, SECONDS / 100)
# The Dagster lag check's thresholds for this test, small enough for the faults to cross.
LAG_THRESHOLD_EVENTS = 100
LAG_THRESHOLD_SECONDS = 5.0
# The truth looks at the store's last PROBE_EVENTS events; a sink is behind when more than
# SLACK_EVENTS of them are not applied both before and after the status was read.
PROBE_EVENTS = 1000
SLACK_EVENTS = 10
# How soon a SIGKILLed member's partitions move to the other member (Kafka's default, 45 s,
# would dominate a short run): the smallest session time-out the broker accepts.
SESSION_TIMEOUT_SECONDS = 6
# Under the cache's key prefix, so that a flush and the projection's own reset (it deletes
# every `warriors:*` key) both remove it: gone after a sample, the cache was reset meanwhile.
SENTINEL = "warriors:soak-sentinel"


Applied = dict[uuid.UUID, int]  # warrior -> the last of its versions a sink holds (absent: none)
Probe = list[tuple[uuid.UUID, int, datetime]]  # (warrior, version, created_at) of stored events


class Sampler(threading.Thread):
    """Throughout the run, over and over: the truth (which of the store's last events each
    sink has not applied), then `GET /projections` and the Dagster lag check of each
    projection, then the truth again. A sink that had more than SLACK_EVENTS of those
    events unapplied before AND still after was behind the whole time in between (sinks
    only move forward; a sample across a reset of the cache or the index is not judged),
    so the endpoint must not have said lag 0 and RUNNING, and the check must have failed
    if the lag was over its thresholds: else it is a false green, recorded here."""

    def __init__(self, url: str, redis_url: str, search_url: str, service: ServiceProcess) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.redis_url = redis_url
        self.search_url = search_url
        self.service = service
        self.stopping = threading.Event()
        self.resources = ProjectionsResource(database_url=url)
        self.samples = 0
        self.judged: Counter[str] = Counter()
        self.behind: Counter[str] = Counter()  # judged behind (more than the slack)
        self.reported: Counter[str] = Counter()  # ... and the endpoint said so
        self.false_greens: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        with (
            psycopg.connect(self.url, autocommit=True) as conn,
            redis.Redis.from_url(self.redis_url) as cache,
            httpx.Client(timeout=5) as engine,
            httpx.Client(base_url=self.service.base_url, headers=self.service.headers, timeout=10) as api,
        ):
            while not self.stopping.is_set():
                try:
                    self._sample(conn, cache, engine, api)
                except Exception as exc:  # an endpoint or a server that failed once: said at the end
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self.stopping.wait(0.5)  # the sampling pace, not a synchronisation

    def _sample(
        self, conn: psycopg.Connection[Any], cache: redis.Redis, engine: httpx.Client, api: httpx.Client
    ) -> None:
        cache.set(SENTINEL, "1")
        alias_before = self._alias(engine)
        started, probe = self._probe(conn)
        ids = list({warrior for warrior, _, _ in probe})
        before = self._truth(conn, cache, engine, ids)
        answer = api.get("/api/v1/queries/projections")
        answer.raise_for_status()
        statuses = {status["name"]: status for status in answer.json()}
        checks = {name: self._lag_check(name) for name in SINKS}
        after = self._truth(conn, cache, engine, ids)
        reset = {CACHE: not cache.exists(SENTINEL), SEARCH: self._alias(engine) != alias_before}
        self.samples += 1
        for sink in SINKS:
            old, new = before.get(sink), after.get(sink)
            if old is None or new is None or reset.get(sink, False):
                continue  # unreadable (the engine down), or reset meanwhile: not judged
            self.judged[sink] += 1
            still = [(at, v) for w, v, at in probe if v > old.get(w, 0) and v > new.get(w, 0)]
            if len(still) <= SLACK_EVENTS:
                continue
            self.behind[sink] += 1
            age = (started - min(still)[0]).total_seconds()
            status = statuses.get(sink, {})
            said = (f"said lag_events={status.get('lag_events')} consumer_lag={status.get('consumer_lag')}"
                    f" status={status.get('status')}")  # fmt: skip
            truth = (
                f"{len(still)} of the store's last {len(probe)} events not applied, the oldest {age:.1f}s old"
            )
            if status.get("lag_events") == 0 and status.get("status") == "RUNNING":
                self.false_greens.append(
                    f"{time.strftime('%H:%M:%S')} /projections on {sink}: {said}; truth: {truth};"
                    f" {self._recorded(conn, sink)}"
                )
            else:
                self.reported[sink] += 1
            over = len(still) > LAG_THRESHOLD_EVENTS or age > LAG_THRESHOLD_SECONDS + 1
            check = checks[sink]
            if over and check.passed:
                self.false_greens.append(
                    f"{time.strftime('%H:%M:%S')} the Dagster lag check of {sink} passed"
                    f" ({check.description}; {_metadata(check)}); truth: {truth};"
                    f" {self._recorded(conn, sink)}"
                )

    def _lag_check(self, name: str) -> dg.AssetCheckResult:
        """The Dagster asset check `lag_under_threshold` of the projection, evaluated in
        this process with its resource: the check's body, without the ephemeral Dagster
        instance a direct invocation makes each time (a third of a core at this pace)."""
        return lag_check_result(self.resources, ProjectionName(name))

    @staticmethod
    def _recorded(conn: psycopg.Connection[Any], sink: str) -> str:
        """What the status is computed from, for a false green's message: the group's rows
        of `bus_consumer_lag`, the sink's rebuild and the relay's checkpoint."""
        rows = conn.execute(
            "SELECT partition, committed, end_offset, applied_position, to_char(updated_at, 'HH24:MI:SS.MS')"
            " FROM bus_consumer_lag WHERE group_id = %s ORDER BY 1",
            (f"warriors-{sink}",),
        ).fetchall()
        rebuild = conn.execute(
            "SELECT generation, state, replayed_position, to_char(updated_at, 'HH24:MI:SS.MS')"
            " FROM sink_rebuilds WHERE projection_name = %s",
            (sink,),
        ).fetchall()
        relayed = conn.execute(
            "SELECT last_position FROM projection_offsets WHERE projection_name = 'warriors_kafka_relay'"
        ).fetchall()
        head = conn.execute("SELECT max(position) FROM event_store").fetchall()
        return f"recorded {rows}, rebuild {rebuild}, relayed {relayed}, head {head}"

    def _probe(self, conn: psycopg.Connection[Any]) -> tuple[datetime, Probe]:
        """The store's clock and its last PROBE_EVENTS events, as the sample starts."""
        rows = conn.execute(
            "SELECT aggregate_id, event_version, created_at, clock_timestamp() FROM event_store"
            " ORDER BY position DESC LIMIT %s",
            (PROBE_EVENTS,),
        ).fetchall()
        now = rows[0][3] if rows else datetime.now().astimezone()
        return now, [(warrior, version, at) for warrior, version, at, _ in rows]

    def _truth(
        self, conn: psycopg.Connection[Any], cache: redis.Redis, engine: httpx.Client, ids: list[uuid.UUID]
    ) -> dict[str, Applied | None]:
        """Each sink's applied version of each of `ids` (None: the sink could not be read)."""
        rows = conn.execute(
            "SELECT id, version FROM warriors_read_model WHERE id = ANY(%(ids)s)"
            " UNION ALL SELECT id, version FROM read_model_deletions WHERE id = ANY(%(ids)s)",
            {"ids": ids},
        ).fetchall()
        read_model: Applied = {}
        for warrior, version in rows:
            read_model[warrior] = max(version, read_model.get(warrior, 0))
        versions = cache.hmget(VERSIONS, [str(warrior) for warrior in ids]) if ids else []
        in_cache = {w: abs(int(v)) for w, v in zip(ids, versions, strict=True) if v is not None}
        return {READ_MODEL: read_model, CACHE: in_cache, SEARCH: self._indexed(conn, engine, ids)}

    def _indexed(
        self, conn: psycopg.Connection[Any], engine: httpx.Client, ids: list[uuid.UUID]
    ) -> Applied | None:
        """The documents' versions behind the alias (no alias: none). A warrior without a
        document whom the store shows deleted (read after the index) may be deleted there:
        counted as applied up to its deletion, which can only understate the lag."""
        try:
            answer = engine.post(f"{self.search_url}/{ALIAS}/_mget", json={"ids": [str(w) for w in ids]},
                                 params={"_source": "version"})  # fmt: skip
        except httpx.TransportError:
            return None  # the engine is down
        if answer.status_code == 404:
            found: Applied = {}  # the alias is gone: nothing is there
        elif answer.status_code != 200:
            return None
        else:
            found = {
                uuid.UUID(d["_id"]): int(d["_source"]["version"])
                for d in answer.json()["docs"]
                if d.get("found")
            }
        missing = [warrior for warrior in ids if warrior not in found]
        deleted = conn.execute(
            "SELECT aggregate_id, max(event_version) FROM event_store"
            " WHERE aggregate_id = ANY(%s) AND event_type = 'WarriorDeleted' GROUP BY 1",
            (missing,),
        ).fetchall()
        return {**found, **dict(deleted)}

    def _alias(self, engine: httpx.Client) -> str:
        """The index behind the alias ('' for none), to notice a reset across a sample."""
        try:
            answer = engine.get(f"{self.search_url}/_alias/{ALIAS}")
        except httpx.TransportError:
            return "unreachable"
        return (
            ",".join(sorted(answer.json())) if answer.status_code == 200 else f"status {answer.status_code}"
        )


def _metadata(check: dg.AssetCheckResult) -> str:
    items = (check.metadata or {}).items()
    return ", ".join(f"{key}={getattr(value, 'value', value)}" for key, value in items)


def converge(what: str, differences: Callable[[], list[str]], url: str) -> None:
    """Wait for a sink to equal the store; if it does not, print how it differs and what the
    consumers recorded (their lag rows, the sinks' rebuilds, the parked events)."""
    try:
        wait_for(lambda: not differences(), timeout=180, what=what)
    except TimeoutError:
        print(f"{what}: differences\n" + "\n".join(differences()[:20]))
        with psycopg.connect(url) as conn:
            tables = ("bus_consumer_lag", "sink_rebuilds", "projection_offsets", "projection_parked_events")
            for table in tables:
                print(table, conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall())
        raise


def delete_the_alias(search_url: str) -> None:
    """The alias `warriors` removed (its index stays, unreachable by name)."""
    answer = httpx.get(f"{search_url}/_alias/{ALIAS}", timeout=10)
    for index in answer.json() if answer.status_code == 200 else []:
        httpx.delete(f"{search_url}/{index}/_alias/{ALIAS}", timeout=10).raise_for_status()


@pytest.fixture
def lag_check_settings(monkeypatch: pytest.MonkeyPatch, broker: KafkaBroker) -> Iterator[None]:
    """The Dagster lag check, called in this process, as Dagster runs it in production:
    fed from Kafka, with thresholds small enough for the faults to cross them."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers())
    monkeypatch.setenv("LAG_THRESHOLD_EVENTS", str(LAG_THRESHOLD_EVENTS))
    monkeypatch.setenv("LAG_THRESHOLD_SECONDS", str(LAG_THRESHOLD_SECONDS))
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def empty_search_engine(opensearch: OpenSearchServer) -> str:
    """The session's OpenSearch, started and without any warriors index; its URL."""

    async def empty() -> None:
        async with fresh_search_engine(opensearch):
            pass

    asyncio.run(empty())
    return opensearch.url()


class Faults:
    """Runs the faults in the order and at the moments the seeded RNG draws. The slow ones
    (the broker and the search engine: stopped, down a while, started again) run beside
    the others, as they would happen; a fault that needs the same server waits for it."""

    def __init__(self, began: float) -> None:
        self.began = began
        self.running: dict[str, threading.Thread] = {}
        self.failures: list[BaseException] = []
        self.done: Counter[str] = Counter()

    def run(self, name: str, server: str | None, action: Callable[[], None], *, beside: bool = False) -> None:
        if server is not None and (busy := self.running.pop(server, None)) is not None:
            busy.join()
        print(f"{time.monotonic() - self.began:6.1f}s fault: {name}")
        if not beside:
            action()
            self.done[name] += 1
            return
        assert server is not None
        thread = threading.Thread(target=self._guarded, args=(name, action), daemon=True)
        thread.start()
        self.running[server] = thread

    def _guarded(self, name: str, action: Callable[[], None]) -> None:
        try:
            action()
            self.done[name] += 1
            print(f"{time.monotonic() - self.began:6.1f}s fault over: {name}")
        except BaseException as exc:  # raised in the test's thread by finish()
            self.failures.append(exc)

    def finish(self) -> None:
        for thread in self.running.values():
            thread.join()
        self.running.clear()
        if self.failures:
            raise self.failures[0]


def test_the_production_mode_under_faults_ends_equal_to_the_store(
    fresh_database: str,
    broker: KafkaBroker,
    redis_url: str,
    opensearch: OpenSearchServer,
    lag_check_settings: None,
) -> None:
    began = time.monotonic()
    print(f"production faults: seed {SEED}, {SECONDS:.0f}s, search engine down {ENGINE_DOWN_SECONDS:.0f}s")
    rng = random.Random(SEED)  # the faults' order and timing; the writers draw from their own
    search_url = empty_search_engine(opensearch)
    env = {**bus_env(broker), "REDIS_URL": redis_url, "SEARCH_URL": search_url,
           "CACHE_COUNT_FRESH_SECONDS": "2",
           "KAFKA_SESSION_TIMEOUT_SECONDS": str(SESSION_TIMEOUT_SECONDS)}  # fmt: skip
    service = ServiceProcess(fresh_database, free_port(), env=env)
    feeder: list[LoggedProcess] = [relay(fresh_database, broker)]
    members: list[LoggedProcess] = [ProjectorProcess(fresh_database, env=env) for _ in range(2)]
    writers = Writers(service.base_url, service.headers, random.Random(SEED + 1))
    sampler = Sampler(fresh_database, redis_url, search_url, service)
    faults = Faults(began)

    def kill_member() -> None:
        index = rng.randrange(len(members))
        members[index].process.send_signal(signal.SIGKILL)
        members[index].stop()
        members[index] = ProjectorProcess(fresh_database, env=env)

    def kill_relay() -> None:
        feeder[0].process.send_signal(signal.SIGKILL)
        feeder[0].stop()
        feeder[0] = relay(fresh_database, broker)

    def flush_redis() -> None:
        with redis.Redis.from_url(redis_url) as client:
            client.flushall()

    def restart_broker(down: float) -> None:
        broker.stop()
        time.sleep(down)  # the broker down a while: the fault's duration
        broker.start()  # the same port, the same data

    def stop_the_search_engine() -> None:
        opensearch.stop()
        time.sleep(ENGINE_DOWN_SECONDS)  # the fault's duration
        opensearch.start()

    schedule: list[tuple[str, Callable[[], None]]] = [
        ("SIGKILL a projector member", lambda: faults.run("SIGKILL a projector member", None, kill_member)),
        ("SIGKILL the relay", lambda: faults.run("SIGKILL the relay", None, kill_relay)),
        ("restart the broker", lambda: faults.run(
            "restart the broker", "broker", partial(restart_broker, rng.uniform(0.5, 3)), beside=True)),
        ("flush Redis", lambda: faults.run("flush Redis", None, flush_redis)),
        ("delete the search alias", lambda: faults.run(
            "delete the search alias", "search", partial(delete_the_alias, search_url))),
        ("delete the topic's records", lambda: faults.run(
            "delete the topic's records", "broker", partial(drop_the_topics_records, broker))),
        ("stop the search engine", lambda: faults.run(
            f"stop the search engine for {ENGINE_DOWN_SECONDS:.0f}s", "search", stop_the_search_engine,
            beside=True)),
    ]  # fmt: skip
    try:
        with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
            wait_for(lambda: caught_up(client), timeout=120, what="every projection registered")
        writers.start()
        sampler.start()
        set_up = time.monotonic()
        deadline = set_up + SECONDS
        first_round = True
        while first_round or time.monotonic() < deadline:  # every fault at least once
            rng.shuffle(schedule)
            for _, fault in schedule:
                if not first_round and time.monotonic() >= deadline:
                    break
                fault()
                time.sleep(
                    rng.uniform(0.5, 3) * GAP_SCALE
                )  # the faults' timing (random), not a synchronisation
            first_round = False
        writers.stopping.set()
        faults.finish()  # the servers started again
        faulted = time.monotonic()
        writers.join(timeout=30)
        store = fresh_database
        converge("the read model to equal the store", partial(read_model_differences, store), store)
        converge("the cache to equal the store", partial(cache_differences, store, redis_url), store)
        converge("the search index to equal the store", partial(index_differences, store, search_url), store)
        with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
            wait_for(lambda: caught_up(client), timeout=60, what="the projections to report no lag")
        converged = time.monotonic()
    finally:
        writers.stopping.set()
        sampler.stopping.set()
        sampler.join(timeout=30)
        with contextlib.suppress(BaseException):
            faults.finish()
        service.stop()
        for process in [*feeder, *members]:
            process.stop()
        opensearch.start()  # for the tests after this one, whatever happened
    print(f"writes accepted {writers.accepted}, failed {writers.failed}; faults {dict(faults.done)}")
    print(
        f"set-up {set_up - began:.0f}s, faults {faulted - set_up:.0f}s,"
        f" convergence {converged - faulted:.0f}s"
    )
    print(f"sampler: {sampler.samples} samples; judged {dict(sampler.judged)}; behind {dict(sampler.behind)};"
          f" reported behind {dict(sampler.reported)}")  # fmt: skip
    print(f"sampler errors: {len(sampler.errors)} {sampler.errors[:3]}")
    assert writers.accepted > 0
    assert not sampler.false_greens, f"SOAK_SEED={SEED}\n" + "\n".join(sampler.false_greens[:20])
    assert sum(sampler.judged.values()) > 0, "the sampler judged nothing"
