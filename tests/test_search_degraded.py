"""A slow or hung search engine costs a search at most its budget (SEARCH_TIMEOUT_MS) before
PostgreSQL answers, behind a circuit breaker, and `/health/ready` answers within a second
whatever the engine does. A "hung engine" is a TCP server that accepts connections, reads
and discards what it gets and never answers; a switchable proxy in front of a real
OpenSearch node shows searches falling back during a hang and going back to the engine
after it."""

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tests.conftest import database_of_its_own
from tests.history import checkpoint, copy_events, head
from tests.support import ProjectorProcess, ServiceProcess, until, wait_for
from warriors.adapters.search_engine import EngineKind, IndexAction, SearchEngine, SearchUnavailable
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.store import EventStore
from warriors.projections.engine import ProjectionEngine
from warriors.projections.read_model import WarriorsReadModel
from warriors.readside import search_index
from warriors.readside.queries import WarriorQueries
from warriors.servers import free_port
from warriors.servers.opensearch_server import OpenSearchServer

BUDGET = 0.3  # the default SEARCH_TIMEOUT_MS
BREAKER = 1.0  # the default SEARCH_BREAKER_SECONDS
BOUND = 1.0  # the budget plus a generous margin: what a search or a readiness check may take
# Through the proxy to a real node (on a machine shared with other work), a budget a normal
# search cannot miss even when the node is busy.
PROXIED_BUDGET_MS = 500
QUERIES = "/api/v1/queries/warriors"
WARRIORS = [
    ("Miyamoto Musashi", ["Katana", "Calligraphy"]),
    ("Bruce Lee", ["Jeet Kune Do"]),
    ("Tomoe Gozen", ["Naginata"]),
]


class TcpProxy:
    """A TCP server on 127.0.0.1 forwarding every connection to `upstream`; while
    `hanging` (always, without an upstream) it reads and discards what either side sends,
    and never answers."""

    def __init__(self, upstream: tuple[str, int] | None = None) -> None:
        self.upstream = upstream
        self.hanging = upstream is None
        self.discarded = 0  # bytes read and dropped while hanging
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._start(self._accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        _shut(self._listener)  # wakes the accepting thread
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)
        for thread in self._threads:
            thread.join(timeout=5)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _keep(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            self._keep(client)
            if self.upstream is None or self.hanging:  # accepted while hanging: hung for good
                self._start(self._pump, client, None)
                continue
            try:
                upstream = self._keep(socket.create_connection(self.upstream, timeout=5))
            except OSError:
                _shut(client)
                continue
            upstream.settimeout(None)
            self._start(self._pump, client, upstream)
            self._start(self._pump, upstream, client)

    def _pump(self, source: socket.socket, target: socket.socket | None) -> None:
        try:
            while data := source.recv(65536):
                if target is None or self.hanging:
                    with self._lock:
                        self.discarded += len(data)
                    continue
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                if sock is not None:
                    _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


async def until_answers(call: Callable[[], Awaitable[Any]], wanted: Any, *, within: float, what: str) -> None:
    """Call `call` until it returns `wanted`; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while (last := await call()) != wanted:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(0.05)


async def timed(call: Awaitable[Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


@pytest.fixture
def hung_engine() -> Iterator[TcpProxy]:
    server = TcpProxy()
    yield server
    server.close()


@pytest.fixture(scope="module")
def module_database(postgres: str) -> Iterator[str]:
    """A migrated database of this module's own: only its warriors are there."""
    with database_of_its_own(postgres) as url:
        yield url


@dataclass(frozen=True)
class Degraded:
    client: httpx.Client
    engine_port: int
    database: str


@pytest.fixture(scope="module")
def degraded(module_database: str) -> Iterator[Degraded]:
    """The HTTP service with SEARCH_URL on a hung engine (default budget and breaker),
    holding WARRIORS, created through the API and projected into the read model."""
    engine = TcpProxy()
    projector = ProjectorProcess(module_database)  # the read model only (SEARCH_URL unset)
    service = ServiceProcess(module_database, free_port(), env={"SEARCH_URL": engine.url})
    try:
        with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
            for name, skills in WARRIORS:
                created = client.post(
                    "/api/v1/commands/warriors",
                    json={"name": name, "dob": "1990-01-01", "fight_skills": skills},
                )
                assert created.status_code == 202, created.text
            wait_for(lambda: checkpoint(module_database) == head(module_database), what="the read model")
            yield Degraded(client, engine.port, module_database)
    finally:
        service.stop()
        projector.stop()
        engine.close()


def get(client: httpx.Client, path: str, **params: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get(path, params=params)
    return response, time.monotonic() - started


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [warrior["name"] for warrior in response.json()]


def test_searches_answer_from_postgresql_within_the_budget(degraded: Degraded) -> None:
    expected = {"musashi": "Miyamoto Musashi", "blade": "Miyamoto Musashi", "musashy": "Miyamoto Musashi",
                "bruce": "Bruce Lee", "naginata": "Tomoe Gozen", "TOMOE": "Tomoe Gozen"}  # fmt: skip
    timings: list[float] = []
    # Past a few breaker periods: the first search and each retry after a period pay the
    # budget; the ones in between skip the engine.
    started = time.monotonic()
    while time.monotonic() - started < 3 * BREAKER:
        for term, name in expected.items():
            response, elapsed = get(degraded.client, QUERIES, term=term)
            assert names(response) == [name], term
            assert elapsed < BOUND, f"{term!r} took {elapsed:.3f}s"
            timings.append(elapsed)
    slow = [t for t in timings if t >= BUDGET * 0.8]
    assert 1 <= len(slow) <= 5, f"{len(slow)} of {len(timings)} searches waited on the engine"
    assert len(timings) > 2 * len(slow)  # most skipped it (the breaker)

    # A search with ?position= (read-your-writes) asks the engine whether it answers, then
    # waits for the read model: still within the bound, and it finds the new warrior.
    created = degraded.client.post(
        "/api/v1/commands/warriors",
        json={"name": "Sanada Yukimura", "dob": "1567-01-01", "fight_skills": ["Yari"]},
    )
    assert created.status_code == 202, created.text
    position = int(created.json()["position"])
    wait_for(lambda: checkpoint(degraded.database) >= position, what="the read model")
    response, elapsed = get(degraded.client, QUERIES, term="yukimura", position=str(position))
    assert names(response) == ["Sanada Yukimura"]
    assert elapsed < BOUND


def test_suggest_falls_back_within_the_budget(degraded: Degraded) -> None:
    for prefix, suggestions in [("miy", ["Miyamoto Musashi"]), ("TOM", ["Tomoe Gozen"]), ("zz", [])]:
        response, elapsed = get(degraded.client, f"{QUERIES}/suggest", prefix=prefix)
        assert response.status_code == 200, response.text
        assert response.json() == {"suggestions": suggestions}
        assert elapsed < BOUND, f"{prefix!r} took {elapsed:.3f}s"


def test_ready_is_degraded_within_a_second(degraded: Degraded) -> None:
    def search_check() -> str:
        response, elapsed = get(degraded.client, "/health/ready")
        assert elapsed < BOUND, f"/health/ready took {elapsed:.3f}s"
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "degraded"
        assert body["checks"]["database"] == "ok"
        search = body["checks"]["search"]
        assert search.startswith("degraded:"), search
        assert search.endswith("; searching PostgreSQL"), search
        assert str(degraded.engine_port) not in search  # no address in it
        return str(search)

    # Whenever the breaker lets a check through, it asks the engine and runs out of its
    # budget; the check right after finds the breaker open.
    deadline = time.monotonic() + 10
    while "no answer within 300 ms" not in search_check():
        assert time.monotonic() < deadline, "no readiness check waited on the hung engine"
        time.sleep(0.05)  # the poll interval while the breaker is open
    assert (
        search_check() == "degraded: opensearch: failed a moment ago; not retried yet; searching PostgreSQL"
    )


def test_ready_answers_within_a_second_whatever_the_budget(
    module_database: str, hung_engine: TcpProxy
) -> None:
    """A budget longer than a readiness check, and a hung Redis too: still within 1 s."""
    hung_redis = TcpProxy()
    env = {
        "SEARCH_URL": hung_engine.url,
        "SEARCH_TIMEOUT_MS": "5000",
        "REDIS_URL": f"redis://127.0.0.1:{hung_redis.port}/0",
    }
    service = ServiceProcess(module_database, free_port(), env=env)
    try:
        with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
            for _ in range(3):  # a check still running is waited on again, not started anew
                response, elapsed = get(client, "/health/ready")
                assert elapsed < BOUND, f"/health/ready took {elapsed:.3f}s"
                assert response.status_code == 200, response.text
                checks = response.json()["checks"]
                assert checks["database"] == "ok"
                assert (
                    checks["search"] == "degraded: opensearch: no answer within 750 ms; searching PostgreSQL"
                )
                assert checks["redis"].startswith("degraded: redis:")
    finally:
        service.stop()
        hung_redis.close()


@pytest.mark.parametrize("kind", list(EngineKind))
async def test_a_hung_engine_costs_a_query_its_budget_then_nothing(
    hung_engine: TcpProxy, kind: EngineKind
) -> None:
    engine = SearchEngine(hung_engine.url, kind, query_timeout_ms=300, breaker_seconds=BREAKER)
    body = search_index.search_body("musashi", 10)
    try:
        started = time.monotonic()
        with pytest.raises(SearchUnavailable, match="no answer within 300 ms"):
            await engine.search(body)
        assert BUDGET * 0.9 < time.monotonic() - started < BOUND
        assert engine.breaker_open
        received = hung_engine.discarded
        for call in (engine.search(body), engine.suggest(search_index.suggest_body("mu", 10)), engine.ping()):
            started = time.monotonic()
            with pytest.raises(SearchUnavailable, match="not retried yet"):
                await call
            assert time.monotonic() - started < 0.05
        assert hung_engine.discarded == received  # nothing was sent while the breaker was open
    finally:
        await engine.close()


@pytest.fixture
async def database_pool(fresh_database: str) -> AsyncIterator[AsyncConnectionPool[AsyncConnection]]:
    """The read model holds WARRIORS; the engine's index will hold other names for them."""
    created = [{"name": name, "dob": "1990-01-01", "fight_skills": skills} for name, skills in WARRIORS]
    copy_events(fresh_database, [(uuid.uuid4(), "WarriorCreated", 1, data) for data in created])
    async with AsyncConnectionPool(
        fresh_database, min_size=1, max_size=8, kwargs={"autocommit": True}
    ) as pool:
        await (projection := ProjectionEngine(pool, WarriorsReadModel())).register()
        assert await projection.catch_up() == len(WARRIORS)
        yield pool


def indexed(name: str, version: int = 1) -> IndexAction:
    """A document only the engine has: its name tells which side answered."""
    warrior_id = str(uuid.uuid4())
    at = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    return IndexAction(warrior_id, version, {"id": warrior_id, "name": name, "dob": "1990-01-01",
                                             "fight_skills": ["Naginata"], "version": version,
                                             "created_at": at, "updated_at": at})  # fmt: skip


async def test_searches_fall_back_during_a_hang_and_go_back_to_the_engine_after_it(
    search_engine: SearchEngine,
    opensearch: OpenSearchServer,
    database_pool: AsyncConnectionPool[AsyncConnection],
) -> None:
    index = await search_engine.ensure_alias()
    await search_engine.write(index, [indexed("Tomoe Gozen (indexed)")], refresh=True)
    upstream = urlsplit(opensearch.url())
    proxy = TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 9200))
    engine = SearchEngine(
        proxy.url, EngineKind.OPENSEARCH, query_timeout_ms=PROXIED_BUDGET_MS, breaker_seconds=BREAKER
    )
    queries = WarriorQueries(database_pool, EventStore(database_pool, GroupCommitAppender(database_pool)),
                             search_engine=engine)  # fmt: skip

    async def found(term: str = "tomoe") -> list[str]:
        return [w.name for w in await queries.search(term)]

    async def sorted_names(names: Awaitable[list[str]]) -> list[str]:
        return sorted(await names)

    try:
        # Through the proxy, the engine answers (the first searches may warm a cold node).
        await until_answers(found, ["Tomoe Gozen (indexed)"], within=60, what="the engine through the proxy")

        proxy.hanging = True
        # More searches at once than the client's connection pool holds (10): each is cut
        # at the budget, waiting for a connection or for an answer, and PostgreSQL answers.
        results = await asyncio.gather(*(timed(found()) for _ in range(20)))
        assert all(result == ["Tomoe Gozen"] for result, _ in results)
        assert max(elapsed for _, elapsed in results) < BOUND
        assert engine.breaker_open
        received = proxy.discarded
        assert await found() == ["Tomoe Gozen"]
        assert proxy.discarded == received  # the breaker: the engine was not asked

        # After the breaker period one query tries the engine again; the others meanwhile
        # fail at once.
        await until(lambda: not engine.breaker_open, within=5 * BREAKER, what="the breaker period")
        body = search_index.search_body("tomoe", 10)
        outcomes = await asyncio.gather(*(engine.search(body) for _ in range(5)), return_exceptions=True)
        messages = sorted(str(outcome) for outcome in outcomes)
        assert all(isinstance(outcome, SearchUnavailable) for outcome in outcomes), messages
        assert sum(f"no answer within {PROXIED_BUDGET_MS} ms" in m for m in messages) == 1, messages
        assert sum("not retried yet" in m for m in messages) == 4, messages

        # The engine is back. The breaker holds queries back, not the projection's writes.
        proxy.hanging = False
        assert engine.breaker_open
        await engine.write(
            search_index.ALIAS, [indexed("Tomoe Gozen (written during the breaker)")], refresh=True
        )
        assert await engine.count() == 2

        # Once the breaker period is over, searches go back to the engine.
        everything = ["Tomoe Gozen (indexed)", "Tomoe Gozen (written during the breaker)"]
        await until_answers(lambda: sorted_names(found()), everything, within=30, what="the engine again")
        assert not engine.breaker_open
        # The time-outs left the client's connection pool (10 connections) sound: more
        # searches at once than it holds all reach the engine.
        results = await asyncio.gather(*(sorted_names(found()) for _ in range(15)))
        assert results == [everything] * 15
        assert not engine.breaker_open
    finally:
        await engine.close()
        proxy.close()
