"""The load test's own routes (api/compat) over HTTP, against the real service, the live
projector and a real PostgreSQL; and their switch, COMPAT_ROUTES."""

import re
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest

from api.gateway import create_app
from tests.history import event_count
from tests.support import ProjectorProcess, ServiceProcess, wait_for
from warriors.config import Settings
from warriors.security.identity import new_key
from warriors.servers import free_port

WARRIOR = "/warrior"
COUNTING = "/counting-warriors"
UNUSED_DATABASE = "postgresql://unused@127.0.0.1:1/unused"  # apps built but never started
COMPAT_ROUTES = [
    ("POST", WARRIOR),
    ("GET", f"{WARRIOR}/{uuid4()}"),
    ("GET", f"{WARRIOR}?t=a"),
    ("GET", COUNTING),
]


@pytest.fixture
def client(service: ServiceProcess, projector: ProjectorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
        yield client


def create(client: httpx.Client, headers: dict[str, str] | None = None, **fields: Any) -> httpx.Response:
    body = {"name": f"Compat {uuid4().hex[:8]}", "dob": "1990-01-01", **fields}
    response = client.post(WARRIOR, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response


def counted(client: httpx.Client) -> int:
    response = client.get(COUNTING)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert re.fullmatch(r"[0-9]+", response.text), response.text
    return int(response.text)


def test_create_answers_201_and_its_location_answers_at_once(client: httpx.Client) -> None:
    for i in range(25):  # back to back, no sleeps: never a 404, always what was written
        name = f"Compat follower {i} {uuid4().hex[:6]}"
        created = create(client, name=f"  {name} ", fight_skills=["Katana", f"Skill {i}"])
        body = created.json()
        assert set(body) == {"id", "version", "position"}
        assert body["version"] == 1
        assert created.headers["location"] == f"{WARRIOR}/{body['id']}"
        assert created.headers["etag"] == '"1"'
        read = client.get(created.headers["location"])
        assert read.status_code == 200, read.text
        assert read.headers["content-type"] == "application/json"
        warrior = read.json()
        assert (warrior["id"], warrior["name"], warrior["dob"]) == (body["id"], name, "1990-01-01")
        assert warrior["fight_skills"] == ["Katana", f"Skill {i}"]
        # The same document as the platform's own route.
        assert client.get(f"/api/v1/queries/warriors/{body['id']}").json() == warrior


def test_idempotency_key_and_correlation_id_as_on_the_platform(client: httpx.Client, postgres: str) -> None:
    key = {"Idempotency-Key": f"compat-{uuid4()}", "X-Correlation-Id": "compat-corr-1"}
    body = {"name": "Replayed", "dob": "1990-01-01"}
    first = client.post(WARRIOR, json=body, headers=key)
    assert first.status_code == 201
    assert first.headers["x-correlation-id"] == "compat-corr-1"
    before = event_count(postgres)
    again = client.post(WARRIOR, json=body, headers=key)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert event_count(postgres) == before
    reused = client.post(WARRIOR, json={**body, "name": "Another"}, headers=key)
    assert reused.status_code == 409
    with psycopg.connect(postgres) as conn:
        row = conn.execute(
            "SELECT metadata->>'correlation_id' FROM event_store WHERE aggregate_id = %s",
            (first.json()["id"],),
        ).fetchone()
    assert row == ("compat-corr-1",)


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"[1, 2]", b'"a string"', b"null"],
    ids=["malformed", "empty", "array", "string", "null"],
)
def test_a_body_that_is_not_a_json_object_answers_400_and_stores_nothing(
    client: httpx.Client, postgres: str, raw: bytes
) -> None:
    before = event_count(postgres)
    response = client.post(WARRIOR, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 400
    assert event_count(postgres) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "dob": "1990-01-01"}, "name"),
        ({"name": "Bad dob", "dob": "1990-02-30"}, "dob"),
        ({"name": "Bad dob", "dob": "01/02/1990"}, "dob"),
        ({"name": 42, "dob": "1990-01-01"}, "name"),
        ({"dob": "1990-01-01"}, "name"),
        ({"name": "No skills list", "dob": "1990-01-01", "fight_skills": "Katana"}, "fight_skills"),
    ],
    ids=["name-empty", "dob-not-a-date", "dob-format", "name-a-number", "name-missing", "skills-not-a-list"],
)
def test_invalid_fields_answer_422_naming_the_field_and_store_nothing(
    client: httpx.Client, postgres: str, body: dict[str, Any], field: str
) -> None:
    before = event_count(postgres)
    response = client.post(WARRIOR, json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert event_count(postgres) == before


def test_oversized_body_answers_413(client: httpx.Client, postgres: str) -> None:
    before = event_count(postgres)
    response = client.post(WARRIOR, json={"name": "x" * 200_000, "dob": "1990-01-01"})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert event_count(postgres) == before


@pytest.mark.parametrize("warrior_id", [str(uuid4()), "not-a-uuid", "123"])
def test_unknown_or_malformed_id_answers_404(client: httpx.Client, warrior_id: str) -> None:
    response = client.get(f"{WARRIOR}/{warrior_id}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_a_deleted_warrior_answers_404(client: httpx.Client) -> None:
    location = create(client).headers["location"]
    warrior_id = location.rsplit("/", 1)[1]
    assert client.delete(f"/api/v1/commands/warriors/{warrior_id}").status_code == 202
    # A bare GET may see the row until the projector applies the delete (eventual consistency).
    wait_for(lambda: client.get(location).status_code == 404, what="the delete to be projected")


def test_search_with_t_finds_the_created_warrior(client: httpx.Client) -> None:
    name = f"Compatsearch {uuid4().hex[:8]}"
    warrior_id = create(client, name=name, fight_skills=["Naginata"]).json()["id"]

    def found() -> list[dict[str, Any]] | None:
        response = client.get(WARRIOR, params={"t": name})
        assert response.status_code == 200, response.text
        warriors: list[dict[str, Any]] = response.json()
        return warriors if warrior_id in [w["id"] for w in warriors] else None

    [warrior, *_] = wait_for(found, what="the search to find the created warrior")
    assert warrior["name"] == name
    assert warrior["fight_skills"] == ["Naginata"]


def test_search_answers_at_most_50(client: httpx.Client) -> None:
    skill = f"Compatfu{uuid4().hex[:8]}"
    for _ in range(55):
        create(client, fight_skills=[skill])

    def full_page() -> list[Any] | None:
        warriors: list[Any] = client.get(WARRIOR, params={"t": skill}).json()
        assert len(warriors) <= 50
        return warriors if len(warriors) == 50 else None

    wait_for(full_page, what="the search to fill a page")


@pytest.mark.parametrize("params", [{}, {"t": ""}, {"t": "   "}], ids=["absent", "empty", "blank"])
def test_search_without_t_answers_400(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get(WARRIOR, params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_counting_warriors_is_text_digits_that_follow_creations(client: httpx.Client) -> None:
    # Settle the count first: after the read model has applied this creation, nothing else
    # is written meanwhile (the tests of a session run one at a time).
    settled = create(client).json()["position"]
    assert client.get("/api/v1/queries/warriors/count", params={"position": settled}).status_code == 200
    before = counted(client)
    for _ in range(3):
        create(client)
    wait_for(lambda: counted(client) == before + 3, what="the count to follow the creations")
    assert client.get("/api/v1/queries/warriors/count").json() == {"count": before + 3}


def test_routes_are_in_the_openapi_document_under_compat(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    operations = [
        paths[WARRIOR]["post"],
        paths[WARRIOR]["get"],
        paths[f"{WARRIOR}/{{warrior_id}}"]["get"],
        paths[COUNTING]["get"],
    ]
    assert all(operation["tags"] == ["compat"] for operation in operations)
    create_operation = paths[WARRIOR]["post"]
    assert create_operation["requestBody"]["content"]["application/json"]["example"]["name"]
    assert {"201", "400", "409", "413", "422", "503"} <= set(create_operation["responses"])
    assert "text/plain" in paths[COUNTING]["get"]["responses"]["200"]["content"]


def test_database_down_answers_503() -> None:
    nowhere = f"postgresql://warriors@127.0.0.1:{free_port()}/warriors"  # nothing listens there
    service = ServiceProcess(nowhere, free_port(), env={"DB_POOL_TIMEOUT_SECONDS": "0.5"}, with_key=False)
    try:
        # A key the database cannot be asked about: the write answers 503, not 401.
        unknown_key = {"Authorization": f"Bearer {new_key()}"}
        with httpx.Client(base_url=service.base_url, headers=unknown_key, timeout=15) as client:
            for method, path in COMPAT_ROUTES:
                body = {"name": "Nowhere", "dob": "1990-01-01"} if method == "POST" else None
                response = client.request(method, path, json=body)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert response.headers["retry-after"] == "1"
    finally:
        service.stop()


@pytest.mark.parametrize("enabled", [True, False])
def test_compat_routes_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch, enabled: bool) -> None:
    monkeypatch.setenv("COMPAT_ROUTES", str(enabled).lower())
    assert Settings().compat_routes is enabled
    paths = create_app(Settings(database_url=UNUSED_DATABASE)).openapi()["paths"]
    assert (WARRIOR in paths, COUNTING in paths) == (enabled, enabled)
    assert "/api/v1/commands/warriors" in paths


async def test_with_compat_routes_off_the_routes_answer_404() -> None:
    app = create_app(Settings(database_url=UNUSED_DATABASE, compat_routes=False))
    # Not started (no lifespan): an absent route is answered without any database.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        for method, path in COMPAT_ROUTES:
            body = {"name": "Off", "dob": "1990-01-01"} if method == "POST" else None
            response = await client.request(method, path, json=body)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/problem+json"
