"""The Read API."""

import re
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from api.common.access import GuardedRoute, identity, requires
from api.common.problems import PROBLEM_RESPONSES, BadRequest
from warriors.domain.errors import WarriorNotFound
from warriors.projections.catalog import ProjectionName
from warriors.projections.read_model import READ_MODEL
from warriors.projections.search import SEARCH
from warriors.readside.answer_cache import AnswerCache
from warriors.readside.queries import MAX_SUGGESTIONS, WarriorQueries
from warriors.readside.search_index import MAX_RESULTS
from warriors.security.identity import Role

router = APIRouter(prefix="/api/v1/queries", tags=["queries"], route_class=GuardedRoute)

Position = Annotated[
    int | None,
    Query(ge=1, description="Wait (bounded) until the read model has applied the event at this position "
                            "(the `position` a command answered); 503 if it does not in time, 404 "
                            "(`Unknown position`) if no event has this position (yet)."),
]  # fmt: skip
_ERRORS: dict[int | str, dict[str, Any]] = {
    k: v for k, v in PROBLEM_RESPONSES.items() if k in (401, 403, 404, 422, 503)
}
# Reads: open to anyone unless READ_AUTH=required. Operator endpoints: the operator role.
READ = requires(Role.READER)
OPERATE = requires(Role.OPERATOR)
MONITOR = requires(Role.MONITOR)
HISTORY_PAGE_MAX = 1000


# Not blank, no control characters (PostgreSQL cannot even store NUL). White space is
# spelled out: `\s` differs between regex engines (ECMA 262's, the document's dialect, has
# no U+0085; Rust's has), so the document said otherwise. The document's pattern ends with
# "nothing follows" rather than `$`, which in Python's re (jsonschema, hypothesis) also
# matches before a final newline; pydantic's Rust engine has no lookahead, so the service
# checks it itself (suggest_names), with Python's re.
_VISIBLE_TEXT = (
    r"[^\x00-\x1f\x7f]*[^\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    r"[^\x00-\x1f\x7f]*"
)
_VISIBLE_TEXT_RULE = re.compile(_VISIBLE_TEXT)
_POSITION = re.compile(r"[0-9]{1,18}")
TERM_MAX_LENGTH = 1000


def _queries(request: Request) -> WarriorQueries:
    queries: WarriorQueries = request.app.state.queries
    return queries


def _wanted_position(request: Request, position: int | None) -> int | None:
    """`position` (query parameter) or the X-Min-Position header."""
    header = request.headers.get("x-min-position")
    if header is not None and not _POSITION.fullmatch(header):
        raise BadRequest("X-Min-Position must be a position: 1 to 18 digits.")
    return position or (int(header) if header else None)


async def _consistent(request: Request, wanted: int | None, projection: str = READ_MODEL) -> WarriorQueries:
    """The queries, after waiting until `projection` has applied the event at `wanted`."""
    queries = _queries(request)
    if wanted:
        await queries.wait_for(wanted, request.app.state.settings.read_wait_timeout_seconds, projection)
    return queries


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def found_warriors(request: Request, term: str | None, limit: int, wanted: int | None) -> Response:
    """The newest warriors (no term) or a search's results, as a JSON list of at most `limit`;
    after waiting for the event at position `wanted`, if any."""
    queries = _queries(request)

    async def answer() -> bytes:
        after = None if wanted is None else (wanted, request.app.state.settings.read_wait_timeout_seconds)
        return orjson.dumps([w.to_json() for w in await queries.search(term, limit, recent=wanted is None,
                                                                       after=after)])  # fmt: skip

    if wanted is None:  # a recent answer to the same question will do (AnswerCache)
        answers: AnswerCache = request.app.state.answers
        key = (limit, " ".join(term.split()).lower() if term else "")
        return Response(await answers.get(key, answer), media_type="application/json")
    # A term goes to the search engine when one is configured and answers (then a position
    # waits for the index); otherwise PostgreSQL answers, and the read model is waited for.
    on_engine = bool(term and term.strip()) and await queries.search_engine_answers()
    await _consistent(request, wanted, SEARCH if on_engine else READ_MODEL)
    return Response(await answer(), media_type="application/json")


async def warrior_count(request: Request, wanted: int | None) -> int:
    """How many warriors exist, after waiting for the event at position `wanted`, if any."""
    queries = await _consistent(request, wanted)
    # With a position, the read model's own count (the one waited for); else Redis' if any.
    return await queries.count(cached=wanted is None)


async def warrior_response(request: Request, warrior_id: UUID, min_version: int | None = None) -> Response:
    """The warrior's JSON with `ETag: "<version>"`; WarriorNotFound (404) if it does not
    exist or was deleted."""
    found = await _queries(request).warrior_json(warrior_id, min_version)
    if found is None:
        raise WarriorNotFound(warrior_id)
    document, version = found
    return Response(document, media_type="application/json", headers={"ETag": f'"{version}"'})


@router.get("/warriors", summary="List or search warriors", responses=_ERRORS, openapi_extra=READ)
async def list_warriors(
    request: Request,
    term: Annotated[
        str | None, Query(max_length=TERM_MAX_LENGTH, description="Search term; absent: the newest.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = MAX_RESULTS,
    position: Position = None,
) -> Response:
    """No term: the newest warriors first. A term: full-text and fuzzy search over names
    (weighted x3) and skills (x2), case- and accent-insensitive, with synonyms; at most 50."""
    return await found_warriors(request, term, limit, _wanted_position(request, position))


@router.get("/warriors/count", summary="How many warriors exist", responses=_ERRORS, openapi_extra=READ)
async def count_warriors(request: Request, position: Position = None) -> Response:
    return _json({"count": await warrior_count(request, _wanted_position(request, position))})


@router.get(
    "/warriors/suggest", summary="Names starting with a prefix", responses=_ERRORS, openapi_extra=READ
)
async def suggest_names(
    request: Request,
    prefix: Annotated[
        str,
        Query(
            min_length=1,
            max_length=100,
            description="Case-insensitive; not blank.",
            json_schema_extra={"pattern": rf"^{_VISIBLE_TEXT}(?![\s\S])"},
        ),
    ],
) -> Response:
    if not _VISIBLE_TEXT_RULE.fullmatch(prefix):
        raise RequestValidationError(
            [{"loc": ("query", "prefix"), "msg": "must not be blank nor hold control characters"}]
        )
    return _json({"suggestions": await _queries(request).suggest(prefix, MAX_SUGGESTIONS)})


@router.get("/warriors/{warrior_id}", summary="One warrior", responses=_ERRORS, openapi_extra=READ)
async def get_warrior(
    warrior_id: UUID,
    request: Request,
    min_version: Annotated[
        int | None, Query(ge=1, description="At least this version (commands' Location headers carry it).")
    ] = None,
) -> Response:
    """The read model's row (a creation's is written with its event, INLINE_READ_MODEL). A
    row older than `min_version`, or missing, is answered from the warrior's events:
    following any command's Location shows what it wrote."""
    return await warrior_response(request, warrior_id, min_version)


@router.get(
    "/warriors/{warrior_id}/history", summary="A warrior's events, oldest first",
    responses=_ERRORS, openapi_extra=READ,
)  # fmt: skip
async def warrior_history(
    warrior_id: UUID,
    request: Request,
    after_version: Annotated[int, Query(ge=0, description="Events after this version (a page's last).")] = 0,
    limit: Annotated[int, Query(ge=1, le=HISTORY_PAGE_MAX, description="Most events in the page.")] = 100,
) -> Response:
    """A page of the warrior's events; a full page has a `Link: <...>; rel="next"` header.
    Each event's metadata shows the writer's IP address and user agent to operators only."""
    operator = identity(request).allows(Role.OPERATOR)
    events = await _queries(request).history(warrior_id, after_version, limit, request_metadata=operator)
    if events is None:
        raise WarriorNotFound(warrior_id)
    response = _json(events)
    if len(events) == limit:
        following = request.url.include_query_params(after_version=events[-1]["version"], limit=limit)
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return response


@router.get("/statistics", summary="Warrior statistics", responses=_ERRORS, openapi_extra=READ)
async def statistics(request: Request) -> Response:
    """The total and, per day (UTC), warriors created and their average number of skills,
    from the `warrior_statistics` materialized view (refreshed on a schedule)."""
    return _json(await _queries(request).statistics())


@router.get(
    "/projections", summary="Each projection's position, lag and status (monitor or operator)",
    responses=_ERRORS, openapi_extra=MONITOR,
)  # fmt: skip
async def projections(request: Request) -> Response:
    return _json(await _queries(request).projections())


@router.get(
    "/projections/{name}/parked", summary="A projection's parked events (operators)",
    responses=_ERRORS, openapi_extra=OPERATE,
)  # fmt: skip
async def parked_events(
    name: ProjectionName,
    request: Request,
    discarded: Annotated[bool, Query(description="Also the discarded ones, with their reason.")] = False,
) -> Response:
    """Events the projection could not apply and moved past, oldest first: `event_id`,
    `position`, `event_type`, `aggregate_id`, `error`, `parked_at` (and `discarded_at`,
    `discard_reason`). Replay or discard them with `warriors projections replay-parked` /
    `discard`, or the Dagster job `replay_parked` (docs/operations.md)."""
    return _json(await _queries(request).parked(name, discarded=discarded))
