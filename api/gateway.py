"""The single HTTP entry point (default http://127.0.0.1:8000).

Routes `/api/v1/commands/*` to the command service's routes and `/api/v1/queries/*` to the
query service's, as nginx does in the full stack, in one process per worker (one pool,
one set of resources) rather than a proxy hop. Health, metrics and OpenAPI cover both.
"""

from fastapi import FastAPI

from api.command.routes import router as command_router
from api.common.service import build_service
from api.query.routes import router as query_router

DESCRIPTION = """The warriors platform: commands (`/api/v1/commands`) and queries
(`/api/v1/queries`). Errors are `application/problem+json`."""


def create_app() -> FastAPI:
    return build_service(
        title="Warriors platform", description=DESCRIPTION, service="gateway",
        routers=[command_router, query_router],
    )  # fmt: skip
