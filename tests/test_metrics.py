"""The platform's metrics as `make run` serves them: the HTTP service and the projector share
a Prometheus multiprocess folder, and `/metrics` shows the projector's applied events and
the lag read live from PostgreSQL. Under writes the series move as they should: applied
events grow by what was written, lag grows while the projector is stopped and returns
to 0 once it runs again."""

import re
import tempfile
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support import ProjectorProcess, ServiceProcess, wait_for
from warriors.servers import free_port

PROJECTION = "warriors_read_model"


@pytest.fixture
def platform(fresh_database: str) -> Iterator[tuple[ServiceProcess, dict[str, str]]]:
    folder = tempfile.mkdtemp(prefix="warriors-test-metrics-")
    env = {"PROMETHEUS_MULTIPROC_DIR": folder}
    service = ServiceProcess(fresh_database, free_port(), workers=2, env=env)
    try:
        yield service, env
    finally:
        service.stop()


def sample(text: str, name: str, labels: str = "") -> float | None:
    """One series' value in a Prometheus text exposition (None when absent)."""
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, flags=re.MULTILINE)
    return float(found.group(1)) if found else None


def scrape(service: ServiceProcess) -> str:
    answer = httpx.get(f"{service.base_url}/metrics", headers=service.headers, timeout=10)
    assert answer.status_code == 200
    return answer.text


def write(service: ServiceProcess, count: int) -> None:
    with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
        for _ in range(count):
            body = {"name": f"Metric {uuid.uuid4().hex[:8]}", "dob": "1990-01-01"}
            assert client.post("/api/v1/commands/warriors", json=body).status_code == 202


def test_lag_and_applied_events_move_under_writes(
    platform: tuple[ServiceProcess, dict[str, str]], fresh_database: str
) -> None:
    service, env = platform
    labels = f'{{projection="{PROJECTION}"}}'
    applied_name, lag_name = "warriors_projection_events_applied_total", "warriors_projection_lag_events"

    def applied() -> float:
        return sample(scrape(service), applied_name, labels) or 0.0

    projector = ProjectorProcess(fresh_database, env=env)
    try:
        write(service, 30)
        wait_for(lambda: applied() >= 30, timeout=30, what="the projector's applied events in /metrics")
        wait_for(lambda: sample(scrape(service), lag_name, labels) == 0, timeout=30, what="lag 0")
    finally:
        projector.stop()
    before = applied()

    write(service, 25)  # nobody projects them: the lag shows exactly them
    text = scrape(service)
    assert sample(text, lag_name, labels) == 25
    assert (sample(text, "warriors_projection_lag_seconds", labels) or 0) > 0
    assert sample(text, "warriors_parked_events", labels) == 0
    assert sample(text, "warriors_projection_failed", labels) == 0
    assert (sample(text, "warriors_append_batch_size_count") or 0) >= 1
    assert applied() == before

    projector = ProjectorProcess(fresh_database, env=env)
    try:
        wait_for(lambda: sample(scrape(service), lag_name, labels) == 0, timeout=30, what="the lag back to 0")
        assert applied() == before + 25
    finally:
        projector.stop()


def test_the_projector_serves_its_own_metrics_when_asked(fresh_database: str) -> None:
    """METRICS_PORT (compose): the projector's /metrics, with what it applied."""
    port = free_port()
    service = ServiceProcess(fresh_database, free_port())
    projector = ProjectorProcess(fresh_database, env={"METRICS_PORT": str(port)})
    try:
        write(service, 5)
        labels = f'{{projection="{PROJECTION}"}}'

        def applied() -> float | None:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            return sample(text, "warriors_projection_events_applied_total", labels)

        assert wait_for(lambda: (applied() or 0) >= 5, timeout=30, what="the projector's own /metrics")
    finally:
        projector.stop()
        service.stop()
