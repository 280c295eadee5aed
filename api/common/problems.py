"""RFC 9457 problem details: every error any service answers, built in one place."""

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import Response

from warriors.application.warrior_commands import ConcurrencyConflict, IdempotencyKeyReused
from warriors.domain.errors import InvalidCommand, VersionMismatch, WarriorNotFound
from warriors.eventstore.errors import StoreUnavailable
from warriors.readside.queries import ReadModelBehind, UnknownPosition

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("warriors.api")


class ProblemField(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """The body of every error answer (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[ProblemField] | None = None


class BadRequest(Exception):
    """The request cannot be understood (unparseable body, malformed header): 400."""


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Map every error the services know to its problem answer; anything else is a 500
    without a stack trace (the trace goes to the log)."""

    def on(exc_type: type[Exception], status: int, title: str) -> None:
        async def handler(request: Request, exc: Exception) -> Response:
            headers = {"Retry-After": "1"} if status == 503 else None
            return problem(status, title, str(exc), instance=request.url.path, headers=headers)

        app.add_exception_handler(exc_type, handler)

    on(BadRequest, 400, "Bad request")
    on(WarriorNotFound, 404, "Warrior not found")
    on(VersionMismatch, 409, "Version conflict")
    on(ConcurrencyConflict, 409, "Concurrent modification")
    on(IdempotencyKeyReused, 409, "Idempotency key reused")
    on(StoreUnavailable, 503, "Service unavailable")
    on(ReadModelBehind, 503, "Read model behind")
    on(UnknownPosition, 422, "Unknown position")

    async def invalid_command(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidCommand)
        errors = [{"field": e.field, "message": e.message} for e in exc.errors]
        return problem(422, "Invalid warrior", str(exc), instance=request.url.path, errors=errors)

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": ".".join(str(part) for part in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]}
            for e in exc.errors()
        ]
        return problem(422, "Invalid request", "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                       instance=request.url.path, errors=errors)  # fmt: skip

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem(exc.status_code, str(exc.detail), instance=request.url.path, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "Internal server error", "The error was logged.", instance=request.url.path)

    app.add_exception_handler(InvalidCommand, invalid_command)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": text}
    for status, text in {
        400: "The body is not a JSON object, or a header is malformed.",
        404: "No such warrior (or it was deleted).",
        409: "If-Match names another version, or the Idempotency-Key was used for another request.",
        413: "The body is larger than MAX_BODY_BYTES.",
        422: "Invalid fields; `errors` names each one.",
        503: "The database is unavailable; retry after the Retry-After seconds.",
    }.items()
}
