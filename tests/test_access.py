"""API keys and roles over HTTP, against the real service and PostgreSQL: every documented
operation without credentials, with a revoked key and with each role; READ_AUTH=required;
request metadata shown to operators only; the `warriors keys` commands."""

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from tests.support import ROOT, ServiceProcess, auth_headers, wait_for
from warriors.security.identity import KEY_PREFIX, Role, key_digest, looks_like_key, new_key
from warriors.security.key_store import create_key, revoke_key
from warriors.servers import free_port

COMMANDS = "/api/v1/commands/warriors"
QUERIES = "/api/v1/queries/warriors"
BODY = {"name": "Tomoe Gozen", "dob": "1990-01-01", "fight_skills": ["Naginata"]}
# Operator endpoints: the parked events and erasing a warrior (issue 15); monitoring reads
# (the projections' state, the metrics: issue 26) need a monitor or an operator key.
ERASE_PATH = "/api/v1/commands/warriors/{warrior_id}/erase"
OPERATOR_PATHS = {"/api/v1/queries/projections/{name}/parked", ERASE_PATH}
MONITOR_PATHS = {"/api/v1/queries/projections", "/metrics"}
OPEN_PATHS = {"/health/live", "/health/ready"}


def needed_role(method: str, path: str) -> Role | None:
    """The rule the issues state, written independently of the routes' declarations."""
    if path in OPEN_PATHS:
        return None
    if path in OPERATOR_PATHS:
        return Role.OPERATOR
    if path in MONITOR_PATHS:
        return Role.MONITOR
    if method != "get":
        return Role.WRITER
    return Role.READER


@pytest.fixture(scope="module")
def warrior(service: ServiceProcess) -> str:
    answer = httpx.post(f"{service.base_url}{COMMANDS}", json=BODY, headers=service.headers, timeout=10)
    assert answer.status_code == 202, answer.text
    warrior_id: str = answer.json()["id"]
    return warrior_id


def operations(service: ServiceProcess, warrior_id: str) -> list[tuple[str, str, str]]:
    """(method, documented path, concrete URL) of every operation in the OpenAPI document."""
    document = httpx.get(f"{service.base_url}/openapi.json", timeout=10).json()
    found: list[tuple[str, str, str]] = []
    for path, methods in document["paths"].items():
        url = path.replace("{warrior_id}", warrior_id).replace("{name}", "warriors_read_model")
        if path in ("/warrior", "/api/v1/queries/warriors/suggest"):
            url += "?t=musashi&prefix=mus"
        found.extend((method, path, url) for method in methods)
    assert len(found) >= 15, found
    return found


def call(service: ServiceProcess, method: str, url: str, headers: dict[str, str]) -> httpx.Response:
    body = {"fight_skills": ["Naginata"]} if url.endswith("/skills") else BODY
    json = body if method in ("post", "patch", "put") else None
    return httpx.request(method, f"{service.base_url}{url}", json=json, headers=headers, timeout=10)


def assert_refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_without_credentials_writes_and_operator_endpoints_answer_401(
    service: ServiceProcess, warrior: str, postgres: str
) -> None:
    before = event_count(postgres)
    for method, path, url in operations(service, warrior):
        response = call(service, method, url, {})
        if needed_role(method, path) in (Role.WRITER, Role.MONITOR, Role.OPERATOR):
            assert_refused(response, 401)
        else:  # reads are open by default, health always
            assert response.status_code < 400, (method, url, response.text)
    assert event_count(postgres) == before, "a refused write stored nothing"


@pytest.mark.parametrize("role", list(Role))
def test_each_role_reaches_exactly_what_it_may(
    service: ServiceProcess, warrior: str, postgres: str, role: Role
) -> None:
    headers = auth_headers(postgres, role)
    for method, path, url in operations(service, warrior):
        needed = needed_role(method, path)
        if method == "delete" or path == ERASE_PATH:
            continue  # last, below: each ends the warrior the other operations use
        response = call(service, method, url, headers)
        # Reads are open here (READ_AUTH=open): to every key too, a monitor's included.
        if needed in (None, Role.READER) or role.allows(needed):
            assert response.status_code < 400, (role, method, url, response.text)
        else:
            assert_refused(response, 403)
    for ending, needed in (("delete", Role.WRITER), ("erase", Role.OPERATOR)):
        other = httpx.post(f"{service.base_url}{COMMANDS}", json=BODY, headers=service.headers, timeout=10)
        url = f"{service.base_url}{COMMANDS}/{other.json()['id']}"
        ended = (
            httpx.delete(url, headers=headers)
            if ending == "delete"
            else httpx.post(f"{url}/erase", headers=headers)
        )
        if role.allows(needed):
            assert ended.status_code == 202, ended.text
        else:
            assert_refused(ended, 403)


def test_a_revoked_or_unknown_key_is_refused_everywhere(
    one_worker: ServiceProcess, warrior: str, postgres: str
) -> None:
    service = one_worker  # one worker: "refused once" means refused by every worker
    record, key = create_key(postgres, Role.OPERATOR, "to revoke")
    headers = {"X-API-Key": key}  # the other header works as well as Authorization
    read = f"{service.base_url}{QUERIES}/{warrior}"
    assert httpx.get(f"{service.base_url}/api/v1/queries/projections", headers=headers).status_code == 200
    revoke_key(postgres, record.id)
    # The worker remembered the key; it forgets it within AUTH_CACHE_SECONDS.
    wait_for(lambda: httpx.get(read, headers=headers).status_code == 401, timeout=15, what="the key refused")
    for method, _, url in operations(service, warrior):
        if not url.startswith("/health"):
            assert_refused(call(service, method, url, headers), 401)
    for unknown in ({"Authorization": f"Bearer {new_key()}"}, {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"X-API-Key": "not a key"}, {"Authorization": "Bearer"}):  # fmt: skip
        refused = httpx.post(f"{service.base_url}{COMMANDS}", json=BODY, headers=unknown)
        assert_refused(refused, 401)
        assert key not in refused.text


def test_events_record_the_key_not_a_header(service: ServiceProcess, postgres: str) -> None:
    record, key = create_key(postgres, Role.WRITER, "recorded")
    headers = {"Authorization": f"Bearer {key}", "X-User-Id": "someone-else"}
    answer = httpx.post(f"{service.base_url}{COMMANDS}", json=BODY, headers=headers)
    assert answer.status_code == 202
    with psycopg.connect(postgres) as conn:
        row = conn.execute("SELECT metadata FROM event_store WHERE aggregate_id = %s", (answer.json()["id"],))
        [(metadata,)] = row.fetchall()
    assert metadata["user_id"] == f"api-key:{record.id}"


def test_history_shows_request_metadata_to_operators_only_and_pages(
    service: ServiceProcess, postgres: str
) -> None:
    writer = auth_headers(postgres, Role.WRITER)
    created = httpx.post(f"{service.base_url}{COMMANDS}", json=BODY, headers=writer).json()
    for skill in ("Archery", "Riding", "Judo", "Sumo"):
        changed = httpx.put(
            f"{service.base_url}{COMMANDS}/{created['id']}/skills",
            json={"fight_skills": [skill]},
            headers=writer,
        )
        assert changed.status_code == 202
    history = f"{service.base_url}{QUERIES}/{created['id']}/history"

    for headers, shown in (({}, False), (writer, False), (service.headers, True)):
        events = httpx.get(history, headers=headers).json()
        assert [e["version"] for e in events] == [1, 2, 3, 4, 5]
        for event in events:
            assert ("client_ip" in event["metadata"]) is shown
            assert ("user_agent" in event["metadata"]) is shown
            assert event["metadata"]["correlation_id"]

    first = httpx.get(history, params={"limit": 2})
    assert [e["version"] for e in first.json()] == [1, 2]
    pages = [first.json()]
    following = first
    while "link" in following.headers:
        target = following.headers["link"].split(">", 1)[0].lstrip("<")
        assert following.headers["link"].endswith('rel="next"')
        following = httpx.get(f"{service.base_url}{target}")
        pages.append(following.json())
    assert [[e["version"] for e in page] for page in pages] == [[1, 2], [3, 4], [5]]
    assert httpx.get(history, params={"after_version": 5}).json() == []
    unknown = f"{service.base_url}{QUERIES}/{UUID(int=7)}/history"
    assert httpx.get(unknown, params={"after_version": 3}).status_code == 404
    assert httpx.get(history, params={"limit": 0}).status_code == 422


@pytest.fixture(scope="module")
def guarded_reads(postgres: str) -> Iterator[ServiceProcess]:
    """A service with READ_AUTH=required, and the load test's writes opened."""
    process = ServiceProcess(
        postgres, free_port(), env={"READ_AUTH": "required", "COMPAT_OPEN_WRITES": "true"}
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def one_worker(postgres: str) -> Iterator[ServiceProcess]:
    """A service of one worker, remembering keys for a second only."""
    process = ServiceProcess(postgres, free_port(), workers=1, env={"AUTH_CACHE_SECONDS": "1"})
    yield process
    process.stop()


@pytest.fixture(scope="module")
def few_guesses(postgres: str) -> Iterator[ServiceProcess]:
    """A service of one worker allowing 5 look-ups of unknown keys per client a minute."""
    process = ServiceProcess(postgres, free_port(), workers=1, env={"AUTH_UNKNOWN_KEYS_PER_MINUTE": "5"})
    yield process
    process.stop()


def test_a_client_trying_made_up_keys_is_slowed_without_look_ups(
    few_guesses: ServiceProcess, warrior: str, postgres: str
) -> None:
    """Each made-up key cost a PostgreSQL look-up (issue 26): past its budget a client gets
    429 with Retry-After before any look-up, while a key the worker knows still works and
    health stays open."""
    base = few_guesses.base_url
    known = auth_headers(postgres, Role.WRITER)
    assert httpx.post(f"{base}{COMMANDS}", json=BODY, headers=known).status_code == 202  # known from now on
    for _ in range(5):
        assert_refused(httpx.get(f"{base}{QUERIES}/{warrior}", headers={"X-API-Key": new_key()}), 401)
    # The keys' table locked: a look-up would wait for the lock (and time out here).
    with psycopg.connect(postgres) as conn, conn.transaction():
        conn.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        slowed = httpx.get(f"{base}{QUERIES}/{warrior}", headers={"X-API-Key": new_key()}, timeout=5)
        assert_refused(slowed, 429)
        assert 1 <= int(slowed.headers["retry-after"]) <= 12
        assert httpx.post(f"{base}{COMMANDS}", json=BODY, headers=known, timeout=5).status_code == 202
    assert httpx.get(f"{base}/health/ready", headers={"X-API-Key": new_key()}).status_code == 200


def test_read_auth_required_refuses_anonymous_reads(guarded_reads: ServiceProcess, postgres: str) -> None:
    base = guarded_reads.base_url
    for path in (f"{QUERIES}?term=musashi", f"{QUERIES}/count", "/warrior?t=musashi", "/counting-warriors"):
        assert_refused(httpx.get(f"{base}{path}"), 401)
        assert httpx.get(f"{base}{path}", headers=auth_headers(postgres, Role.READER)).status_code == 200
    assert httpx.get(f"{base}/health/live").status_code == 200


def test_compat_open_writes_opens_only_the_load_test_route(
    guarded_reads: ServiceProcess, postgres: str
) -> None:
    base = guarded_reads.base_url
    opened = httpx.post(f"{base}/warrior", json=BODY)
    assert opened.status_code == 201, opened.text
    assert_refused(httpx.post(f"{base}{COMMANDS}", json=BODY), 401)
    with psycopg.connect(postgres) as conn:
        row = conn.execute("SELECT metadata FROM event_store WHERE aggregate_id = %s", (opened.json()["id"],))
        [(metadata,)] = row.fetchall()
    assert metadata["user_id"] == "anonymous"


def test_the_keys_commands(postgres: str) -> None:
    env = {**os.environ, "DATABASE_URL": postgres}

    def warriors(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "warriors.cli", "keys", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    created = warriors("create", "--role", "writer", "--name", "ci deploy")
    assert created.returncode == 0, created.stderr
    [key] = created.stdout.splitlines()  # the key is standard output's only line
    assert looks_like_key(key)
    assert key.startswith(KEY_PREFIX)
    listed = warriors("list")
    [line] = [line for line in listed.stdout.splitlines() if line.endswith("ci deploy")]
    key_id = line.split()[0]
    assert " writer " in line
    assert " active " in line
    assert key not in listed.stdout + listed.stderr + created.stderr
    assert warriors("revoke", key_id).returncode == 0
    assert " revoked " in next(
        line for line in warriors("list").stdout.splitlines() if line.startswith(key_id)
    )
    missing = warriors("revoke", str(UUID(int=1)))
    assert missing.returncode == 1
    assert "no API key" in missing.stderr
    assert warriors("create", "--role", "admin").returncode == 2  # not a role
    assert warriors("create", "--role", "reader", "--name", "   ").returncode == 2


def test_a_monitor_key_reaches_metrics_and_status_and_nothing_else(
    guarded_reads: ServiceProcess, warrior: str, postgres: str
) -> None:
    """Compose's Prometheus scrapes with a monitor key (issue 26, item 4): it reads the
    metrics, the projections' status and readiness details, and with READ_AUTH=required no
    warrior; it writes, erases and operates nothing."""
    base, monitor = guarded_reads.base_url, auth_headers(postgres, Role.MONITOR)
    assert httpx.get(f"{base}/metrics", headers=monitor).status_code == 200
    assert httpx.get(f"{base}/api/v1/queries/projections", headers=monitor).status_code == 200
    assert "checks" in httpx.get(f"{base}/health/ready", headers=monitor).json()
    before = event_count(postgres)
    refused = [
        httpx.get(f"{base}{QUERIES}/{warrior}", headers=monitor),
        httpx.get(f"{base}{QUERIES}?term=gozen", headers=monitor),
        httpx.get(f"{base}/api/v1/queries/projections/warriors_read_model/parked", headers=monitor),
        httpx.post(f"{base}{COMMANDS}", json=BODY, headers=monitor),
        httpx.post(f"{base}{COMMANDS}/{warrior}/erase", headers=monitor),
        httpx.delete(f"{base}{COMMANDS}/{warrior}", headers=monitor),
    ]
    for answer in refused:
        assert_refused(answer, 403)
        assert "monitor" in answer.json()["detail"]
    assert event_count(postgres) == before


def test_role_order_and_key_shape() -> None:
    assert Role.OPERATOR.allows(Role.WRITER)
    assert Role.WRITER.allows(Role.READER)
    assert not Role.READER.allows(Role.WRITER)
    assert not Role.WRITER.allows(Role.OPERATOR)
    assert Role.OPERATOR.allows(Role.MONITOR)
    assert not Role.MONITOR.allows(Role.READER)
    assert not Role.WRITER.allows(Role.MONITOR)
    assert Role.MONITOR.allowed_by() == [Role.MONITOR, Role.OPERATOR]
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(looks_like_key(k) for k in keys)
    assert not looks_like_key(new_key()[:-1])
    assert not looks_like_key("wk_" + "é" * 43)


def event_count(postgres: str) -> int:
    with psycopg.connect(postgres) as conn:
        row: Any = conn.execute("SELECT count(*) FROM event_store").fetchone()
    return int(row[0])


def test_keys_ensure_file_keeps_one_live_key(postgres: str, tmp_path: Path) -> None:
    """`warriors keys ensure-file` (compose's Prometheus key): made once, kept while it
    works, made again once revoked; the file is 0600 and the key is never printed."""
    env = {**os.environ, "DATABASE_URL": postgres}
    path = tmp_path / "keys" / "prometheus"
    command = [sys.executable, "-m", "warriors.cli", "keys", "ensure-file", str(path),
               "--role", "operator", "--name", "prometheus"]  # fmt: skip

    def ensure() -> subprocess.CompletedProcess[str]:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done

    made = ensure()
    key = path.read_text().strip()
    assert looks_like_key(key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "created a operator key" in made.stderr
    assert key not in made.stdout + made.stderr
    assert "kept the" in ensure().stderr
    assert path.read_text().strip() == key
    with psycopg.connect(postgres) as conn:
        row = conn.execute(
            "SELECT id FROM api_keys WHERE name = 'prometheus' AND revoked_at IS NULL"
        ).fetchone()
    assert row is not None
    revoke_key(postgres, row[0])
    assert "created a" in ensure().stderr
    assert path.read_text().strip() != key
    operator_key = path.read_text().strip()
    # Upgraded to the monitor role (compose's Prometheus key since issue 26): the operator
    # key in the file is replaced and revoked.
    command[command.index("operator")] = "monitor"
    assert "created a monitor key" in ensure().stderr
    with psycopg.connect(postgres) as conn:
        roles = conn.execute(
            "SELECT role, revoked_at IS NULL FROM api_keys WHERE key_digest = ANY(%s) ORDER BY 1",
            ([key_digest(operator_key), key_digest(path.read_text().strip())],),
        ).fetchall()
    assert roles == [("monitor", True), ("operator", False)]
    assert "kept the" in ensure().stderr
