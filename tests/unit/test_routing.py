"""PrefixCheckedRoute: a cheaper miss, the same answers."""

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from api.common.problems import install_problem_handlers
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


def test_405_allow_names_every_method_of_the_path() -> None:
    # Starlette's own 405 names only the first route with the path: `Allow: POST` here,
    # though GET /api/things exists too (found by tests/test_fuzz_api.py).
    router = APIRouter(prefix="/api/things", route_class=PrefixCheckedRoute)

    @router.post("")
    async def create() -> dict[str, str]:
        return {"created": "yes"}

    @router.get("")
    async def listed() -> list[int]:
        return []

    @router.get("/{thing_id}")
    async def one(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    app = FastAPI()
    app.router.routes.extend(router.routes)
    install_problem_handlers(app)
    client = TestClient(app)
    refused = client.put("/api/things")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, POST"
    assert client.delete("/api/things/7").headers["allow"] == "GET"


def test_a_query_parameter_the_route_reads_given_twice_is_a_422() -> None:
    # Starlette would keep the last value and drop the others unseen (found by the fuzzing).
    router = APIRouter(prefix="/api/things", route_class=PrefixCheckedRoute)

    @router.get("")
    async def listed(limit: int = 10, term: str = "") -> dict[str, object]:
        return {"limit": limit, "term": term}

    app = FastAPI()
    app.router.routes.extend(router.routes)
    install_problem_handlers(app)
    client = TestClient(app)
    for query in ("limit=1&limit=2", "limit=1&term=a&limit=1", "term=&term=", "li%6Dit=1&limit=2"):
        refused = client.get(f"/api/things?{query}")
        assert refused.status_code == 422, query
        assert refused.headers["content-type"] == "application/problem+json"
        [error] = refused.json()["errors"]
        assert error == {"field": error["field"], "message": "given more than once"}
        assert error["field"] in ("limit", "term")
    assert client.get("/api/things?limit=1&term=a%26b").json() == {"limit": 1, "term": "a&b"}
    assert client.get("/api/things?other=1&other=2").json() == {"limit": 10, "term": ""}  # read by nothing
