"""Who may call what: each route declares the role it needs (`requires`), and
`GuardedRoute` checks the request's API key before the route runs (so a request without
the right to make it learns nothing else, not even that its body is invalid).

- Writes need `writer`; monitoring reads (metrics, the projections' status) need `monitor`
  or `operator`; operator endpoints (projections' actions, parked events, erasure, request
  metadata) need `operator`; reads need `reader` only with READ_AUTH=required, and otherwise anyone may
  read (a key sent anyway must be valid: a revoked key is refused everywhere).
- Keys come as `Authorization: Bearer KEY` or `X-API-Key: KEY`. A key's identity is
  remembered for AUTH_CACHE_SECONDS per worker, so a revocation takes effect within that
  time, and a write costs no extra round trip to PostgreSQL. Keys found not live cost each
  client address a share of AUTH_UNKNOWN_KEYS_PER_MINUTE; past it, 429 without a look-up
  (api/common/key_guesses.py).
- No credentials: 401 with `WWW-Authenticate: Bearer`; a role too low: 403. Both are
  problem+json and name the role needed, never anything about the key.
"""

import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.responses import Response

from api.common.key_cache import KeyCache
from api.common.key_guesses import GuessBudget
from api.common.routing import PrefixCheckedRoute
from warriors.config import Settings
from warriors.security.identity import ANONYMOUS, Identity, Role, key_digest
from warriors.security.key_store import identity_of

ROLE_FIELD = "x-required-role"
OPENED_BY_FIELD = "x-opened-by-setting"
_BEARER = "bearer "

# The OpenAPI security schemes the routes refer to (api/common/service.py adds them).
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key (`warriors keys create`)."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "The same key."},
}


class Unauthenticated(Exception):
    """No credentials, or credentials that are not a live key: 401."""


class Forbidden(Exception):
    """A live key whose role is too low: 403."""


def requires(role: Role, *, unless: str | None = None) -> dict[str, Any]:
    """A route's `openapi_extra` declaring the role it needs (and, with `unless`, the
    boolean setting that opens it to anyone). Reads declare `Role.READER`: enforced only
    with READ_AUTH=required, so their documented security lists "none" as an option."""
    schemes: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    optional = role is Role.READER or unless is not None
    extra: dict[str, Any] = {ROLE_FIELD: role.value, "security": [{}, *schemes] if optional else schemes}
    if unless:
        extra[OPENED_BY_FIELD] = unless
    return extra


class Access:
    """Identifies requests from their keys and checks roles (one per worker)."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection], settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._reads_open = not settings.read_auth_required
        self._keys = KeyCache(settings.auth_cache_seconds)
        self._guesses = GuessBudget(settings.auth_unknown_keys_per_minute)

    async def check(self, request: Request, needed: Role, opened_by: str | None) -> Identity:
        identity = await self.identify(request)
        if identity.allows(needed):
            return identity
        # A route opened to anyone is open to every key too (a monitor key, which may not
        # read warriors, reads them like anyone while reads are open).
        if (needed is Role.READER and self._reads_open) or (
            opened_by is not None and getattr(self._settings, opened_by)
        ):
            return identity
        roles = " or ".join(role.value for role in needed.allowed_by())
        if identity.role is None:
            raise Unauthenticated(
                f"This needs an API key with the role {roles}:"
                " send it as `Authorization: Bearer KEY` or `X-API-Key: KEY`."
            )
        raise Forbidden(f"This needs the role {roles}; the key's role is {identity.role}.")

    async def identify(self, request: Request) -> Identity:
        """The key's identity; ANONYMOUS without one; Unauthenticated for a key that is
        not live (unknown, malformed or revoked)."""
        headers = request.headers
        authorization = headers.get("authorization")
        if authorization is not None:
            if authorization[: len(_BEARER)].lower() != _BEARER:
                raise Unauthenticated("Authorization must be `Bearer KEY`.")
            key = authorization[len(_BEARER) :].strip()
        elif (api_key := headers.get("x-api-key")) is not None:
            key = api_key
        else:
            return ANONYMOUS
        identity = await self._identity(key, request.client.host if request.client else "")
        if identity is None:
            raise Unauthenticated("The API key is not valid (unknown or revoked).")
        return identity

    async def _identity(self, key: str, client: str) -> Identity | None:
        digest = key_digest(key)
        known, identity = self._keys.get(digest)
        if not known:
            now = time.monotonic()
            self._guesses.check(client, now)  # TooManyUnknownKeys: no look-up
            identity = await identity_of(self._pool, key)
            self._keys.put(digest, identity)
            if identity is None:
                self._guesses.spend(client, now)
        return identity


def identity(request: Request) -> Identity:
    """The identity GuardedRoute found for this request (ANONYMOUS on open routes)."""
    found: Identity = request.scope["state"].get("identity", ANONYMOUS)
    return found


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class GuardedRoute(PrefixCheckedRoute):
    """A route that checks the role its `openapi_extra` declares (see `requires`) before
    anything else runs; routes declaring none (health) are open."""

    def __init__(self, path: str, *args: Any, **kwargs: Any) -> None:
        extra = kwargs.get("openapi_extra") or {}
        self.required_role = Role(extra[ROLE_FIELD]) if ROLE_FIELD in extra else None
        self.opened_by: str | None = extra.get(OPENED_BY_FIELD)
        super().__init__(path, *args, **kwargs)

    def get_route_handler(self) -> Handler:
        handler: Handler = super().get_route_handler()
        needed, opened_by = self.required_role, self.opened_by
        if needed is None:
            return handler

        async def guarded(request: Request) -> Response:
            access: Access = request.app.state.access
            request.scope["state"]["identity"] = await access.check(request, needed, opened_by)
            return await handler(request)

        return guarded
