"""The Read API over HTTP, with the live projector running, against real PostgreSQL."""

import asyncio
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest

from tests.support import ProjectorProcess, ServiceProcess, wait_for

COMMANDS = "/api/v1/commands/warriors"
QUERIES = "/api/v1/queries/warriors"


@pytest.fixture
def client(service: ServiceProcess, projector: ProjectorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
        yield client


def create(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"name": f"Warrior {uuid4().hex[:8]}", "dob": "1990-01-01", **fields}
    response = client.post(COMMANDS, json=body)
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


def caught_up(client: httpx.Client) -> bool:
    return all(p["lag_events"] == 0 for p in client.get("/api/v1/queries/projections").json())


def test_get_by_id_answers_what_was_written(client: httpx.Client) -> None:
    created = create(client, name="  Tomoe Gozen ", fight_skills=["Naginata", "Archery"])
    response = client.get(f"{QUERIES}/{created['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Tomoe Gozen"
    assert body["dob"] == "1990-01-01"
    assert body["fight_skills"] == ["Naginata", "Archery"]
    assert body["version"] == 1
    assert body["created_at"] is not None
    assert response.headers["etag"] == '"1"'


def test_get_unknown_deleted_and_malformed_ids(client: httpx.Client) -> None:
    assert client.get(f"{QUERIES}/{uuid4()}").status_code == 404
    created = create(client)
    deleted = client.delete(f"{COMMANDS}/{created['id']}")
    assert deleted.status_code == 202
    # Its Location (with ?min_version=) reads the delete; a bare GET may still see the
    # row until the projector applies it (eventual consistency, by design).
    assert client.get(deleted.headers["location"]).status_code == 404
    malformed = client.get(f"{QUERIES}/not-a-uuid")
    assert malformed.status_code == 422
    assert malformed.headers["content-type"] == "application/problem+json"


def test_history_lists_the_events_in_order(client: httpx.Client) -> None:
    created = create(client)
    client.patch(f"{COMMANDS}/{created['id']}", json={"name": "Renamed"})
    client.delete(f"{COMMANDS}/{created['id']}")
    history = client.get(f"{QUERIES}/{created['id']}/history").json()
    assert [(e["version"], e["event_type"]) for e in history] == [
        (1, "WarriorCreated"), (2, "WarriorUpdated"), (3, "WarriorDeleted"),
    ]  # fmt: skip
    assert history[1]["data"] == {"name": "Renamed"}
    assert history[0]["metadata"]["correlation_id"]
    assert client.get(f"{QUERIES}/{uuid4()}/history").status_code == 404


def test_newest_first_without_a_term(client: httpx.Client) -> None:
    ids = [create(client)["id"] for _ in range(3)]
    last = create(client)
    newest = client.get(QUERIES, params={"position": last["position"]}).json()
    assert isinstance(newest, list), newest
    assert [w["id"] for w in newest[:4]] == [last["id"], *reversed(ids)]
    assert len(client.get(QUERIES, params={"limit": 2}).json()) == 2
    assert client.get(QUERIES, params={"limit": 51}).status_code == 422
    assert client.get(QUERIES, params={"limit": 0}).status_code == 422


def test_position_waits_for_the_read_model(client: httpx.Client) -> None:
    created = create(client, name="Waited For")
    found = client.get(QUERIES, params={"term": "Waited For", "position": created["position"]}).json()
    assert created["id"] in [w["id"] for w in found]
    header = client.get(f"{QUERIES}/count", headers={"X-Min-Position": str(created["position"])})
    assert header.status_code == 200
    unknown = client.get(f"{QUERIES}/count", params={"position": 10**12})
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    "term", ["%", "'", '"', "\\", "' OR 1=1 --", "x" * 1000, "()", "a & b | !c", "___", "日本"]
)
def test_any_term_answers_without_a_server_error(client: httpx.Client, term: str) -> None:
    response = client.get(QUERIES, params={"term": term})
    assert response.status_code == 200, response.text
    assert len(response.json()) <= 50


def test_suggest(client: httpx.Client) -> None:
    created = create(client, name="Zatoichi Blindswordsman")
    for _ in range(12):
        create(client, name=f"Zatanna {uuid4().hex[:6]}")
    client.get(f"{QUERIES}/count", params={"position": created["position"]})
    wait_for(lambda: caught_up(client), what="the projector to catch up")
    suggestions = client.get(f"{QUERIES}/suggest", params={"prefix": "zAT"}).json()["suggestions"]
    assert len(suggestions) == 10
    assert suggestions == sorted(suggestions, key=str.lower)
    zato = client.get(f"{QUERIES}/suggest", params={"prefix": "ZATO"}).json()["suggestions"]
    assert zato == ["Zatoichi Blindswordsman"]
    assert all(s.lower().startswith("zat") for s in suggestions)
    assert client.get(f"{QUERIES}/suggest").status_code == 422
    assert client.get(f"{QUERIES}/suggest", params={"prefix": "  "}).status_code == 422
    assert client.get(f"{QUERIES}/suggest", params={"prefix": "%"}).json() == {"suggestions": []}


def test_statistics_after_a_refresh(client: httpx.Client, postgres: str) -> None:
    created = create(client, fight_skills=["a", "b"])
    client.get(f"{QUERIES}/count", params={"position": created["position"]})
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute("SELECT refresh_warrior_statistics()")
    stats = client.get("/api/v1/queries/statistics").json()
    assert stats["total"] == client.get(f"{QUERIES}/count").json()["count"]
    assert sum(day["warriors_created"] for day in stats["daily"]) == stats["total"]
    assert stats["daily"][-1]["avg_skills"] is not None


def test_projections_status(client: httpx.Client) -> None:
    created = create(client)
    client.get(f"{QUERIES}/count", params={"position": created["position"]})
    [status] = client.get("/api/v1/queries/projections").json()
    assert status["name"] == "warriors_read_model"
    assert status["status"] == "RUNNING"
    assert status["position"] >= created["position"]
    assert set(status) >= {"lag_events", "lag_seconds", "last_error", "failed_event_id", "last_processed_at"}


async def test_read_after_write_under_concurrent_load(
    service: ServiceProcess, projector: ProjectorProcess
) -> None:
    """Every client follows its Location right after the 202: never a 404, always its data."""
    failures: list[str] = []

    async def one_client(client: httpx.AsyncClient, n: int) -> None:
        for i in range(15):
            name = f"Follower {n}-{i}"
            created = await client.post(COMMANDS, json={"name": name, "dob": "1990-01-01"})
            read = await client.get(created.headers["location"])
            if read.status_code != 200 or read.json()["name"] != name:
                failures.append(f"{name}: {read.status_code}")
            changed = await client.patch(f"{COMMANDS}/{created.json()['id']}", json={"name": name + "!"})
            reread = await client.get(changed.headers["location"])
            if reread.status_code != 200 or reread.json()["name"] != name + "!":
                failures.append(f"{name} after PATCH: {reread.status_code} {reread.text[:80]}")

    async with httpx.AsyncClient(base_url=service.base_url, headers=service.headers, timeout=20) as client:
        await asyncio.gather(*(one_client(client, n) for n in range(32)))
    assert failures == []


async def test_count_is_exact_after_1000_creations_and_100_deletions(
    service: ServiceProcess, projector: ProjectorProcess, postgres: str
) -> None:
    limit = asyncio.Semaphore(64)

    async def send(client: httpx.AsyncClient, method: str, url: str, body: Any = None) -> httpx.Response:
        async with limit:
            return await client.request(method, url, json=body)

    async with httpx.AsyncClient(base_url=service.base_url, headers=service.headers, timeout=30) as client:
        before_answer = await client.get(f"{QUERIES}/count")
        created = await asyncio.gather(
            *(
                send(client, "POST", COMMANDS, {"name": f"Counted {i}", "dob": "1990-01-01"})
                for i in range(1000)
            )
        )
        assert [r.status_code for r in created] == [202] * 1000
        deleted = await asyncio.gather(
            *(send(client, "DELETE", f"{COMMANDS}/{r.json()['id']}") for r in created[:100])
        )
        assert [r.status_code for r in deleted] == [202] * 100
        last = max(r.json()["position"] for r in deleted)
        await client.get(f"{QUERIES}/count", params={"position": last})
        count = (await client.get(f"{QUERIES}/count")).json()["count"]
    with psycopg.connect(postgres) as conn:
        rows = conn.execute("SELECT count(*) FROM warriors_read_model").fetchone()
        living = conn.execute(
            "SELECT count(DISTINCT aggregate_id) FILTER (WHERE event_type = 'WarriorCreated')"
            " - count(DISTINCT aggregate_id) FILTER (WHERE event_type IN ('WarriorDeleted', 'WarriorErased'))"
            " FROM event_store"
        ).fetchone()
    assert rows is not None
    assert living is not None
    assert count == rows[0] == living[0]
    assert count >= before_answer.json()["count"] + 900 - 1  # other tests may delete one of theirs


@pytest.mark.parametrize("prefix", ["\x00", "a\x00b", "\t", "x\x7f"])
def test_suggest_refuses_control_characters(client: httpx.Client, prefix: str) -> None:
    assert client.get(f"{QUERIES}/suggest", params={"prefix": prefix}).status_code == 422


@pytest.mark.parametrize("header", [b"abc", "²".encode("latin-1"), b"1" * 19, b"-1", b""])
def test_malformed_min_position_header_answers_400(client: httpx.Client, header: bytes) -> None:
    response = client.get(f"{QUERIES}/count", headers={b"X-Min-Position": header})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_a_search_with_position_is_never_answered_from_the_answer_cache(client: httpx.Client) -> None:
    """Searches are answered again for SEARCH_CACHE_SECONDS (1 s) from each worker's answer
    cache; a search with `?position=` waits for the read model and asks it."""
    word = f"Cachebypass{uuid4().hex[:8]}"
    for _ in range(4):  # both workers now hold "nothing found" for this term
        assert client.get(QUERIES, params={"term": word}).json() == []
    position = create(client, name=f"Tomoe {word}")["position"]
    found = client.get(QUERIES, params={"term": word, "position": position}).json()
    assert [w["name"] for w in found] == [f"Tomoe {word}"]
