"""Faults: the database going away answers 503 (never a stack trace) and loses nothing."""

from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.support import ServiceProcess, wait_for
from warriors.servers import free_port
from warriors.servers.embedded_postgres import EmbeddedPostgres

COMMANDS = "/api/v1/commands/warriors"
BODY = {"name": "Survivor", "dob": "1990-01-01"}


@pytest.fixture
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A server of this test's own, so stopping it disturbs no other test."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg-fault"), free_port())
    server.start()
    yield server
    server.destroy()


def test_database_down_answers_503_and_recovers(own_postgres: EmbeddedPostgres) -> None:
    from warriors.eventstore.database import apply_migrations

    apply_migrations(own_postgres.url())
    service = ServiceProcess(own_postgres.url(), free_port(), env={"DB_POOL_TIMEOUT_SECONDS": "1"})
    try:
        with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=15) as client:
            before = client.post(COMMANDS, json=BODY)
            assert before.status_code == 202

            own_postgres.stop("fast")
            for _ in range(3):  # a broken pooled connection, then no connection at all
                down = client.post(COMMANDS, json=BODY)
                assert down.status_code == 503, down.text
                assert down.headers["content-type"] == "application/problem+json"
                assert down.headers["retry-after"] == "1"
                assert "Traceback" not in down.text
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "unavailable"
            assert ready.json()["checks"]["database"].startswith("the event store is unavailable: ")
            # Anyone else learns no host, port, socket path or driver message.
            anonymous = httpx.get(f"{service.base_url}/health/ready", timeout=15)
            assert anonymous.json() == {"status": "unavailable", "checks": {"database": "unavailable"}}
            assert "event store" not in down.text  # the driver's message is logged, not answered
            assert down.json()["detail"] == "The database is not answering; retry later."

            own_postgres.start()

            def accepted_write() -> httpx.Response | None:
                response = client.post(COMMANDS, json=BODY)
                return response if response.status_code == 202 else None

            after = wait_for(
                accepted_write,
                timeout=30,
                what="writes to succeed after the database restarted",
            )
            assert client.get("/health/ready").status_code == 200
    finally:
        service.stop()
    with psycopg.connect(own_postgres.url()) as conn:
        stored = {row[0] for row in conn.execute("SELECT aggregate_id::text FROM event_store")}
    assert {before.json()["id"], after.json()["id"]} <= stored
    assert len(stored) == 2  # the refused writes stored nothing
