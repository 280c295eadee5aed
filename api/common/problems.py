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
from starlette.routing import Match

from api.common.access import Forbidden, Unauthenticated
from api.common.key_guesses import TooManyUnknownKeys
from warriors.application.warrior_commands import ConcurrencyConflict, IdempotencyKeyReused
from warriors.domain.errors import InvalidCommand, VersionMismatch, WarriorNotFound
from warriors.eventstore.errors import StoreUnavailable
from warriors.readside.queries import ReadModelBehind, UnknownPosition

PROBLEM_JSON = "application/problem+json"
# Headers that go with an answer's status: how to authenticate, when to retry.
_HEADERS = {401: {"WWW-Authenticate": 'Bearer realm="warriors"'}, 503: {"Retry-After": "1"}}
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


class UnsupportedMediaType(Exception):
    """A body that is not sent as JSON (another Content-Type, or none): 415."""


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


def allowed_methods(request: Request) -> str:
    """The `Allow` of a 405: the methods of every route with the request's path. Starlette's
    own names only the first such route's (`PATCH` where DELETE is allowed too), and RFC
    9110 (15.5.6) wants the resource's; found by the fuzzing (tests/test_fuzz_api.py)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods.update(route_methods)
    return ", ".join(sorted(methods))


def install_problem_handlers(app: FastAPI) -> None:
    """Map every error the services know to its problem answer; anything else is a 500
    without a stack trace (the trace goes to the log)."""

    def on(exc_type: type[Exception], status: int, title: str, detail: str | None = None) -> None:
        """`detail`: say this instead of the error's own text (which goes to the log)."""
        headers = _HEADERS.get(status)

        async def handler(request: Request, exc: Exception) -> Response:
            if detail is not None:
                log.warning("%s %s: %s", request.method, request.url.path, exc)
            said = detail if detail is not None else str(exc)
            return problem(status, title, said, instance=request.url.path, headers=headers)

        app.add_exception_handler(exc_type, handler)

    on(BadRequest, 400, "Bad request")
    on(UnsupportedMediaType, 415, "Unsupported media type")
    on(Unauthenticated, 401, "Unauthorized")
    on(Forbidden, 403, "Forbidden")
    on(WarriorNotFound, 404, "Warrior not found")
    on(VersionMismatch, 409, "Version conflict")
    on(ConcurrencyConflict, 409, "Concurrent modification")
    on(IdempotencyKeyReused, 409, "Idempotency key reused")
    # The driver's message names hosts and socket paths: it is logged, not answered.
    on(StoreUnavailable, 503, "Service unavailable", "The database is not answering; retry later.")
    on(ReadModelBehind, 503, "Read model behind")
    # 404, not 422: the request is well formed (the document cannot know the head), the
    # event it names is what does not exist (yet: a position past the head may come).
    on(UnknownPosition, 404, "Unknown position")

    async def too_many_unknown_keys(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TooManyUnknownKeys)
        headers = {"Retry-After": str(exc.retry_after)}
        return problem(429, "Too many requests", str(exc), instance=request.url.path, headers=headers)

    app.add_exception_handler(TooManyUnknownKeys, too_many_unknown_keys)

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
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return problem(exc.status_code, str(exc.detail), instance=request.url.path, headers=headers)

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
        401: "No API key, or one that is unknown or revoked (`WWW-Authenticate: Bearer`).",
        403: "The API key's role is not enough for this.",
        404: "No such warrior (or it was deleted); with `position`: no event has that position.",
        409: "If-Match names another version, or the Idempotency-Key was used for another request.",
        413: "The body is larger than MAX_BODY_BYTES.",
        415: "The body is not sent as JSON: Content-Type must be application/json (or application/*+json).",
        422: "Invalid fields; `errors` names each one.",
        503: "The database is unavailable; retry after the Retry-After seconds.",
    }.items()
}
