"""The routes of the public "Rinha"-style stress test, so it runs against the platform
unmodified (GitHub issue 10). Thin: each route calls the helper its `/api/v1` counterpart
calls and only shapes the answer the way the test expects.

- `POST /warrior`: `POST /api/v1/commands/warriors`, answered 201 with `Location: /warrior/{id}`;
- `GET /warrior/{id}`: `GET /api/v1/queries/warriors/{id}`, but 404 (not 422) for a malformed id;
- `GET /warrior?t=`: `GET /api/v1/queries/warriors?term=`, but 400 without a (non-blank) `t`;
- `GET /counting-warriors`: `GET /api/v1/queries/warriors/count`'s count as `text/plain` digits.

Served unless `COMPAT_ROUTES=false` (api/gateway.py).
"""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from starlette.responses import PlainTextResponse, Response

from api.command.openapi import NOT_BLANK, AcceptedBody
from api.command.routes import CREATE_OPENAPI, accepted_response, create_from_request
from api.common.access import GuardedRoute, requires
from api.common.problems import PROBLEM_RESPONSES, BadRequest, problem
from api.query.routes import READ, TERM_MAX_LENGTH, found_warriors, warrior_count, warrior_response
from warriors.readside.search_index import MAX_RESULTS
from warriors.security.identity import Role

WARRIOR_PATH = "/warrior"
COUNT_PATH = "/counting-warriors"

router = APIRouter(tags=["compat"], route_class=GuardedRoute)


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: PROBLEM_RESPONSES[status] for status in statuses}


@router.post(
    WARRIOR_PATH, status_code=201, summary="Create a warrior (load-test route)",
    openapi_extra={**CREATE_OPENAPI, **requires(Role.WRITER, unless="compat_open_writes")},
    responses={
        201: {"model": AcceptedBody, "description": "Stored; the Location answers it at once."},
        **_problems(400, 401, 403, 409, 413, 415, 422, 503),
    },
)  # fmt: skip
async def create_warrior(request: Request) -> Response:
    """`POST /api/v1/commands/warriors`'s command (same body, rules, headers and
    idempotency), answered **201 Created**: the event is stored once the append returns,
    and `GET /warrior/{id}` answers it at once (with INLINE_READ_MODEL, its row is written
    with its event; otherwise it is folded from its events until the projector has it)."""
    result = await create_from_request(request)
    return accepted_response(result, f"{WARRIOR_PATH}/{result.warrior_id}", status_code=201)


@router.get(
    WARRIOR_PATH + "/{warrior_id}", summary="One warrior (load-test route)",
    responses=_problems(401, 403, 404, 503), openapi_extra=READ,
)  # fmt: skip
async def get_warrior(warrior_id: str, request: Request) -> Response:
    """`GET /api/v1/queries/warriors/{id}`: the warrior, 404 if unknown or deleted."""
    try:
        parsed = UUID(warrior_id)
    except ValueError:
        # 404, where the platform answers 422: the test treats an id as an opaque string
        # (the one its Location header gave), so a string that is not an id of ours names
        # no warrior, which is "not found" in its contract.
        return problem(
            404, "Warrior not found", "No warrior has this id (not a UUID).", instance=request.url.path
        )
    return await warrior_response(request, parsed)


# `t` is required, but its absence answers 400 (the test's contract), not the 422 FastAPI
# gives a missing required parameter: it is declared optional and documented by hand.
_TERM = {
    "name": "t", "in": "query", "required": True, "description": "Search term (not blank).",
    "schema": {"type": "string", "minLength": 1, "maxLength": TERM_MAX_LENGTH, "pattern": NOT_BLANK},
}  # fmt: skip


@router.get(
    WARRIOR_PATH, summary="Search warriors (load-test route)",
    responses=_problems(400, 401, 403, 422, 503), openapi_extra={**READ, "parameters": [_TERM]},
)  # fmt: skip
async def search_warriors(
    request: Request,
    t: Annotated[str | None, Query(max_length=TERM_MAX_LENGTH, include_in_schema=False)] = None,
) -> Response:
    """`GET /api/v1/queries/warriors?term=`: the same search, at most 50. Without `t`, or
    with a blank one, 400: the test requires a term, and a blank term would silently list
    the newest warriors instead of searching."""
    if t is None or not t.strip():
        raise BadRequest("Send a search term: ?t=<term> (not blank).")
    return await found_warriors(request, t, MAX_RESULTS, None)


@router.get(
    COUNT_PATH, summary="How many warriors exist (load-test route)", response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"example": "1234"}}}, **_problems(401, 403, 503)},
    openapi_extra=READ,
)  # fmt: skip
async def count_warriors(request: Request) -> Response:
    """`GET /api/v1/queries/warriors/count`'s count, as the test reads it: `text/plain`
    decimal digits."""
    return PlainTextResponse(str(await warrior_count(request, None)))
