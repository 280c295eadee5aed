"""The single HTTP entry point (default http://127.0.0.1:8000).

Routes `/api/v1/commands/*` to the command service's routes and `/api/v1/queries/*` to the
query service's, as nginx does in the full stack, in one process per worker (one pool,
one set of resources) rather than a proxy hop. Health, metrics and OpenAPI cover both.
Unless `COMPAT_ROUTES=false`, it also serves the load test's own routes (`api/compat`).
"""

from fastapi import FastAPI

from api.command.routes import router as command_router
from api.common.service import build_service
from api.compat.routes import router as compat_router
from api.query.routes import router as query_router
from warriors.config import Settings, get_settings

DESCRIPTION = """The warriors platform: commands (`/api/v1/commands`) and queries
(`/api/v1/queries`); with `COMPAT_ROUTES` on, also a load test's own routes (tag `compat`).
Errors are `application/problem+json`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Absent (404) when COMPAT_ROUTES=false, as production should run.
    compat = [compat_router] if settings.compat_routes else []
    return build_service(
        title="Warriors platform", description=DESCRIPTION, service="gateway",
        routers=[command_router, query_router, *compat], settings=settings,
    )  # fmt: skip
