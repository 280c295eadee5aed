"""Admission control against the real service (api/common/admission.py): past a worker's
bound, a request is answered 503 with Retry-After before any database work, reads and
writes apart, health never shed, and nothing it carried is stored.

A write slot is held by a creation whose body is still being sent (admission comes before
the body is read), so the bound is reached deterministically, without a load generator
or timing."""

import concurrent.futures
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.history import event_count
from tests.support import ServiceProcess, wait_for
from warriors.servers import free_port

COMMANDS = "/api/v1/commands/warriors"
BODY = json.dumps({"name": "Held Open", "dob": "1990-01-01"}).encode()


def _one_write_at_a_time(postgres: str, queue_seconds: float) -> Iterator[ServiceProcess]:
    """One worker that runs one write at a time, with one place in line."""
    env = {
        "ADMISSION_WRITES_IN_FLIGHT": "1",
        "ADMISSION_QUEUE": "1",
        "ADMISSION_QUEUE_SECONDS": str(queue_seconds),
    }
    process = ServiceProcess(postgres, free_port(), workers=1, env=env)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def patient(postgres: str) -> Iterator[ServiceProcess]:
    """A place in line kept for a minute: longer than any step of the test takes."""
    yield from _one_write_at_a_time(postgres, 60)


@pytest.fixture(scope="module")
def impatient(postgres: str) -> Iterator[ServiceProcess]:
    yield from _one_write_at_a_time(postgres, 0.5)


@contextmanager
def held_write(service: ServiceProcess) -> Iterator[socket.socket]:
    """A creation whose headers are sent and whose body is not: it holds the write slot
    until the caller sends the body (`finish`) or the block ends (closed)."""
    port = int(service.base_url.rsplit(":", 1)[1])
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    auth = service.headers["Authorization"]
    conn.sendall(
        f"POST {COMMANDS} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY[:5]
    )
    try:
        yield conn
    finally:
        conn.close()


def finish(conn: socket.socket) -> int:
    """Send the rest of the held body; the status it is answered."""
    conn.sendall(BODY[5:])
    return int(conn.recv(65536).split(b" ", 2)[1])


def _metric(service: ServiceProcess, prefix: str) -> float:
    text = httpx.get(f"{service.base_url}/metrics", headers=service.headers).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def shed_count(service: ServiceProcess, reason: str) -> float:
    return _metric(service, f'http_requests_shed_total{{kind="write",reason="{reason}",service=')


def writes_in_flight(service: ServiceProcess) -> float:
    return _metric(service, 'http_requests_admitted_in_flight{kind="write",')


def admitted(service: ServiceProcess) -> None:
    """Wait until the held creation holds the write slot."""
    wait_for(lambda: writes_in_flight(service) == 1, timeout=10, what="the held creation admitted")


def create(service: ServiceProcess, name: str) -> httpx.Response:
    body = {"name": name, "dob": "1990-01-01"}
    return httpx.post(f"{service.base_url}{COMMANDS}", json=body, headers=service.headers, timeout=10)


def test_past_the_bound_a_write_is_shed_with_retry_after_and_stores_nothing(
    patient: ServiceProcess, postgres: str
) -> None:
    service = patient
    before_shed = shed_count(service, "queue_full")
    with held_write(service) as held, concurrent.futures.ThreadPoolExecutor(1) as pool:
        admitted(service)
        stored = event_count(postgres)
        # The slot is taken: a creation waits in line (the one place), and the next is
        # shed at once.
        in_line = pool.submit(create, service, "Waits In Line")
        wait_for(
            lambda: _metric(service, 'http_requests_waiting_admission{kind="write",') == 1,
            timeout=10, what="a creation waiting in line",
        )  # fmt: skip
        shed = wait_for(
            lambda: ((r := create(service, "Shed At Once")).status_code == 503 and r) or None,
            timeout=10, what="a creation shed while one holds the slot and one waits",
        )  # fmt: skip
        assert shed.headers["Retry-After"] == "1"
        assert shed.headers["Content-Type"] == "application/problem+json"
        assert shed.json()["title"] == "Overloaded"
        # Reads have their own bound, and health is never shed.
        assert httpx.get(f"{service.base_url}/api/v1/queries/warriors/count").status_code == 200
        assert httpx.get(f"{service.base_url}/health/ready").status_code == 200
        assert finish(held) == 202  # the held one completes, and hands its slot on
        assert in_line.result(timeout=10).status_code == 202
    assert event_count(postgres) == stored + 2  # the held and the waiting one; not the shed
    assert shed_count(service, "queue_full") > before_shed
    assert create(service, "After The Flood").status_code == 202


def test_a_request_waits_in_line_no_longer_than_the_budget(impatient: ServiceProcess, postgres: str) -> None:
    service = impatient
    before_shed = shed_count(service, "queue_time")
    with held_write(service) as held:
        wait_for(lambda: httpx.get(f"{service.base_url}/health/live").status_code == 200, what="the service")
        stored = event_count(postgres)
        # The slot stays held past the 0.5 s budget: the waiter is answered 503, not left waiting.
        waited = wait_for(
            lambda: ((r := create(service, "Waits Too Long")).status_code == 503 and r) or None,
            timeout=10, what="a creation refused after its time in line",
        )  # fmt: skip
        assert waited.headers["Retry-After"] == "1"
        assert event_count(postgres) == stored
        assert finish(held) == 202
    assert shed_count(service, "queue_time") > before_shed
