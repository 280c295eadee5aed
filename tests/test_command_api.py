"""The Write API over HTTP, against the real service and a real PostgreSQL."""

import asyncio
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest

from tests.history import event_count
from tests.support import ServiceProcess, opened_events

COMMANDS = "/api/v1/commands/warriors"
VALID = {"name": "Musashi", "dob": "1584-03-12", "fight_skills": ["Katana", "Niten Ichi-ryu"]}


@pytest.fixture
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
        yield client


def events_of(postgres: str, warrior_id: str) -> list[tuple[Any, ...]]:
    return list(opened_events(postgres, warrior_id))


def create(
    client: httpx.Client, body: dict[str, Any] = VALID, headers: dict[str, str] | None = None
) -> httpx.Response:
    response = client.post(COMMANDS, json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response


def test_create_answers_202_with_location_and_stores_the_event(
    client: httpx.Client, postgres: str, service: ServiceProcess
) -> None:
    response = create(
        client,
        {"name": "  José  ", "dob": "1990-01-01", "fight_skills": [" Capoeira ", "Kick"]},
        {"X-Correlation-Id": "corr-123", "X-User-Id": "not-me", "User-Agent": "tests/1.0"},
    )
    body = response.json()
    assert set(body) == {"id", "version", "position"}
    assert body["version"] == 1
    assert body["position"] > 0
    assert UUID(body["id"]).version == 7
    assert response.headers["location"] == f"/api/v1/queries/warriors/{body['id']}"
    assert response.headers["x-correlation-id"] == "corr-123"
    assert response.headers["etag"] == '"1"'
    [(event_type, version, data, metadata)] = events_of(postgres, body["id"])
    assert (event_type, version) == ("WarriorCreated", 1)
    assert data == {"name": "José", "dob": "1990-01-01", "fight_skills": ["Capoeira", "Kick"]}
    assert metadata["correlation_id"] == "corr-123"
    assert metadata["causation_id"] == "corr-123"
    assert metadata["user_id"] == service.user_id, "the key's identity, never a client header"
    assert metadata["user_agent"] == "tests/1.0"
    assert metadata["client_ip"] == "127.0.0.1"
    assert "occurred_at" in metadata


def test_a_correlation_id_is_made_when_none_is_sent(client: httpx.Client) -> None:
    assert len(create(client).headers["x-correlation-id"]) == 36


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"   ", b"[1, 2]", b'"a string"', b"42", b"null", b'{"name": "x",}'],
    ids=["malformed", "empty", "blank", "array", "string", "number", "null", "trailing-comma"],
)
def test_unparseable_bodies_answer_400_and_store_nothing(
    client: httpx.Client, postgres: str, raw: bytes
) -> None:
    before = event_count(postgres)
    response = client.post(COMMANDS, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 400
    assert event_count(postgres) == before


def test_invalid_fields_answer_422_naming_each_field(client: httpx.Client, postgres: str) -> None:
    before = event_count(postgres)
    response = client.post(
        COMMANDS,
        json={"name": 5, "dob": "2001-02-29", "fight_skills": ["Kick", " ", "x" * 51], "rank": "shogun"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"name", "dob", "fight_skills[1]", "fight_skills[2]", "rank"}
    assert event_count(postgres) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**VALID, "dob": "1990-13-01"}, "dob"),
        ({**VALID, "dob": "1990-1-1"}, "dob"),
        ({**VALID, "dob": "null"}, "dob"),
        ({**VALID, "dob": "10"}, "dob"),
        ({**VALID, "dob": "2999-01-01"}, "dob"),
        ({**VALID, "name": "x" * 101}, "name"),
        ({**VALID, "name": "   "}, "name"),
        ({**VALID, "fight_skills": "Katana"}, "fight_skills"),
        ({**VALID, "fight_skills": [""]}, "fight_skills[0]"),
    ],
)
def test_each_rule_is_enforced_over_http(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    response = client.post(COMMANDS, json=body)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_oversized_body_answers_413(client: httpx.Client, postgres: str) -> None:
    before = event_count(postgres)
    huge = {**VALID, "name": "x" * 200_000}
    response = client.post(COMMANDS, json=huge)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert event_count(postgres) == before


def test_change_replace_skills_and_delete(client: httpx.Client, postgres: str) -> None:
    warrior = create(client).json()
    url = f"{COMMANDS}/{warrior['id']}"
    changed = client.patch(url, json={"name": " Miyamoto ", "dob": "1584-03-13"}, headers={"If-Match": '"1"'})
    assert changed.status_code == 202, changed.text
    assert changed.json()["version"] == 2
    skills = client.put(f"{url}/skills", json={"fight_skills": ["Bo", "Calligraphy"]})
    assert skills.status_code == 202
    assert skills.json()["version"] == 3
    deleted = client.delete(url, headers={"If-Match": '"3"'})
    assert deleted.status_code == 202
    assert deleted.json()["version"] == 4
    assert [(e[0], e[2]) for e in events_of(postgres, warrior["id"])] == [
        (
            "WarriorCreated",
            {"name": "Musashi", "dob": "1584-03-12", "fight_skills": ["Katana", "Niten Ichi-ryu"]},
        ),
        ("WarriorUpdated", {"name": "Miyamoto", "dob": "1584-03-13"}),
        ("WarriorUpdated", {"fight_skills": ["Bo", "Calligraphy"]}),
        ("WarriorDeleted", {}),
    ]
    # Deleted: every further command is 404.
    assert client.patch(url, json={"name": "Ghost"}).status_code == 404
    assert client.delete(url).status_code == 404


@pytest.mark.parametrize("method", ["PATCH", "PUT", "DELETE"])
def test_unknown_id_answers_404(client: httpx.Client, method: str) -> None:
    unknown = "01936d2e-7a1c-7b3e-9f10-4c2b8e1d2a33"
    path = f"{COMMANDS}/{unknown}" + ("/skills" if method == "PUT" else "")
    body = {"fight_skills": ["Bo"]} if method == "PUT" else {"name": "X"}
    response = client.request(method, path, json=None if method == "DELETE" else body)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_malformed_id_answers_422(client: httpx.Client) -> None:
    response = client.patch(f"{COMMANDS}/not-a-uuid", json={"name": "X"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "warrior_id"


def test_if_match_mismatch_answers_409_and_malformed_400(client: httpx.Client) -> None:
    url = f"{COMMANDS}/{create(client).json()['id']}"
    assert client.patch(url, json={"name": "X"}, headers={"If-Match": '"7"'}).status_code == 409
    assert client.patch(url, json={"name": "X"}, headers={"If-Match": "seven"}).status_code == 400
    assert client.patch(url, json={"name": "X"}, headers={"If-Match": "*"}).status_code == 202


async def test_twenty_concurrent_updates_with_one_if_match_one_wins(
    service: ServiceProcess, postgres: str
) -> None:
    with httpx.Client(base_url=service.base_url, headers=service.headers) as sync_client:
        warrior_id = create(sync_client).json()["id"]
    async with httpx.AsyncClient(base_url=service.base_url, headers=service.headers, timeout=10) as client:
        answers = await asyncio.gather(
            *(
                client.patch(
                    f"{COMMANDS}/{warrior_id}", json={"name": f"Racer {i}"}, headers={"If-Match": '"1"'}
                )
                for i in range(20)
            )
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202] + [409] * 19
    assert [e[1] for e in events_of(postgres, warrior_id)] == [1, 2]


async def test_concurrent_updates_without_if_match_all_land(service: ServiceProcess, postgres: str) -> None:
    with httpx.Client(base_url=service.base_url, headers=service.headers) as sync_client:
        warrior_id = create(sync_client).json()["id"]
    async with httpx.AsyncClient(base_url=service.base_url, headers=service.headers, timeout=10) as client:
        answers = await asyncio.gather(
            *(client.patch(f"{COMMANDS}/{warrior_id}", json={"name": f"Racer {i}"}) for i in range(10))
        )
    assert [a.status_code for a in answers] == [202] * 10
    assert sorted(a.json()["version"] for a in answers) == list(range(2, 12))
    assert [e[1] for e in events_of(postgres, warrior_id)] == list(range(1, 12))


def test_idempotent_retry_returns_the_first_answer(client: httpx.Client, postgres: str) -> None:
    key = {"Idempotency-Key": f"create-{UUID(int=event_count(postgres) + 10**6)}"}
    first = create(client, headers=key)
    before = event_count(postgres)
    again = create(client, headers=key)
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert event_count(postgres) == before
    other = client.post(COMMANDS, json={**VALID, "name": "Someone else"}, headers=key)
    assert other.status_code == 409
    assert event_count(postgres) == before


def test_idempotent_update_retry_is_not_a_version_conflict(client: httpx.Client, postgres: str) -> None:
    warrior_id = create(client).json()["id"]
    headers = {"Idempotency-Key": f"patch-{warrior_id}", "If-Match": '"1"'}
    first = client.patch(f"{COMMANDS}/{warrior_id}", json={"name": "Once"}, headers=headers)
    again = client.patch(f"{COMMANDS}/{warrior_id}", json={"name": "Once"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert len(events_of(postgres, warrior_id)) == 2


async def test_concurrent_requests_with_one_key_store_one_event(
    service: ServiceProcess, postgres: str
) -> None:
    before = event_count(postgres)
    key = {"Idempotency-Key": f"burst-{before}"}
    async with httpx.AsyncClient(base_url=service.base_url, headers=service.headers, timeout=10) as client:
        answers = await asyncio.gather(*(client.post(COMMANDS, json=VALID, headers=key) for _ in range(10)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert event_count(postgres) == before + 1


def test_health_metrics_and_openapi(client: httpx.Client) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}
    create(client)
    metrics = client.get("/metrics").text
    assert (
        'http_requests_total{method="POST",route="/api/v1/commands/warriors",service="gateway",status="202"}'
        in metrics
    )
    spec = client.get("/openapi.json").json()
    post = spec["paths"][COMMANDS]["post"]
    assert post["requestBody"]["content"]["application/json"]["example"]["name"]
    assert {"202", "400", "409", "413", "422", "503"} <= set(post["responses"])
    assert client.get("/docs").status_code == 200


def test_unknown_route_answers_problem_json(client: httpx.Client) -> None:
    response = client.get("/api/v1/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_deeply_nested_body_with_a_key_is_refused_not_a_server_error(
    client: httpx.Client, postgres: str
) -> None:
    before = event_count(postgres)
    nested = "[" * 300 + "]" * 300
    raw = ('{"name": "a", "dob": "2000-01-01", "x": ' + nested + "}").encode()
    for headers in ({"Idempotency-Key": "deep"}, {}):
        response = client.post(COMMANDS, content=raw, headers={"Content-Type": "application/json", **headers})
        assert response.status_code in (400, 422), response.text
    assert event_count(postgres) == before
