"""Endpoints every service has: `/health/live`, `/health/ready` and `/metrics`."""

import os
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.responses import JSONResponse, Response

from api.common.routing import PrefixCheckedRoute

ReadyCheck = Callable[[], Awaitable[dict[str, str]]]


DEGRADED = "degraded:"


def operations_router(ready_check: ReadyCheck) -> APIRouter:
    """`ready_check` returns {dependency: "ok" | "degraded: ..." | error text}. Any error
    makes ready 503; a degraded dependency (Redis: the service answers from PostgreSQL)
    keeps it 200, with status "degraded"."""
    router = APIRouter(tags=["operations"], route_class=PrefixCheckedRoute)

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
        down = [name for name, state in checks.items() if state != "ok" and not state.startswith(DEGRADED)]
        degraded = any(state.startswith(DEGRADED) for state in checks.values())
        status = "unavailable" if down else "degraded" if degraded else "ok"
        return JSONResponse({"status": status, "checks": checks}, status_code=503 if down else 200)

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
