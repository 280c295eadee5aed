"""The Dagster code location through Dagster's public test API (in-process execution,
sensor contexts, a test instance), against real PostgreSQL."""

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from orchestration.assets.event_store import EVENT_STORE, UPCASTER_REGRESSION
from orchestration.assets.projections import (
    CONSISTENCY_CHECK,
    LAG_CHECK,
    build_projection_asset,
    build_projection_checks,
    lag_check_key,
    projection_key,
)
from orchestration.assets.snapshots import SNAPSHOTS
from orchestration.assets.statistics import DAILY_STATISTICS, STATISTICS_VIEW
from orchestration.definitions import ASSETS, CHECKS, defs
from orchestration.resources import ProjectionsResource
from orchestration.sensors.lag import projection_lag
from orchestration.sensors.snapshots import snapshots_due
from orchestration.sensors.store_advanced import store_advanced
from tests.dagster_support import resources
from tests.history import Event, copy_events, head, read_model_rows, write_history
from tests.support import fresh_search_engine
from warriors.config import get_settings
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.store import EventStore
from warriors.projections.catalog import ProjectionName
from warriors.readside.queries import WarriorQueries
from warriors.servers.opensearch_server import OpenSearchServer

READ_MODEL = projection_key(ProjectionName.WARRIORS_READ_MODEL)
CONSISTENCY_KEY = dg.AssetCheckKey(READ_MODEL, CONSISTENCY_CHECK)


def run(
    url: str, instance: dg.DagsterInstance, selection: dg.AssetSelection, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [*ASSETS, *CHECKS], selection=selection, resources=resources(url), instance=instance, **kwargs
    )
    assert result.success
    return result


def checks_by_name(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


@pytest.fixture
def thresholds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Small lag and snapshot thresholds for the sensors and checks."""
    monkeypatch.setenv("LAG_THRESHOLD_EVENTS", "10")
    monkeypatch.setenv("SNAPSHOT_EVERY_EVENTS", "20")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    jobs = {"rebuild_projection", "catch_up_all", "refresh_statistics", "daily_statistics", "take_snapshots",
            "consistency_check", "replay_parked", "housekeeping"}  # fmt: skip
    assert jobs <= set(repository.job_names)
    assert {s.name for s in repository.sensor_defs} == {"store_advanced", "projection_lag", "snapshots_due"}
    assert {s.name for s in repository.schedule_defs} == {
        "statistics_refresh", "daily_statistics_nightly", "nightly_consistency_check", "hourly_housekeeping",
    }  # fmt: skip
    keys = set(repository.asset_graph.get_all_asset_keys())
    assert {
        EVENT_STORE,
        READ_MODEL,
        SNAPSHOTS,
        STATISTICS_VIEW,
        DAILY_STATISTICS,
        UPCASTER_REGRESSION,
    } <= keys


def test_projection_asset_catches_up_with_metadata_and_passing_checks(
    fresh_database: str, instance: dg.DagsterInstance
) -> None:
    write_history(fresh_database, 300)  # 300 created, 300 renamed, 30 deleted

    result = run(fresh_database, instance, dg.AssetSelection.assets(READ_MODEL))

    [materialization] = result.asset_materializations_for_node(READ_MODEL.path[-1])
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["events_applied"] == 630
    assert metadata["from_position"] == 0
    assert metadata["to_position"] == head(fresh_database)
    assert metadata["lag_events_after"] == 0
    assert len(read_model_rows(fresh_database)) == 270
    checks = checks_by_name(result)
    assert checks[LAG_CHECK].passed
    assert checks[CONSISTENCY_CHECK].passed, checks[CONSISTENCY_CHECK].description


def test_consistency_check_finds_a_tampered_row(fresh_database: str, instance: dg.DagsterInstance) -> None:
    write_history(fresh_database, 50)
    run(fresh_database, instance, dg.AssetSelection.assets(READ_MODEL))
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE warriors_read_model SET name = 'Tampered' WHERE name = 'Bulk 7 renamed'")

    result = run(fresh_database, instance, dg.AssetSelection.checks(CONSISTENCY_KEY))

    check = checks_by_name(result)[CONSISTENCY_CHECK]
    assert not check.passed
    assert "Tampered" in (check.description or "")


def checkpoint_moved(url: str, seconds_ago: float) -> None:
    """The read model's checkpoint last moved `seconds_ago` (by the database's clock)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE projection_offsets SET last_processed_at = now() - make_interval(secs => %s)"
            " WHERE projection_name = 'warriors_read_model'",
            (seconds_ago,),
        )


def test_lag_sensor_runs_catch_up_and_the_check_fails_until_recovery(
    fresh_database: str, instance: dg.DagsterInstance, thresholds: None
) -> None:
    run(fresh_database, instance, dg.AssetSelection.assets(READ_MODEL))  # registered, empty
    write_history(fresh_database, 20)  # 42 events behind, threshold 10

    # Its checkpoint moved a moment ago (the live projector works through a backlog): the
    # lag check alone, no catch-up waiting for the projection's lock beside it.
    checkpoint_moved(fresh_database, seconds_ago=0)
    working = projection_lag(dg.build_sensor_context(resources=resources(fresh_database), instance=instance))
    assert isinstance(working, dg.SensorResult)
    [check_only] = working.run_requests or []
    assert check_only.asset_selection == []
    assert check_only.asset_check_keys == [lag_check_key(ProjectionName.WARRIORS_READ_MODEL)]

    checkpoint_moved(fresh_database, seconds_ago=60)  # nobody projects it
    lagging = projection_lag(dg.build_sensor_context(resources=resources(fresh_database), instance=instance))
    assert isinstance(lagging, dg.SensorResult)
    [request] = lagging.run_requests or []
    assert request.asset_selection == [READ_MODEL]
    assert request.asset_check_keys == [lag_check_key(ProjectionName.WARRIORS_READ_MODEL)]
    assert json.loads(lagging.cursor or "") == ["warriors_read_model"]

    check_alone = run(fresh_database, instance, dg.AssetSelection.checks(request.asset_check_keys[0]))
    assert not checks_by_name(check_alone)[LAG_CHECK].passed
    assert "42 events behind" in (checks_by_name(check_alone)[LAG_CHECK].description or "")

    caught_up = run(fresh_database, instance, dg.AssetSelection.assets(READ_MODEL))
    assert checks_by_name(caught_up)[LAG_CHECK].passed

    recovered = projection_lag(
        dg.build_sensor_context(cursor=lagging.cursor, resources=resources(fresh_database), instance=instance)
    )
    assert isinstance(recovered, dg.SensorResult)
    [again] = recovered.run_requests or []
    assert again.asset_selection == []
    assert (again.run_key or "").startswith("lag-recovered:")
    assert json.loads(recovered.cursor or "") == []


def test_store_advanced_sensor_requests_one_catch_up_per_head(
    fresh_database: str, instance: dg.DagsterInstance
) -> None:
    run(fresh_database, instance, dg.AssetSelection.assets(READ_MODEL))
    write_history(fresh_database, 5)  # just written: the live projector would apply these
    fresh = store_advanced(dg.build_sensor_context(resources=resources(fresh_database), instance=instance))
    assert isinstance(fresh, dg.SensorResult)
    assert not fresh.run_requests
    assert fresh.cursor == str(head(fresh_database))

    # A minute behind, but its checkpoint moved a moment ago: the live projector is working
    # through a backlog (a bulk load, a load it is behind on), and a run would only wait
    # for its lock.
    run(fresh_database, instance, dg.AssetSelection.assets(READ_MODEL))
    write_history(fresh_database, 5, created_at=datetime.now(UTC) - timedelta(minutes=1))
    checkpoint_moved(fresh_database, seconds_ago=0)
    working = store_advanced(
        dg.build_sensor_context(cursor=fresh.cursor, resources=resources(fresh_database), instance=instance)
    )
    assert isinstance(working, dg.SensorResult)
    assert not working.run_requests
    assert working.cursor == str(head(fresh_database))

    # Nobody projected: behind, and its checkpoint still for as long.
    write_history(fresh_database, 5, created_at=datetime.now(UTC) - timedelta(minutes=1))
    checkpoint_moved(fresh_database, seconds_ago=60)
    top = head(fresh_database)

    first = store_advanced(
        dg.build_sensor_context(cursor=working.cursor, resources=resources(fresh_database), instance=instance)
    )
    assert isinstance(first, dg.SensorResult)
    [request] = first.run_requests or []
    assert request.run_key == f"catch-up:{top}"
    [observation] = first.asset_events
    assert isinstance(observation, dg.AssetObservation)
    assert observation.asset_key == EVENT_STORE
    assert observation.metadata["head_position"].value == top
    assert request.asset_selection == [READ_MODEL]
    assert request.asset_check_keys == [lag_check_key(ProjectionName.WARRIORS_READ_MODEL)]
    assert first.cursor == str(top)

    again = store_advanced(
        dg.build_sensor_context(cursor=first.cursor, resources=resources(fresh_database), instance=instance)
    )
    assert isinstance(again, dg.SkipReason)


def test_snapshot_sensor_finds_busy_aggregates_and_the_run_snapshots_them(
    fresh_database: str, instance: dg.DagsterInstance, thresholds: None
) -> None:
    busy, quiet = uuid.uuid4(), uuid.uuid4()
    events: list[Event] = [
        (busy, "WarriorCreated", 1, {"name": "Busy", "dob": "1990-01-01", "fight_skills": []}),
        (quiet, "WarriorCreated", 1, {"name": "Quiet", "dob": "1990-01-01", "fight_skills": []}),
    ]
    events += [(busy, "WarriorUpdated", v, {"name": f"Busy {v}"}) for v in range(2, 26)]
    copy_events(fresh_database, events)

    tick = snapshots_due(dg.build_sensor_context(resources=resources(fresh_database), instance=instance))
    assert isinstance(tick, dg.SensorResult)
    [request] = tick.run_requests or []
    run_config = request.run_config
    assert isinstance(run_config, dict)
    assert run_config["ops"] == {"aggregate_snapshots": {"config": {"aggregate_ids": [str(busy)]}}}

    result = run(fresh_database, instance, dg.AssetSelection.assets(SNAPSHOTS), run_config=run_config)
    [materialization] = result.asset_materializations_for_node("aggregate_snapshots")
    assert materialization.metadata["snapshots_taken"].value == 1
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT aggregate_id, version FROM event_snapshots").fetchall() == [(busy, 25)]

    quiet_tick = snapshots_due(
        dg.build_sensor_context(cursor=tick.cursor, resources=resources(fresh_database), instance=instance)
    )
    assert isinstance(quiet_tick, dg.SensorResult)
    assert not quiet_tick.run_requests


async def served_statistics(url: str) -> dict[str, Any]:
    """What GET /statistics answers."""
    async with AsyncConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        return await WarriorQueries(pool, EventStore(pool, GroupCommitAppender(pool))).statistics()


def test_daily_statistics_partition_and_view_are_served_by_the_query_api(
    fresh_database: str, instance: dg.DagsterInstance
) -> None:
    day = datetime(2026, 3, 1, 12, tzinfo=UTC)
    copy_events(
        fresh_database,
        [
            (
                uuid.uuid4(),
                "WarriorCreated",
                1,
                {"name": "A", "dob": "2000-01-01", "fight_skills": ["Katana", "Bo"]},
            ),
            (
                uuid.uuid4(),
                "WarriorCreated",
                1,
                {"name": "B", "dob": "1970-06-01", "fight_skills": ["Katana"]},
            ),
        ],
        created_at=day,
    )
    write_history(fresh_database, 3, created_at=datetime(2026, 3, 2, 8, tzinfo=UTC))  # another day

    result = run(
        fresh_database, instance, dg.AssetSelection.assets(DAILY_STATISTICS), partition_key="2026-03-01"
    )
    [materialization] = result.asset_materializations_for_node("daily_warrior_statistics")
    assert materialization.metadata["warriors_created"].value == 2
    assert "Katana" in str(materialization.metadata["skill_popularity"].value)
    run(fresh_database, instance, dg.AssetSelection.assets(READ_MODEL, STATISTICS_VIEW))

    statistics = asyncio.run(served_statistics(fresh_database))
    assert statistics["by_day"] == [
        {
            "day": date(2026, 3, 1).isoformat(),
            "warriors_created": 2,
            "avg_skills": 1.5,
            "skills": [{"skill": "Katana", "warriors": 2}, {"skill": "Bo", "warriors": 1}],
            "ages": [{"from": 20, "to": 29, "warriors": 1}, {"from": 50, "to": 59, "warriors": 1}],
        }
    ]
    assert [d["day"] for d in statistics["daily"]] == ["2026-03-01", "2026-03-02"]
    assert statistics["total"] == 4  # two, and three of which one was deleted


def test_search_and_cache_projections_are_assets_with_checks_and_rebuilds(
    fresh_database: str,
    instance: dg.DagsterInstance,
    opensearch: OpenSearchServer,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEARCH_URL", opensearch.url())
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    try:
        asyncio.run(_no_search_indexes(opensearch))
        write_history(fresh_database, 100)
        names = [
            ProjectionName.WARRIORS_READ_MODEL,
            ProjectionName.WARRIORS_SEARCH,
            ProjectionName.WARRIORS_CACHE,
        ]
        assets = [build_projection_asset(name) for name in names]
        checks = [check for name in names for check in build_projection_checks(name)]
        result = dg.materialize(
            [*assets, *checks], resources=resources(fresh_database), instance=instance, raise_on_error=True
        )
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) == 9  # lag, consistency and parked, for each of the three
        assert all(e.passed for e in evaluations), [
            (e.asset_key, e.check_name, e.description) for e in evaluations
        ]

        projections = ProjectionsResource(database_url=fresh_database, batch_size=50)
        before = httpx.get(f"{opensearch.url()}/_alias/warriors").json()
        messages: list[str] = []
        report = projections.rebuild(ProjectionName.WARRIORS_SEARCH, progress=messages.append)
        after = httpx.get(f"{opensearch.url()}/_alias/warriors").json()
        assert list(after) != list(before)  # a new generation behind the alias
        assert report.events == head(fresh_database)
        projections.rebuild(ProjectionName.WARRIORS_CACHE, progress=messages.append)
        again = dg.materialize([*assets, *checks], resources=resources(fresh_database), instance=instance)
        assert all(e.passed for e in again.get_asset_check_evaluations())
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


async def _no_search_indexes(server: OpenSearchServer) -> None:
    async with fresh_search_engine(server):
        pass
