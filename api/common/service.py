"""Building a service: its resources' lifespan, error handling, middleware and routers.

The command service, the query service and the gateway (both behind one port) are the
same assembly with different routers.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from api.common.middleware import EdgeMiddleware
from api.common.operations import DEGRADED, operations_router
from api.common.problems import install_problem_handlers
from api.common.runtime import tune_garbage_collector
from warriors.adapters.redis_cache import CacheUnavailable, RedisReadModels
from warriors.adapters.search_engine import SearchUnavailable
from warriors.application.warrior_commands import WarriorCommands
from warriors.config import Settings, get_settings
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.database import create_pool
from warriors.eventstore.errors import StoreUnavailable
from warriors.eventstore.store import EventStore
from warriors.projections.catalog import search_engine
from warriors.readside.queries import WarriorQueries


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
    database_url = settings.database_url

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = create_pool(settings, database_url)
        # Do not block start-up on the database: the service answers 503 until it is up.
        await pool.open(wait=False)
        appender = GroupCommitAppender(
            pool, max_batch=settings.append_max_batch, max_flushes=settings.append_max_flushes
        )
        store = EventStore(pool, appender)
        cache = (
            RedisReadModels(settings.redis_url, settings.cache_ttl_seconds) if settings.redis_url else None
        )
        engine = search_engine() if settings.search_url else None
        app.state.store = store
        app.state.cache = cache
        app.state.search_engine = engine
        app.state.commands = WarriorCommands(store)
        app.state.queries = WarriorQueries(
            pool, store, cache, engine, fed_by_kafka=bool(settings.kafka_bootstrap_servers)
        )
        app.state.settings = settings
        tune_garbage_collector()
        try:
            yield
        finally:
            await appender.drain()
            await pool.close()
            if cache is not None:
                await cache.close()
            if engine is not None:
                await engine.close()

    async def ready() -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            await app.state.store.ping()
            checks["database"] = "ok"
        except StoreUnavailable as exc:
            checks["database"] = str(exc)
        if app.state.cache is not None:
            try:
                await app.state.cache.ping()
                checks["redis"] = "ok"
            except CacheUnavailable as exc:  # reads go on from PostgreSQL: degraded, not down
                checks["redis"] = f"{DEGRADED} {exc}; answering from PostgreSQL"
        if app.state.search_engine is not None:
            try:
                await app.state.search_engine.ping()
                checks["search"] = "ok"
            except SearchUnavailable as exc:  # search goes on on PostgreSQL
                checks["search"] = f"{DEGRADED} {exc}; searching PostgreSQL"
        return checks

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
    for router in routers:
        app.include_router(router)
    app.include_router(operations_router(ready))
    app.add_middleware(EdgeMiddleware, service=service, max_body_bytes=settings.max_body_bytes)
    return app
