"""The query service (Read API)."""

from fastapi import FastAPI

from api.common.service import build_service
from api.query.routes import router
from warriors.config import Settings

DESCRIPTION = """Reads of warriors: by id (always as new as the last accepted command), search,
count, suggestions, history, statistics and the projections' status. Errors are
`application/problem+json`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_service(
        title="Warriors query service", description=DESCRIPTION, service="query",
        routers=[router], settings=settings,
    )  # fmt: skip
