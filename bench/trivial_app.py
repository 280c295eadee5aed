"""The framework's ceiling: the same ASGI server and worker count answering a trivial
JSON endpoint that reads the same request body, with no validation and no database."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.responses import Response

from api.common.runtime import tune_garbage_collector


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    tune_garbage_collector()  # the same process tuning as the services
    yield


def create_app() -> FastAPI:
    app = FastAPI(lifespan=_lifespan, telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.post("/api/v1/commands/warriors")
    async def trivial(request: Request) -> Response:
        await request.body()
        return Response(b'{"ok":true}', status_code=202, media_type="application/json")

    @app.get("/ping")
    async def ping() -> Response:
        return Response(b'{"ok":true}', media_type="application/json")

    return app
