"""The Write API: create, change, replace skills, delete."""

import hashlib
import re
from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from api.command.openapi import CHANGE_BODY, CREATE_BODY, SKILLS_BODY, AcceptedBody
from api.common.access import GuardedRoute, identity, requires
from api.common.problems import PROBLEM_RESPONSES, BadRequest, UnsupportedMediaType
from warriors.application.warrior_commands import (
    Accepted,
    RequestContext,
    WarriorCommands,
    client_user_agent,
)
from warriors.eventstore.records import IdempotencyKey
from warriors.security.identity import Role

QUERY_PATH = "/api/v1/queries/warriors"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_ETAG = re.compile(r'\s*(?:W/)?"?([0-9]{1,9})"?\s*')
_CAUSATION_ID = re.compile(r"[\x21-\x7e]{1,128}")  # as X-Correlation-Id (api/common/middleware.py)

router = APIRouter(prefix="/api/v1/commands/warriors", tags=["commands"], route_class=GuardedRoute)


# Headers are read from the request directly rather than declared as FastAPI parameters:
# dependency solving was 8% of the write path's CPU (profiled with py-spy). They are
# documented here instead, each with the exact shape it must have (anything else: 400).
def _header(name: str, description: str, pattern: str, max_length: int) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": pattern},
        "description": description,
    }


_IDEMPOTENCY_KEY = _header(
    "Idempotency-Key", "Retries with the same key and body return the first answer. 1-255 visible ASCII"
    " characters; anything else answers 400.", r"^[\x21-\x7e]{1,255}$", 255,
)  # fmt: skip
_IF_MATCH = _header(
    "If-Match", 'The version you read, e.g. `"3"` (or `W/"3"`); another version answers 409. `*`: any'
    " version. Anything else answers 400.", r'^(\*|(W/)?"[0-9]{1,9}")$', 13,
)  # fmt: skip
_CORRELATION = _header(
    "X-Correlation-Id", "Echoed back; recorded in the event's metadata (made if absent). 1-128 visible"
    " ASCII characters; anything else answers 400.", r"^[\x21-\x7e]{1,128}$", 128,
)  # fmt: skip


def _documented(
    body: dict[str, Any] | None, *headers: dict[str, Any], role: Role = Role.WRITER
) -> dict[str, Any]:
    """A command's OpenAPI extras: its body, the headers it reads, and the role it needs."""
    return {**(body or {}), "parameters": [*headers, _CORRELATION], **requires(role)}


_ANSWERS: dict[int | str, dict[str, Any]] = {
    202: {"model": AcceptedBody, "description": "Stored."},
    **PROBLEM_RESPONSES,
}
# A delete has no body, so no Content-Type to get wrong.
_BODILESS_ANSWERS = {status: answer for status, answer in _ANSWERS.items() if status != 415}


def _commands(request: Request) -> WarriorCommands:
    commands: WarriorCommands = request.app.state.commands
    return commands


def is_json_media_type(content_type: str) -> bool:
    """`application/json` or any `application/*+json`, parameters (`; charset=utf-8`) aside."""
    if content_type == "application/json":  # what nearly every client sends: no parsing
        return True
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def _json_object(request: Request) -> dict[str, Any]:
    # Only a JSON Content-Type: the ones an HTML form or a cross-site fetch() may send
    # without a CORS preflight (text/plain, application/x-www-form-urlencoded,
    # multipart/form-data) never reach a command, whatever their body says.
    content_type = request.headers.get("content-type")
    if content_type is not None and not is_json_media_type(content_type):
        raise UnsupportedMediaType("Send the body as JSON, with Content-Type: application/json.")
    try:
        raw = await request.body()
    except ClientDisconnect:
        # The client went away mid-body: nobody reads this answer, but it is counted (a
        # 400 in http_requests_total) rather than logged as a server error.
        raise BadRequest("The client disconnected before sending the whole body.") from None
    if content_type is None and raw:
        raise UnsupportedMediaType("The body has no Content-Type; send it as JSON, with application/json.")
    if not raw.strip():
        raise BadRequest("The body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"The body must be a JSON object, not {type(body).__name__}.")
    return body


def _context(request: Request) -> RequestContext:
    headers = request.headers
    idempotency_key = headers.get("idempotency-key")
    return RequestContext(
        correlation_id=request.scope["state"]["correlation_id"],
        causation_id=_causation_id(headers.get("x-causation-id"), request.scope["state"]["correlation_id"]),
        user_id=identity(request).subject,  # the key's identity, never a client header
        client_ip=request.client.host if request.client else None,
        user_agent=client_user_agent(headers.get("user-agent")),
        idempotency_key=idempotency_key,
    )


def _causation_id(header: str | None, correlation_id: str) -> str:
    """The X-Causation-Id header, else the correlation id; 400 if it is malformed."""
    if header is None:
        return correlation_id
    if not _CAUSATION_ID.fullmatch(header):
        raise BadRequest("X-Causation-Id must be 1-128 visible ASCII characters.")
    return header


def _idempotency(request: Request, body: Any) -> IdempotencyKey | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise BadRequest("Idempotency-Key must be 1-255 visible ASCII characters.")
    try:
        canonical = orjson.dumps([request.method, request.url.path, body], option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # deeper than orjson writes (255 levels): never a command
        raise BadRequest("The body is nested too deeply.") from None
    return IdempotencyKey(key, hashlib.sha256(canonical).hexdigest())


def _expected_version(request: Request) -> int | None:
    if_match = request.headers.get("if-match")
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.fullmatch(if_match)
    if not match:
        raise BadRequest('If-Match must be a version such as "3".')
    return int(match.group(1))


def accepted_response(result: Accepted, location: str, status_code: int = 202) -> Response:
    """A stored command's answer: `{"id", "version", "position"}`, its `Location`, an `ETag`
    with the new version and, for an idempotent replay, `Idempotent-Replayed: true`."""
    headers = {
        "Location": location,
        "ETag": f'"{result.version}"',
    }
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    body = {"id": str(result.warrior_id), "version": result.version, "position": result.position}
    return Response(
        orjson.dumps(body), status_code=status_code, media_type="application/json", headers=headers
    )


def _accepted(result: Accepted) -> Response:
    # A creation's Location is the warrior's URL; later commands add `min_version`, so that
    # following the Location shows this command's effect even before the projector has it.
    location = f"{QUERY_PATH}/{result.warrior_id}"
    if result.version > 1:
        location += f"?min_version={result.version}"
    return accepted_response(result, location)


async def create_from_request(request: Request) -> Accepted:
    """Create a warrior from the request's JSON object body (400 if it is not one, 422 for
    invalid fields), with its headers' context and Idempotency-Key; returns once stored."""
    body = await _json_object(request)
    return await _commands(request).create(body, _context(request), _idempotency(request, body))


# The OpenAPI extras of a create: its body and the headers it reads.
CREATE_OPENAPI = _documented(CREATE_BODY, _IDEMPOTENCY_KEY)


@router.post(
    "", status_code=202, summary="Create a warrior",
    openapi_extra=CREATE_OPENAPI, responses=_ANSWERS,
)  # fmt: skip
async def create_warrior(request: Request) -> Response:
    return _accepted(await create_from_request(request))


@router.patch(
    "/{warrior_id}", status_code=202, summary="Change name, dob or skills",
    openapi_extra=_documented(CHANGE_BODY, _IF_MATCH, _IDEMPOTENCY_KEY), responses=_ANSWERS,
)  # fmt: skip
async def change_warrior(warrior_id: UUID, request: Request) -> Response:
    body = await _json_object(request)
    result = await _commands(request).change(
        warrior_id, body, _context(request), _idempotency(request, body), _expected_version(request)
    )
    return _accepted(result)


@router.put(
    "/{warrior_id}/skills", status_code=202, summary="Replace the fight skills",
    openapi_extra=_documented(SKILLS_BODY, _IF_MATCH, _IDEMPOTENCY_KEY), responses=_ANSWERS,
)  # fmt: skip
async def replace_skills(warrior_id: UUID, request: Request) -> Response:
    body = await _json_object(request)
    result = await _commands(request).replace_skills(
        warrior_id, body, _context(request), _idempotency(request, body), _expected_version(request)
    )
    return _accepted(result)


@router.delete(
    "/{warrior_id}", status_code=202, summary="Delete a warrior",
    openapi_extra=_documented(None, _IF_MATCH, _IDEMPOTENCY_KEY), responses=_BODILESS_ANSWERS,
)  # fmt: skip
async def delete_warrior(warrior_id: UUID, request: Request) -> Response:
    result = await _commands(request).delete(
        warrior_id, _context(request), _idempotency(request, None), _expected_version(request)
    )
    return _accepted(result)


@router.post(
    "/{warrior_id}/erase", status_code=202, summary="Erase a warrior's personal data (operator)",
    description="Destroys the warrior's own key, so that its name and date of birth, stored only"
    " encrypted under that key, are unreadable for good in the store, on the bus and in backups;"
    " records a WarriorErased event; every read model, the search index, the cache and the"
    " statistics then remove the warrior. A deleted warrior can be erased too; an erased or"
    " unknown one answers 404. The Location is the warrior's history, which shows its events"
    " without personal fields. docs/event-store.md, Erasure.",
    openapi_extra=_documented(None, _IDEMPOTENCY_KEY, role=Role.OPERATOR), responses=_BODILESS_ANSWERS,
)  # fmt: skip
async def erase_warrior(warrior_id: UUID, request: Request) -> Response:
    result = await _commands(request).erase(warrior_id, _context(request), _idempotency(request, None))
    return accepted_response(result, f"{QUERY_PATH}/{warrior_id}/history")
