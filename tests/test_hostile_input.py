"""Hostile input over HTTP, against the real service, the live projector and a real
PostgreSQL (docs/security.md, "Hostile input"): writes only as JSON, unknown Host headers,
bounded client headers in event metadata, names and skills that hide text, and clients
that hang up mid-body."""

import re
import socket
from collections.abc import Iterator, Mapping
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.history import event_count
from tests.support import ProjectorProcess, ServiceProcess, opened_events, wait_for
from warriors.servers import free_port

COMMANDS = "/api/v1/commands/warriors"
QUERIES = "/api/v1/queries/warriors"
COMPAT = "/warrior"
VALID = {"name": "Hostile Input", "dob": "1990-01-01", "fight_skills": ["Katana"]}
JSON_BODY = b'{"name": "Forged", "dob": "1990-01-01"}'
PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def guarded(postgres: str) -> Iterator[ServiceProcess]:
    """A service of this module's own with ALLOWED_HOSTS set; one worker, so that its
    /metrics count every request it answered and its log holds only its own lines."""
    process = ServiceProcess(
        postgres, free_port(), workers=1, env={"ALLOWED_HOSTS": "warriors.example,127.0.0.1"}
    )
    yield process
    process.stop()


def created(
    client: httpx.Client, body: dict[str, Any] = VALID, headers: Mapping[str, str] | None = None
) -> str:
    response = client.post(COMMANDS, json=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def stored(postgres: str, warrior_id: str) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """The warrior's events: (version, data, metadata)."""
    return [(version, data, metadata) for _, version, data, metadata in opened_events(postgres, warrior_id)]


def assert_problem(response: httpx.Response, status: int, title: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert (body["status"], body["title"]) == (status, title)
    return body


# 1. Writes are JSON only.

MULTIPART = (
    b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nForged\r\n'
    b'--xyz\r\nContent-Disposition: form-data; name="dob"\r\n\r\n1990-01-01\r\n--xyz--\r\n'
)
NOT_JSON = [
    ("text/plain", JSON_BODY),  # a cross-site form or fetch() may send JSON text as text/plain
    ("text/plain; charset=utf-8", JSON_BODY),
    ("application/x-www-form-urlencoded", b"name=Forged&dob=1990-01-01"),
    ("multipart/form-data; boundary=xyz", MULTIPART),
    ("application/xml", b"<warrior><name>Forged</name></warrior>"),
    ("text/json", JSON_BODY),
    (None, JSON_BODY),  # no Content-Type at all
]


@pytest.mark.parametrize(("content_type", "raw"), NOT_JSON, ids=[str(c) for c, _ in NOT_JSON])
def test_a_write_not_sent_as_json_answers_415_and_stores_nothing(
    client: httpx.Client, postgres: str, content_type: str | None, raw: bytes
) -> None:
    warrior_id = created(client)
    headers = {"Content-Type": content_type} if content_type else {}
    before = event_count(postgres)
    for method, path in [
        ("POST", COMMANDS),
        ("POST", COMPAT),
        ("PATCH", f"{COMMANDS}/{warrior_id}"),
        ("PUT", f"{COMMANDS}/{warrior_id}/skills"),
    ]:
        response = client.request(method, path, content=raw, headers=headers)
        assert response.request.headers.get("content-type") == content_type  # as meant
        body = assert_problem(response, 415, "Unsupported media type")
        assert "application/json" in body["detail"]
    assert event_count(postgres) == before
    assert [version for version, _, _ in stored(postgres, warrior_id)] == [1]


def test_a_browser_form_posted_cross_site_creates_no_warrior(client: httpx.Client, postgres: str) -> None:
    before = event_count(postgres)
    form = {"name": "Forged by a form", "dob": "1990-01-01"}
    for path in (COMMANDS, COMPAT):
        assert client.post(path, data=form).status_code == 415  # application/x-www-form-urlencoded
        assert client.post(path, data=form, files={"x": b"y"}).status_code == 415  # multipart/form-data
    assert event_count(postgres) == before


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "APPLICATION/JSON", "application/merge-patch+json"],
)
def test_json_media_types_with_parameters_or_suffixes_are_accepted(
    client: httpx.Client, postgres: str, content_type: str
) -> None:
    headers = {"Content-Type": content_type}
    answer = client.post(COMMANDS, content=JSON_BODY, headers=headers)
    assert answer.status_code == 202, answer.text
    warrior = answer.json()["id"]
    assert client.post(COMPAT, content=JSON_BODY, headers=headers).status_code == 201
    patch = client.patch(f"{COMMANDS}/{warrior}", content=b'{"name": "Renamed"}', headers=headers)
    assert patch.status_code == 202, patch.text
    put = client.put(f"{COMMANDS}/{warrior}/skills", content=b'{"fight_skills": ["Bo"]}', headers=headers)
    assert put.status_code == 202, put.text
    assert [version for version, _, _ in stored(postgres, warrior)] == [1, 2, 3]


def test_no_body_and_no_content_type_is_still_an_empty_body_and_delete_needs_none(
    client: httpx.Client, postgres: str
) -> None:
    response = client.post(COMMANDS)
    assert response.request.headers.get("content-type") is None
    assert "empty" in assert_problem(response, 400, "Bad request")["detail"]
    warrior_id = created(client)
    deleted = client.delete(f"{COMMANDS}/{warrior_id}")
    assert deleted.request.headers.get("content-type") is None
    assert deleted.status_code == 202, deleted.text
    assert [version for version, _, _ in stored(postgres, warrior_id)] == [1, 2]


def test_415_is_documented_on_the_writes_with_a_body(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in [
        (COMMANDS, "post"),
        (f"{COMMANDS}/{{warrior_id}}", "patch"),
        (f"{COMMANDS}/{{warrior_id}}/skills", "put"),
        (COMPAT, "post"),
    ]:
        answer = paths[path][method]["responses"]["415"]
        assert PROBLEM_JSON in answer["content"], (path, method)
        assert "Content-Type" in answer["description"]
    assert "415" not in paths[f"{COMMANDS}/{{warrior_id}}"]["delete"]["responses"]


# 2. Unknown Host headers, with ALLOWED_HOSTS set.


def test_an_unknown_host_answers_400_and_stores_nothing(guarded: ServiceProcess, postgres: str) -> None:
    before = event_count(postgres)
    with httpx.Client(base_url=guarded.base_url, headers=guarded.headers, timeout=10) as client:
        for host in ("evil.example", "warriors.example.evil.example", "127.0.0.2", "localhost"):
            refused = client.post(COMMANDS, json=VALID, headers={"Host": host})
            body = assert_problem(refused, 400, "Unknown host")
            assert host not in refused.text, "the attacker's name is not echoed"
            assert body["detail"]
            assert_problem(client.get("/health/live", headers={"Host": host}), 400, "Unknown host")
        assert event_count(postgres) == before
        # The names listed, in any case and with any port, and the default Host (127.0.0.1:port).
        for host in ("warriors.example", "WARRIORS.Example:8443", "127.0.0.1:80"):
            assert client.get("/health/live", headers={"Host": host}).status_code == 200, host
        assert client.post(COMMANDS, json=VALID).status_code == 202
    assert event_count(postgres) == before + 1


def test_without_allowed_hosts_any_host_is_answered(client: httpx.Client) -> None:
    assert client.get("/health/live", headers={"Host": "anything.example"}).status_code == 200


# 3. Client headers kept in event metadata are bounded and validated.


def test_the_user_agent_is_cut_to_256_printable_characters(client: httpx.Client, postgres: str) -> None:
    long = created(client, headers={"User-Agent": "x" * 1000})
    assert stored(postgres, long)[0][2]["user_agent"] == "x" * 256
    # A tab and a C1 control (NEL, sent as the byte 0x85) go; the rest is kept.
    response = client.post(COMMANDS, json=VALID, headers={b"User-Agent": b"tests/2.0\t\x85 (hostile)"})
    assert response.status_code == 202, response.text
    assert stored(postgres, response.json()["id"])[0][2]["user_agent"] == "tests/2.0 (hostile)"


def test_the_causation_id_is_recorded_when_well_formed(client: httpx.Client, postgres: str) -> None:
    warrior_id = created(client, headers={"X-Causation-Id": "cause-1", "X-Correlation-Id": "corr-1"})
    metadata = stored(postgres, warrior_id)[0][2]
    assert (metadata["causation_id"], metadata["correlation_id"]) == ("cause-1", "corr-1")
    without = created(client, headers={"X-Correlation-Id": "corr-2"})
    assert stored(postgres, without)[0][2]["causation_id"] == "corr-2"


@pytest.mark.parametrize(
    "causation",
    ["", "a b", "x" * 129, b"caf\xe9", "tab\there"],
    ids=["empty", "space", "129-chars", "non-ascii", "tab"],
)
def test_a_malformed_causation_id_answers_400_and_stores_nothing(
    client: httpx.Client, postgres: str, causation: str | bytes
) -> None:
    warrior_id = created(client)
    before = event_count(postgres)
    headers = {b"X-Causation-Id": causation if isinstance(causation, bytes) else causation.encode()}
    for response in (
        client.post(COMMANDS, json=VALID, headers=headers),
        client.post(COMPAT, json=VALID, headers=headers),
        client.patch(f"{COMMANDS}/{warrior_id}", json={"name": "X"}, headers=headers),
        client.delete(f"{COMMANDS}/{warrior_id}", headers=headers),
    ):
        body = assert_problem(response, 400, "Bad request")
        assert body["detail"] == "X-Causation-Id must be 1-128 visible ASCII characters."
    assert event_count(postgres) == before


# 4. Names and skills: NFC, nothing hidden.


def test_names_and_skills_are_stored_nfc_and_found_by_search(
    client: httpx.Client, postgres: str, projector: ProjectorProcess
) -> None:
    token = f"nfc{uuid4().hex[:8]}"
    body = {"name": f"Zoe\u0308 Jose\u0301 {token}", "dob": "1990-01-01", "fight_skills": ["Cafe\u0301 fu"]}
    answer = client.post(COMMANDS, json=body)
    assert answer.status_code == 202, answer.text
    warrior_id, position = answer.json()["id"], answer.json()["position"]
    [(_, data, _)] = stored(postgres, warrior_id)
    assert (data["name"], data["fight_skills"]) == (f"Zo\u00eb Jos\u00e9 {token}", ["Caf\u00e9 fu"])
    # The projector may still be starting: wait until the read model has the warrior.
    wait_for(
        lambda: client.get(f"{QUERIES}/count", params={"position": position}).status_code == 200,
        timeout=60,
        what="the read model to apply the warrior",
    )
    for term in (f"Zo\u00eb {token}", f"zoe\u0308 {token}", f"zoe jose {token}", f"caf\u00e9 {token}"):
        found = client.get(QUERIES, params={"term": term, "position": position})
        assert found.status_code == 200, found.text
        # Other tests' warriors share words (José, café): this one, holding every word, first.
        assert found.json()[0]["id"] == warrior_id, term


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"name": "Mu\u200bsashi"}, "name", "name must not contain invisible formatting characters (U+200B)"),
        ({"name": "\u202eihsasuM"}, "name", "name must not contain invisible formatting characters (U+202E)"),
        ({"name": "\u200b\u2060"}, "name", "name must not contain invisible formatting characters (U+200B)"),
        ({"name": "\u3164 \u2800"}, "name", "name must not be blank (it has only invisible characters)"),
        ({"name": "Mu\u2028sashi"}, "name", "name must not contain line or paragraph separators (U+2028)"),
        (
            {"fight_skills": ["Katana", "Kat\ufeffana"]},
            "fight_skills[1]",
            "a skill must not contain invisible formatting characters (U+FEFF)",
        ),
    ],
)
def test_text_that_hides_characters_answers_422_naming_the_field(
    client: httpx.Client, postgres: str, body: dict[str, Any], field: str, message: str
) -> None:
    before = event_count(postgres)
    for path in (COMMANDS, COMPAT):
        response = client.post(path, json={**VALID, **body})
        problem = assert_problem(response, 422, "Invalid warrior")
        assert problem["errors"] == [{"field": field, "message": message}]
    assert event_count(postgres) == before


def test_an_emoji_sequence_is_kept_whole(client: httpx.Client, postgres: str) -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    warrior_id = created(client, {**VALID, "name": f"Tomoe {family}", "fight_skills": [family]})
    [(_, data, _)] = stored(postgres, warrior_id)
    assert (data["name"], data["fight_skills"]) == (f"Tomoe {family}", [family])


# 5. A client that hangs up mid-body.


def _counted(process: ServiceProcess, route: str, status: int) -> int:
    """How many POSTs to `route` the (one-worker) service answered with `status`."""
    metrics = httpx.get(f"{process.base_url}/metrics", headers=process.headers, timeout=5)
    assert metrics.status_code == 200, metrics.text
    sample = re.search(
        rf'^http_requests_total\{{method="POST",route="{re.escape(route)}",service="gateway",'
        rf'status="{status}"\}} ([0-9.e+]+)$',
        metrics.text,
        re.MULTILINE,
    )
    return int(float(sample.group(1))) if sample else 0


@pytest.mark.parametrize("path", [COMMANDS, COMPAT])
def test_a_client_that_disconnects_mid_body_is_no_server_error(
    guarded: ServiceProcess, postgres: str, path: str
) -> None:
    before = event_count(postgres)
    answered = _counted(guarded, path, 400)
    log_start = guarded.log_path.stat().st_size
    port = int(guarded.base_url.rsplit(":", 1)[1])
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in guarded.headers.items())
        + "Content-Length: 1000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode() + b'{"name": "')  # 10 of the 1000 bytes announced, then gone
    # Counted once the service has handled the disconnect (its one worker counts all).
    wait_for(lambda: _counted(guarded, path, 400) > answered, timeout=10, what="the disconnect to be counted")
    with guarded.log_path.open("rb") as log:
        log.seek(log_start)
        written = log.read().decode(errors="replace")
    assert "Traceback" not in written, written
    assert "ERROR" not in written, written
    assert _counted(guarded, path, 500) == 0
    assert event_count(postgres) == before
