"""The Write API: create, change, replace skills, delete."""

import hashlib
import re
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from api.command.openapi import CHANGE_BODY, CREATE_BODY, SKILLS_BODY, AcceptedBody
from api.common.problems import PROBLEM_RESPONSES, BadRequest
from warriors.application.warrior_commands import Accepted, RequestContext, WarriorCommands
from warriors.eventstore.records import IdempotencyKey

QUERY_PATH = "/api/v1/queries/warriors"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_ETAG = re.compile(r'\s*(?:W/)?"?([0-9]{1,9})"?\s*')

router = APIRouter(prefix="/api/v1/commands/warriors", tags=["commands"])
IfMatch = Annotated[str | None, Header(description='The version you read, e.g. `"3"`; else 409.')]
IdemKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Retries with the same key return the first answer."),
]

_ANSWERS: dict[int | str, dict[str, Any]] = {
    202: {"model": AcceptedBody, "description": "Stored."},
    **PROBLEM_RESPONSES,
}


def _commands(request: Request) -> WarriorCommands:
    commands: WarriorCommands = request.app.state.commands
    return commands


async def _json_object(request: Request) -> tuple[dict[str, Any], bytes]:
    raw = await request.body()
    if not raw.strip():
        raise BadRequest("The body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"The body must be a JSON object, not {type(body).__name__}.")
    return body, raw


def _context(request: Request, idempotency_key: str | None) -> RequestContext:
    headers = request.headers
    return RequestContext(
        correlation_id=request.scope["state"]["correlation_id"],
        causation_id=headers.get("x-causation-id") or request.scope["state"]["correlation_id"],
        user_id=headers.get("x-user-id"),
        client_ip=request.client.host if request.client else None,
        user_agent=headers.get("user-agent"),
        idempotency_key=idempotency_key,
    )


def _idempotency(request: Request, key: str | None, body: Any) -> IdempotencyKey | None:
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise BadRequest("Idempotency-Key must be 1-255 visible ASCII characters.")
    canonical = orjson.dumps([request.method, request.url.path, body], option=orjson.OPT_SORT_KEYS)
    return IdempotencyKey(key, hashlib.sha256(canonical).hexdigest())


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.fullmatch(if_match)
    if not match:
        raise BadRequest('If-Match must be a version such as "3".')
    return int(match.group(1))


def _accepted(result: Accepted) -> Response:
    headers = {
        "Location": f"{QUERY_PATH}/{result.warrior_id}",
        "ETag": f'"{result.version}"',
    }
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    body = {"id": str(result.warrior_id), "version": result.version, "position": result.position}
    return Response(orjson.dumps(body), status_code=202, media_type="application/json", headers=headers)


@router.post("", status_code=202, summary="Create a warrior", openapi_extra=CREATE_BODY, responses=_ANSWERS)
async def create_warrior(request: Request, idempotency_key: IdemKey = None) -> Response:
    body, _ = await _json_object(request)
    result = await _commands(request).create(
        body, _context(request, idempotency_key), _idempotency(request, idempotency_key, body)
    )
    return _accepted(result)


@router.patch(
    "/{warrior_id}", status_code=202, summary="Change name, dob or skills",
    openapi_extra=CHANGE_BODY, responses=_ANSWERS,
)  # fmt: skip
async def change_warrior(
    warrior_id: UUID, request: Request, if_match: IfMatch = None, idempotency_key: IdemKey = None
) -> Response:
    body, _ = await _json_object(request)
    result = await _commands(request).change(
        warrior_id, body, _context(request, idempotency_key),
        _idempotency(request, idempotency_key, body), _expected_version(if_match),
    )  # fmt: skip
    return _accepted(result)


@router.put(
    "/{warrior_id}/skills", status_code=202, summary="Replace the fight skills",
    openapi_extra=SKILLS_BODY, responses=_ANSWERS,
)  # fmt: skip
async def replace_skills(
    warrior_id: UUID, request: Request, if_match: IfMatch = None, idempotency_key: IdemKey = None
) -> Response:
    body, _ = await _json_object(request)
    result = await _commands(request).replace_skills(
        warrior_id, body, _context(request, idempotency_key),
        _idempotency(request, idempotency_key, body), _expected_version(if_match),
    )  # fmt: skip
    return _accepted(result)


@router.delete("/{warrior_id}", status_code=202, summary="Delete a warrior", responses=_ANSWERS)
async def delete_warrior(
    warrior_id: UUID, request: Request, if_match: IfMatch = None, idempotency_key: IdemKey = None
) -> Response:
    result = await _commands(request).delete(
        warrior_id, _context(request, idempotency_key),
        _idempotency(request, idempotency_key, None), _expected_version(if_match),
    )  # fmt: skip
    return _accepted(result)
