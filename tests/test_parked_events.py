"""Parked events as a first-class thing, against real PostgreSQL: a parked event is listed by
the API (operators), the CLI and the Dagster check; a replay before the fix fails and
changes nothing; after the fix (here: the read model's event parsing repaired, as a
deployed fix would) the replay applies it and the read model equals a fresh fold; a
discard is recorded with its reason and stops the count."""

import asyncio
import os
import subprocess
import sys
from typing import Any
from uuid import UUID

import dagster as dg
import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from orchestration.assets.projections import PARKED_CHECK, projection_key
from orchestration.definitions import ASSETS, CHECKS
from orchestration.jobs import replay_parked
from tests.dagster_support import resources
from tests.history import poison_a_warrior, read_model_rows, replay_into_shadow, write_history
from tests.support import ROOT, ServiceProcess
from warriors.domain import events as domain_events
from warriors.eventstore.records import StoredEvent
from warriors.projections import read_model
from warriors.projections.catalog import ProjectionName
from warriors.projections.engine import ProjectionEngine
from warriors.projections.read_model import WarriorsReadModel
from warriors.servers import free_port

NAME = ProjectionName.WARRIORS_READ_MODEL
PARKED_KEY = dg.AssetCheckKey(projection_key(NAME), PARKED_CHECK)


def project_and_park(url: str) -> StoredEvent:
    """Catch the read model up; it stops at the poison event, which is parked; then on."""

    async def go() -> StoredEvent:
        async with AsyncConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True}) as pool:
            engine = ProjectionEngine(pool, WarriorsReadModel(), 500)
            await engine.register()
            await engine.catch_up()
            parked = await engine.park()
            await engine.catch_up()
            return parked

    return asyncio.run(go())


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "warriors.cli", "projections", *args]
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def parked_check(url: str, instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    result = dg.materialize(
        [*ASSETS, *CHECKS], selection=dg.AssetSelection.checks(PARKED_KEY), resources=resources(url),
        instance=instance,
    )  # fmt: skip
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def replay_job(url: str, instance: dg.DagsterInstance, event_ids: list[str]) -> dg.ExecuteInProcessResult:
    config = {"ops": {"replay_parked_op": {"config": {"projection": NAME.name, "event_ids": event_ids}}}}
    return replay_parked.execute_in_process(
        run_config=config, resources=resources(url), instance=instance, raise_on_error=False
    )


def repaired_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fix an operator would deploy: an update whose date of birth is "soon" (the
    poison event's) is read as 1990-01-01."""
    parse = domain_events.event_from_data

    def repaired(event_type: str, data: dict[str, Any]) -> Any:
        personal = data.get("personal") or {}  # the current shape: upcast and opened
        if personal.get("dob") == "soon":
            data = {**data, "personal": {**personal, "dob": "1990-01-01"}}
        return parse(event_type, data)

    monkeypatch.setattr(read_model, "event_from_data", repaired)


def test_a_parked_event_is_listed_everywhere_then_replayed_after_the_fix(
    fresh_database: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = fresh_database
    write_history(url, 20)
    poison_a_warrior(url)
    parked = project_and_park(url)
    event_id = str(parked.event_id)

    service = ServiceProcess(url, free_port())
    metric = f'warriors_parked_events{{projection="{NAME.value}"}}'
    path = f"{service.base_url}/api/v1/queries/projections/{NAME.value}/parked"
    try:
        assert httpx.get(path).status_code == 401  # operators only
        [listed] = httpx.get(path, headers=service.headers).json()
        assert (listed["event_id"], listed["event_type"]) == (event_id, "WarriorUpdated")
        assert listed["aggregate_id"] == str(parked.aggregate_id)
        assert "unreadable event data" in listed["error"]
        statuses = httpx.get(f"{service.base_url}/api/v1/queries/projections", headers=service.headers).json()
        assert [s["parked_events"] for s in statuses if s["name"] == NAME.value] == [1]
        assert f"{metric} 1.0" in httpx.get(f"{service.base_url}/metrics", headers=service.headers).text
        list_then_replay_after_the_fix(url, instance, monkeypatch, event_id, parked)
        assert httpx.get(path, headers=service.headers).json() == []
        assert f"{metric} 0.0" in httpx.get(f"{service.base_url}/metrics", headers=service.headers).text
    finally:
        service.stop()


def list_then_replay_after_the_fix(
    url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    event_id: str,
    parked: StoredEvent,
) -> None:
    listing = cli(url, "parked", NAME.value)
    assert event_id in listing.stdout
    assert "WarriorUpdated" in listing.stdout
    assert "parked 1" in cli(url, "status").stdout
    check = parked_check(url, instance)
    assert not check.passed
    assert check.metadata["parked_events"].value == 1
    assert event_id in str(check.metadata["parked"].value)

    before = read_model_rows(url)
    failed = replay_job(url, instance, [event_id])  # the cause is not fixed yet
    assert not failed.success
    assert read_model_rows(url) == before, "a failed replay leaves the live read model untouched"
    assert cli(url, "parked", NAME.value).stdout.count(event_id) == 1, "still parked"

    repaired_parsing(monkeypatch)
    replayed = replay_job(url, instance, [])  # all of them
    assert replayed.success
    assert cli(url, "parked", NAME.value).stdout == ""
    assert parked_check(url, instance).passed
    rows = read_model_rows(url)
    assert rows == asyncio.run(replay_into_shadow(url)), "the read model equals a fresh fold"
    [row] = [r for r in rows if r[0] == parked.aggregate_id]
    assert (row[1], str(row[2]), row[4]) == ("After the park", "1990-01-01", 4)


def test_a_discarded_event_is_recorded_and_no_longer_waits(fresh_database: str) -> None:
    url = fresh_database
    write_history(url, 10)
    poison_a_warrior(url)
    parked = project_and_park(url)

    blank = cli(url, "discard", NAME.value, str(parked.event_id), "--reason", "  ")
    assert blank.returncode == 2
    done = cli(url, "discard", NAME.value, str(parked.event_id), "--reason", "a test event; not a warrior")
    assert done.returncode == 0, done.stderr
    assert cli(url, "parked", NAME.value).stdout == ""
    assert "a test event; not a warrior" in cli(url, "parked", NAME.value, "--discarded").stdout
    assert "parked 0" in cli(url, "status").stdout
    again = cli(url, "discard", NAME.value, str(parked.event_id), "--reason", "twice")
    assert again.returncode == 1
    nothing = cli(url, "replay-parked", NAME.value)
    assert nothing.returncode == 1
    assert "none parked" in nothing.stderr
    unknown = cli(url, "replay-parked", NAME.value, "--event", str(UUID(int=5)))
    assert unknown.returncode == 1
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT discard_reason FROM projection_parked_events WHERE event_id = %s", (parked.event_id,)
        ).fetchone()
    assert row == ("a test event; not a warrior",)
