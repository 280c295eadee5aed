"""A cheaper miss for every route a request is matched against.

Starlette matches a request against the routes in order, and FastAPI (0.137 and later)
wraps each attempt in per-request context bookkeeping: about 1.2 us a route, 19 us of a
/health/live's 53 us in process (the last route of the gateway's 16). A path that does
not start with a route's literal prefix (its path up to the first `{`) cannot match it,
so that route answers "no match" at once; everything else, including the 405 for a
known path with another method, goes through FastAPI's own matching unchanged.
"""

from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.routing import Match
from starlette.types import Scope


class PrefixCheckedRoute(APIRoute):
    """APIRoute that rejects, before anything else, a path outside its literal prefix."""

    def __init__(self, path: str, *args: object, **kwargs: object) -> None:
        super().__init__(path, *args, **kwargs)  # type: ignore[arg-type]
        self.literal_prefix = self.path_format.split("{", 1)[0]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and not get_route_path(scope).startswith(self.literal_prefix):
            return Match.NONE, {}
        return super().matches(scope)
