"""The command service (Write API)."""

from fastapi import FastAPI

from api.command.routes import router
from api.common.service import build_service
from warriors.config import Settings

DESCRIPTION = """Commands on warriors. Every accepted command answers **202** with the
warrior's id, new version and the event's position in the global stream; the
`Location` header points at the read model. Errors are `application/problem+json`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_service(
        title="Warriors command service", description=DESCRIPTION, service="command",
        routers=[router], settings=settings,
    )  # fmt: skip
