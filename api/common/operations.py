"""Endpoints every service has: `/health/live`, `/health/ready` and `/metrics`."""

import os
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.responses import JSONResponse, Response

ReadyCheck = Callable[[], Awaitable[dict[str, str]]]


def operations_router(ready_check: ReadyCheck) -> APIRouter:
    """`ready_check` returns {dependency: "ok" | error text}; any error makes ready 503."""
    router = APIRouter(tags=["operations"])

    @router.get("/health/live", summary="The process is up")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/health/ready",
        summary="Dependencies answer",
        responses={503: {"description": "A dependency is down; the body says which."}},
    )
    async def ready() -> Response:
        checks = await ready_check()
        healthy = all(state == "ok" for state in checks.values())
        body = {"status": "ok" if healthy else "unavailable", "checks": checks}
        return JSONResponse(body, status_code=200 if healthy else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(_exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


def _exposition() -> bytes:
    # With several worker processes each keeps its own counters; prometheus_client's
    # multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `warriors run`) adds them up.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
