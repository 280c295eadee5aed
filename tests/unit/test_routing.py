"""PrefixCheckedRoute: a cheaper miss, the same answers."""

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from api.common.routing import PrefixCheckedRoute


def _client() -> TestClient:
    router = APIRouter(prefix="/api/things", route_class=PrefixCheckedRoute)

    @router.get("/count")
    async def count() -> dict[str, int]:
        return {"count": 2}

    @router.get("/{thing_id}")
    async def one(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    @router.post("")
    async def create() -> dict[str, str]:
        return {"created": "yes"}

    app = FastAPI()
    app.router.routes.extend(router.routes)
    return TestClient(app)


def test_literal_prefix_is_the_path_up_to_its_first_parameter() -> None:
    routes = [r for r in _client().app.router.routes if isinstance(r, PrefixCheckedRoute)]  # type: ignore[attr-defined]
    assert sorted(r.literal_prefix for r in routes) == ["/api/things", "/api/things/", "/api/things/count"]


def test_matches_as_fastapi_does() -> None:
    client = _client()
    assert client.get("/api/things/count").json() == {"count": 2}  # the first route that matches wins
    assert client.get("/api/things/7").json() == {"id": 7}
    assert client.get("/api/things/seven").status_code == 422
    assert client.post("/api/things").json() == {"created": "yes"}


def test_known_path_other_method_is_405_and_unknown_path_404() -> None:
    client = _client()
    answer = client.delete("/api/things/count")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET"
    assert client.get("/elsewhere/7").status_code == 404
    assert client.get("/api/thing").status_code == 404  # shares letters of the prefix, not the prefix
