"""The upcaster regression asset, in-process against real PostgreSQL: it passes on a store
the code reads; with a deliberately broken upcaster (a new schema version whose step from
the stored one raises) its blocking check fails and a rebuild refuses to start, leaving
the live read model untouched; with a working upcaster both go through."""

import asyncio
from typing import Any

import dagster as dg
import pytest
from psycopg_pool import AsyncConnectionPool

from orchestration.assets.event_store import EVERY_VERSION_READS, UPCASTER_REGRESSION
from orchestration.definitions import ASSETS, CHECKS
from orchestration.jobs import rebuild_projection
from tests.dagster_support import resources
from tests.history import read_model_rows, write_history
from warriors.domain.events import CURRENT_SCHEMA_VERSIONS
from warriors.domain.upcasting import UPCASTERS
from warriors.projections.engine import ProjectionEngine
from warriors.projections.read_model import WarriorsReadModel


def regression(url: str, instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    result = dg.materialize(
        [*ASSETS, *CHECKS], selection=dg.AssetSelection.assets(UPCASTER_REGRESSION), resources=resources(url),
        instance=instance, raise_on_error=False,
    )  # fmt: skip
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == EVERY_VERSION_READS
    return evaluation


def rebuild(url: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return rebuild_projection.execute_in_process(
        resources=resources(url), instance=instance, raise_on_error=False
    )


def project(url: str) -> None:
    async def go() -> None:
        async with AsyncConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
            engine = ProjectionEngine(pool, WarriorsReadModel(), 500)
            await engine.register()
            await engine.catch_up()

    asyncio.run(go())


def test_a_broken_upcaster_fails_the_check_and_blocks_a_rebuild(
    fresh_database: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_history(fresh_database, 20)  # created and renamed: WarriorCreated v1, WarriorUpdated v1
    project(fresh_database)
    check = regression(fresh_database, instance)
    assert check.passed, check.description
    assert check.metadata["failures"].value == 0

    # The next release reads WarriorUpdated at version 3, and its step from 2 is broken
    # (the stored version-1 events go through the real step to 2 first).
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("nickname")

    monkeypatch.setitem(CURRENT_SCHEMA_VERSIONS, "WarriorUpdated", 3)
    monkeypatch.setitem(UPCASTERS._steps, ("WarriorUpdated", 2), broken)
    failed = regression(fresh_database, instance)
    assert not failed.passed
    assert "WarriorUpdated v1" in (failed.description or "")
    before = read_model_rows(fresh_database)
    refused = rebuild(fresh_database, instance)
    assert not refused.success
    failures = [f"{e.message} {e.event_specific_data}" for e in refused.all_events if e.is_failure]
    assert any("upcaster regression fails" in failure for failure in failures), failures
    assert read_model_rows(fresh_database) == before, "the live read model is untouched"

    # Fixed: the step adds the new field's default; the check passes and rebuilds run.
    monkeypatch.setitem(UPCASTERS._steps, ("WarriorUpdated", 2), lambda data: {**data})
    assert regression(fresh_database, instance).passed
    assert rebuild(fresh_database, instance).success
    assert read_model_rows(fresh_database) == before
