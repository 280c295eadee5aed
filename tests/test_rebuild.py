"""Blue/green rebuild of the read model (real PostgreSQL): equal to a replay, the count
and checkpoint moved with it, a poison event leaves the live table alone, and two
rebuilds of one projection never overlap."""

import asyncio
import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tests.history import (
    checkpoint,
    copy_events,
    head,
    poison_a_warrior,
    read_model_rows,
    replay_into_shadow,
    write_history,
)
from tests.support import ROOT
from warriors.projections.engine import ProjectionEngine
from warriors.projections.read_model import WarriorsReadModel
from warriors.projections.rebuild import RebuildFailed, RebuildInProgress, rebuild_blue_green

Pool = AsyncConnectionPool[AsyncConnection]


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'warriors_read_model%'")
        return {row[0] for row in rows}


async def live_engine(pool: Pool) -> ProjectionEngine:
    engine = ProjectionEngine(pool, WarriorsReadModel(), 500)
    await engine.register()
    return engine


async def test_rebuild_equals_a_replay_and_moves_count_and_checkpoint(
    fresh_database: str, fresh_pool: Pool
) -> None:
    write_history(fresh_database, 2000)
    engine = await live_engine(fresh_pool)
    await engine.catch_up()
    with psycopg.connect(fresh_database, autocommit=True) as conn:  # damage the live table
        conn.execute("DELETE FROM warriors_read_model WHERE name LIKE 'Bulk 1%'")
    messages: list[str] = []

    report = await rebuild_blue_green(
        fresh_pool, WarriorsReadModel(), batch_size=500, progress=messages.append
    )

    assert report.events == head(fresh_database) == checkpoint(fresh_database) == report.position
    rows = read_model_rows(fresh_database)
    assert len(rows) == 1800
    assert rows == await replay_into_shadow(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT total FROM warrior_count").fetchone() == (1800,)
        shadow_rows = conn.execute(
            "SELECT count(*) FROM projection_offsets WHERE projection_name LIKE '%shadow'"
        ).fetchone()
    assert shadow_rows == (0,)
    assert tables(fresh_database) == {"warriors_read_model"}
    assert any("swapped in" in message for message in messages)

    write_history(fresh_database, 10)  # the live projection goes on from the moved checkpoint
    assert await engine.catch_up() == 21
    assert len(read_model_rows(fresh_database)) == 1809


async def test_a_poison_event_stops_the_rebuild_and_leaves_the_live_table(
    fresh_database: str, fresh_pool: Pool
) -> None:
    write_history(fresh_database, 100)
    engine = await live_engine(fresh_pool)
    await engine.catch_up()
    before = read_model_rows(fresh_database)
    copy_events(fresh_database, [(uuid.uuid4(), "WarriorUpdated", 1, {"name": "Nobody"})])

    with pytest.raises(RebuildFailed, match="does not exist"):
        await rebuild_blue_green(fresh_pool, WarriorsReadModel(), batch_size=500)

    assert read_model_rows(fresh_database) == before
    assert tables(fresh_database) == {"warriors_read_model"}


async def test_two_rebuilds_of_one_projection_never_overlap(fresh_database: str, fresh_pool: Pool) -> None:
    write_history(fresh_database, 10)
    await live_engine(fresh_pool)
    with psycopg.connect(fresh_database, autocommit=True) as other:  # a rebuild in progress elsewhere
        other.execute("SELECT pg_advisory_lock(hashtextextended('rebuild:warriors_read_model', 0))")
        with pytest.raises(RebuildInProgress):
            await rebuild_blue_green(fresh_pool, WarriorsReadModel())
        assert tables(fresh_database) == {"warriors_read_model"}
        other.execute("SELECT pg_advisory_unlock(hashtextextended('rebuild:warriors_read_model', 0))")
    report = await rebuild_blue_green(fresh_pool, WarriorsReadModel())  # released: it runs
    assert report.events == head(fresh_database)


def test_the_cli_rebuilds_and_refuses_a_second_rebuild(fresh_database: str) -> None:
    write_history(fresh_database, 100)
    done = rebuild_command(fresh_database)
    assert done.returncode == 0, done.stderr
    assert "swapped in at position" in done.stderr
    assert len(read_model_rows(fresh_database)) == 90

    with psycopg.connect(fresh_database, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtextextended('rebuild:warriors_read_model', 0))")
        refused = rebuild_command(fresh_database)
        other.execute("SELECT pg_advisory_unlock(hashtextextended('rebuild:warriors_read_model', 0))")
    assert refused.returncode == 1
    assert "already running" in refused.stderr


def rebuild_command(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warriors.cli", "projections", "rebuild", "warriors_read_model"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True, check=False,
    )  # fmt: skip


async def test_the_rebuild_passes_over_parked_events(fresh_database: str, fresh_pool: Pool) -> None:
    write_history(fresh_database, 50)
    poison_a_warrior(fresh_database)
    engine = await live_engine(fresh_pool)
    await engine.catch_up()
    await engine.park()
    await engine.catch_up()
    before = read_model_rows(fresh_database)
    assert any(row[1] == "After the park" for row in before)

    await rebuild_blue_green(fresh_pool, WarriorsReadModel(), batch_size=40)

    assert read_model_rows(fresh_database) == before


async def test_the_swap_waits_for_readers_without_blocking_new_ones(
    fresh_database: str, fresh_pool: Pool
) -> None:
    write_history(fresh_database, 100)
    await (await live_engine(fresh_pool)).catch_up()
    gave_way = asyncio.Event()

    def progress(message: str) -> None:
        if "undone" in message:
            gave_way.set()

    with psycopg.connect(fresh_database) as reader:  # a long read holds the live table
        reader.execute("LOCK TABLE warriors_read_model IN ACCESS SHARE MODE")
        rebuild = asyncio.create_task(rebuild_blue_green(fresh_pool, WarriorsReadModel(), progress=progress))
        await asyncio.wait_for(gave_way.wait(), timeout=30)
        with psycopg.connect(fresh_database) as other:  # meanwhile, other readers are served
            assert other.execute("SELECT count(*) FROM warriors_read_model").fetchone() == (90,)
        reader.rollback()
    report = await asyncio.wait_for(rebuild, timeout=60)
    assert report.events == head(fresh_database)
    assert len(read_model_rows(fresh_database)) == 90


async def test_a_rebuild_before_any_projector_ran_leaves_the_checkpoint_at_the_head(
    fresh_database: str, fresh_pool: Pool
) -> None:
    """The swap moves the live checkpoint: a projection never registered had no row to
    move, and `?position=` then waited in vain on a complete table."""
    write_history(fresh_database, 10)
    report = await rebuild_blue_green(fresh_pool, WarriorsReadModel(), batch_size=500)
    assert checkpoint(fresh_database) == report.position == head(fresh_database)
