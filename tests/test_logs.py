"""Structured logs: with LOG_FORMAT=json every process writes one JSON object per line, and a
request's correlation id is on the lines of the API (the command stored), the relay (the
event published) and the projector (the event applied from Kafka) that concern it."""

import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support import LoggedProcess, ProjectorProcess, ServiceProcess, wait_for
from warriors.servers import free_port
from warriors.servers.kafka_broker import KafkaBroker

LOGS = {"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The log's lines that are JSON objects (the processes' own; a child's start-up banner
    printed before logging is configured is not)."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            found.append(orjson.loads(line))  # a line that starts as JSON must be JSON
    return found


def with_correlation(path: Path, correlation_id: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(path) if line.get("correlation_id") == correlation_id]


def test_a_requests_correlation_id_is_on_every_processs_json_lines(
    fresh_database: str, broker: KafkaBroker
) -> None:
    bus = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers(), "KAFKA_PARTITIONS": "3"}
    env = {**bus, **LOGS}
    service = ServiceProcess(fresh_database, free_port(), env=env)
    relay = LoggedProcess(["-m", "warriors.cli", "relay"], {"DATABASE_URL": fresh_database, **env}, "relay")
    projector = ProjectorProcess(fresh_database, env=env)
    correlation_id = f"logs-{uuid.uuid4().hex}"
    try:
        answer = httpx.post(
            f"{service.base_url}/api/v1/commands/warriors",
            json={"name": "Tomoe Gozen", "dob": "1990-01-01"},
            headers={**service.headers, "X-Correlation-Id": correlation_id},
        )
        assert answer.status_code == 202, answer.text
        warrior_id = answer.json()["id"]
        # Each process names itself on its lines: the HTTP entry point is the "gateway".
        processes = {"gateway": service, "relay": relay, "projector": projector}
        for role, process in processes.items():
            found = wait_for(
                lambda p=process: with_correlation(p.log_path, correlation_id),  # type: ignore[misc]
                timeout=90,
                what=f"a JSON line of the {role} with the request's correlation id ({process.log_path})",
            )
            assert any(warrior_id in line["message"] for line in found), found
            for line in found:
                assert {"time", "level", "logger", "message", "process"} <= set(line)
        assert all(
            line["process"] == "gateway" for line in with_correlation(service.log_path, correlation_id)
        )
        assert json_lines(projector.log_path), "the projector logs JSON"
    finally:
        projector.stop()
        relay.stop()
        service.stop()
