"""Endpoints every service has: `/health/live`, `/health/ready` and `/metrics`."""

import contextlib
import os
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.responses import JSONResponse, Response

from api.common.access import Access, GuardedRoute, Unauthenticated, requires
from api.common.key_guesses import TooManyUnknownKeys
from api.common.problems import PROBLEM_RESPONSES
from warriors.eventstore.errors import StoreUnavailable
from warriors.projections.gauges import set_projection_gauges
from warriors.readside.queries import WarriorQueries
from warriors.security.identity import Role

ReadyCheck = Callable[[], Awaitable[dict[str, str]]]


DEGRADED = "degraded:"


def operations_router(ready_check: ReadyCheck) -> APIRouter:
    """`ready_check` returns {dependency: "ok" | "degraded: ..." | error text}. Any error
    makes ready 503; a degraded dependency (Redis: the service answers from PostgreSQL)
    keeps it 200, with status "degraded"."""
    router = APIRouter(tags=["operations"], route_class=GuardedRoute)

    @router.get("/health/live", summary="The process is up")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/health/ready",
        summary="Dependencies answer",
        responses={503: {"description": "A dependency is down; the body says which."}},
    )
    async def ready(request: Request) -> Response:
        """Each check says ok, degraded or unavailable; a monitor's or an operator's key also
        gets what went wrong (driver messages name hosts and socket paths: not for anyone)."""
        checks = await ready_check()
        states = {name: _state(check) for name, check in checks.items()}
        down = "unavailable" in states.values()
        status = "unavailable" if down else "degraded" if "degraded" in states.values() else "ok"
        shown = checks if await _is_monitor(request) else states
        return JSONResponse({"status": status, "checks": shown}, status_code=503 if down else 200)

    @router.get(
        "/metrics", summary="Prometheus metrics (monitor or operator)", response_class=Response,
        openapi_extra=requires(Role.MONITOR),
        responses={status: PROBLEM_RESPONSES[status] for status in (401, 403)},
    )  # fmt: skip
    async def metrics(request: Request) -> Response:
        """The HTTP metrics, the projector's and Dagster runs' counters, and the lag and
        parked gauges, read from PostgreSQL now (warriors/metrics.py)."""
        queries: WarriorQueries = request.app.state.queries
        with contextlib.suppress(StoreUnavailable):  # the gauges keep their last values
            set_projection_gauges(await queries.statuses())
        return Response(_exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


def _state(check: str) -> str:
    return check if check == "ok" else "degraded" if check.startswith(DEGRADED) else "unavailable"


async def _is_monitor(request: Request) -> bool:
    access: Access = request.app.state.access
    try:
        return (await access.identify(request)).allows(Role.MONITOR)
    except (Unauthenticated, TooManyUnknownKeys, StoreUnavailable):  # readiness answers anyone
        return False


def _exposition() -> bytes:
    # With several worker processes each keeps its own counters; prometheus_client's
    # multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `warriors run`) adds them up.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
