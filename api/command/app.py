"""The command service: FastAPI app factory with its resources' lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.command.routes import router
from api.common.middleware import BodyLimit, CorrelationAndMetrics
from api.common.operations import operations_router
from api.common.problems import install_problem_handlers
from api.common.runtime import tune_garbage_collector
from warriors.application.warrior_commands import WarriorCommands
from warriors.config import Settings, get_settings
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.database import create_pool
from warriors.eventstore.errors import StoreUnavailable
from warriors.eventstore.store import EventStore

DESCRIPTION = """Commands on warriors. Every accepted command answers **202** with the
warrior's id, new version and the event's position in the global stream; the
`Location` header points at the read model. Errors are `application/problem+json`."""


def create_app(settings: Settings | None = None) -> FastAPI:
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
        app.state.store = store
        app.state.commands = WarriorCommands(store)
        tune_garbage_collector()
        try:
            yield
        finally:
            await appender.drain()
            await pool.close()

    async def ready() -> dict[str, str]:
        try:
            await app.state.store.ping()
        except StoreUnavailable as exc:
            return {"database": str(exc)}
        return {"database": "ok"}

    app = FastAPI(
        title="Warriors command service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Prometheus (/metrics) is this platform's telemetry; FastAPI's own OpenTelemetry
        # hooks cost CPU on every request even unconfigured, so they are switched off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    app.include_router(router)
    app.include_router(operations_router(ready))
    app.add_middleware(CorrelationAndMetrics, service="command")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
