"""Building a service: its resources' lifespan, error handling, middleware and routers.

The command service, the query service and the gateway (both behind one port) are the
same assembly with different routers.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from api.command.openapi import refresh_dates
from api.common.access import SECURITY_SCHEMES, Access
from api.common.admission import Admission, Limit
from api.common.middleware import EdgeMiddleware
from api.common.operations import DEGRADED, operations_router
from api.common.problems import install_problem_handlers
from api.common.runtime import tune_garbage_collector
from warriors.adapters.redis_cache import CacheUnavailable, RedisReadModels
from warriors.adapters.search_engine import SearchEngine, SearchRejected, SearchUnavailable
from warriors.application.warrior_commands import WarriorCommands
from warriors.config import Settings, get_settings
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.database import create_pool
from warriors.eventstore.errors import StoreUnavailable
from warriors.eventstore.store import EventStore
from warriors.logs import configure_logging
from warriors.projections.catalog import search_engine
from warriors.projections.inline import INLINE_CREATIONS
from warriors.readside.answer_cache import AnswerCache
from warriors.readside.queries import WarriorQueries
from warriors.readside.vocabulary import Vocabulary, VocabularyListener
from warriors.security.master_key import require_master_key
from warriors.tracing import setup_tracing

# Each readiness check's bound: /health/ready answers within a second whatever a
# dependency does (they run at once).
READY_CHECK_SECONDS = 0.75
_NO_ANSWER = f"no answer within {round(READY_CHECK_SECONDS * 1000)} ms"


def build_service(
    *,
    title: str,
    description: str,
    service: str,
    routers: Sequence[APIRouter],
    settings: Settings | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; start the platform with `make run`.")
    require_master_key()  # MasterKeyMissing says what to set: no service without it
    configure_logging(settings.log_format, settings.log_level, service)
    setup_tracing(settings.otel_exporter_otlp_endpoint, service)
    database_url = settings.database_url
    # Readiness checks still running, by dependency (see `ready`).
    checking: dict[str, asyncio.Task[str]] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = create_pool(settings, database_url)
        # Do not block start-up on the database: the service answers 503 until it is up.
        await pool.open(wait=False)
        # Creations write their read-model row inline unless Kafka feeds the read model.
        inline = settings.inline_read_model and not settings.kafka_bootstrap_servers
        appender = GroupCommitAppender(
            pool,
            max_batch=settings.append_max_batch,
            max_flushes=settings.append_max_flushes,
            inline=INLINE_CREATIONS if inline else None,
            # Nothing but the read model follows the store (no index, no cache): its live
            # projector needs no wake-up for rows already written; it polls, and a reader
            # waiting on a position wakes it (WarriorQueries.wait_for).
            quiet_inline=not (settings.search_url or settings.redis_url),
        )
        store = EventStore(pool, appender)
        cache = (
            RedisReadModels(
                settings.redis_url, settings.cache_ttl_seconds, settings.cache_count_fresh_seconds
            )
            if settings.redis_url
            else None
        )
        engine = search_engine() if settings.search_url else None
        app.state.store = store
        app.state.cache = cache
        app.state.search_engine = engine
        app.state.commands = WarriorCommands(store)
        # The vocabulary answers terms that match nothing on PostgreSQL's search only.
        in_worker = engine is None and settings.search_vocabulary_in_worker
        vocabulary = VocabularyListener(database_url, Vocabulary()) if in_worker else None
        if vocabulary is not None:
            vocabulary.start()
        app.state.queries = WarriorQueries(
            pool, store, cache, engine, fed_by_kafka=bool(settings.kafka_bootstrap_servers),
            vocabulary=vocabulary.vocabulary if vocabulary else None,
        )  # fmt: skip
        app.state.settings = settings
        app.state.access = Access(pool, settings)
        app.state.answers = AnswerCache(settings.search_cache_seconds, settings.search_cache_entries)
        tune_garbage_collector()
        try:
            yield
        finally:
            for task in checking.values():
                task.cancel()
            if vocabulary is not None:
                await vocabulary.stop()
            await appender.drain()
            await pool.close()
            if cache is not None:
                await cache.close()
            if engine is not None:
                await engine.close()

    async def ready() -> dict[str, str]:
        """The dependencies' checks, run at once, each given READY_CHECK_SECONDS. A check
        still running then is reported as not answering and left to finish on its own
        (each is bounded: the pool's time-out, Redis' socket time-outs, the search budget),
        never cancelled: a cancellation landing inside a driver's connection pool is
        where pools lose connections. A later call waits on the same check rather than
        starting another, so a hung dependency never piles checks up."""
        state = app.state
        # {dependency: (its check, what to say when it has not answered in time)}
        wanted: dict[str, tuple[Callable[[], Coroutine[Any, Any, str]], str]] = {}
        wanted["database"] = (
            lambda: _database_check(state.store),
            f"the event store is unavailable: {_NO_ANSWER}",
        )
        if state.cache is not None:
            wanted["redis"] = (
                lambda: _redis_check(state.cache),
                f"{DEGRADED} redis: {_NO_ANSWER}; answering from PostgreSQL",
            )
        if state.search_engine is not None:
            wanted["search"] = (
                lambda: _search_check(state.search_engine),
                f"{DEGRADED} {state.search_engine.kind}: {_NO_ANSWER}; searching PostgreSQL",
            )
        for name, (check, _) in wanted.items():
            if name not in checking or checking[name].done():
                checking[name] = _background(check())
        await asyncio.wait([checking[name] for name in wanted], timeout=READY_CHECK_SECONDS)
        return {
            name: checking[name].result() if checking[name].done() else no_answer
            for name, (_, no_answer) in wanted.items()
        }

    app = FastAPI(
        title=title,
        version="1.0.0",
        description=description,
        lifespan=lifespan,
        # Prometheus (/metrics) is this platform's telemetry; FastAPI's own OpenTelemetry
        # hooks cost CPU on every request even unconfigured, so they are switched off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    # The routes go straight onto the app's router: since FastAPI 0.137 include_router()
    # nests each router, and matching a request then walked every nested route through
    # per-request context bookkeeping, 45% of the CPU of a /health/live (see
    # docs/benchmarks.md, "As deployed"). The routers declare their full prefixes, tags and
    # responses themselves, so nothing that include_router() would add is lost.
    for router in [*routers, operations_router(ready)]:
        app.router.routes.extend(router.routes)
    _document_security(app)
    queue, budget = settings.admission_queue, settings.admission_queue_seconds
    admission = Admission(
        reads=Limit("read", settings.admission_reads_in_flight, queue, budget),
        writes=Limit("write", settings.admission_writes_in_flight, queue, budget),
    )
    app.add_middleware(
        EdgeMiddleware, service=service, max_body_bytes=settings.max_body_bytes,
        allowed_hosts=settings.allowed_host_names(), admission=admission,
    )  # fmt: skip
    return app


def _document_security(app: FastAPI) -> None:
    """Name the API-key schemes the routes' `security` refers to (api/common/access.py)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if refresh_dates():  # a new day: the dob pattern moved, build the document again
            app.openapi_schema = None
        if app.openapi_schema is None:  # build() fills it
            build().setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


async def _database_check(store: EventStore) -> str:
    try:
        await store.ping()
    except StoreUnavailable as exc:
        return str(exc)
    return "ok"


async def _redis_check(cache: RedisReadModels) -> str:
    try:
        await cache.ping()
    except CacheUnavailable as exc:  # reads go on from PostgreSQL: degraded, not down
        return f"{DEGRADED} {exc}; answering from PostgreSQL"
    return "ok"


async def _search_check(engine: SearchEngine) -> str:
    try:
        await engine.ping()  # a query: its budget and breaker
    except (SearchUnavailable, SearchRejected) as exc:  # search goes on on PostgreSQL
        return f"{DEGRADED} {exc}; searching PostgreSQL"
    return "ok"


def _background(check: Coroutine[Any, Any, str]) -> "asyncio.Task[str]":
    task = asyncio.create_task(check)
    # Its outcome may never be read (it outlived the request that started it).
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task
