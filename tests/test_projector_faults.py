"""Projector faults: SIGKILL mid-batch, replay equality and poison events (real PostgreSQL)."""

import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tests.history import (
    ROWS,
    checkpoint,
    head,
    poison_a_warrior,
    read_model_rows,
    replay_into_shadow,
    write_history,
)
from tests.support import ROOT, ProjectorProcess, ServiceProcess, wait_for
from warriors.projections.engine import ProjectionEngine
from warriors.projections.read_model import WarriorsReadModel
from warriors.servers import free_port

INSERT_EVENT = """INSERT INTO event_store
    (event_id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata)
    VALUES (%s, %s, 'Warrior', 'WarriorUpdated', %s, %s, '{}')"""


def projector_writing(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'warriors-projector' AND backend_xid IS NOT NULL"
        ).fetchone()
    return bool(row and row[0])


async def test_sigkill_mid_batch_loses_and_doubles_nothing(fresh_database: str) -> None:
    write_history(fresh_database, 30_000)
    total = head(fresh_database)
    projector = ProjectorProcess(fresh_database, env={"PROJECTOR_BATCH_SIZE": "1000"})
    try:
        wait_for(
            lambda: 0 < checkpoint(fresh_database) < total, timeout=60, what="the projector to be mid-stream"
        )
        # Kill it while a batch has written rows but not committed them (its transaction
        # holds an xid): the middle of a batch.
        wait_for(
            lambda: projector_writing(fresh_database), timeout=30, what="a batch in the middle of writing"
        )
        os.kill(projector.process.pid, signal.SIGKILL)
        projector.process.wait()
    finally:
        projector.stop()
    killed_at = checkpoint(fresh_database)
    assert killed_at < total, "the projector finished before it could be killed"

    restarted = ProjectorProcess(fresh_database, env={"PROJECTOR_BATCH_SIZE": "1000"})
    try:
        wait_for(lambda: checkpoint(fresh_database) == total, timeout=120, what="the restarted projector")
    finally:
        restarted.stop()

    with psycopg.connect(fresh_database) as conn:
        live = conn.execute(ROWS.format("warriors_read_model")).fetchall()
        count = conn.execute("SELECT total FROM warrior_count").fetchone()
    assert len(live) == 27_000  # 30,000 created, every tenth deleted
    assert count == (27_000,)
    assert all(row[1].endswith("renamed") and row[4] == 2 for row in live)
    assert live == await replay_into_shadow(fresh_database)


async def registered_engine(pool: AsyncConnectionPool[AsyncConnection], batch_size: int) -> ProjectionEngine:
    engine = ProjectionEngine(pool, WarriorsReadModel(), batch_size)
    await engine.register()
    return engine


def operator_action(url: str, action: str) -> subprocess.CompletedProcess[str]:
    """`warriors projections ACTION warriors_read_model`, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "warriors.cli", "projections", action, "warriors_read_model"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.fixture
def pool(fresh_pool: AsyncConnectionPool[AsyncConnection]) -> AsyncConnectionPool[AsyncConnection]:
    return fresh_pool


def test_poison_event_fails_the_projection_until_parked(fresh_database: str) -> None:
    write_history(fresh_database, 3)
    with psycopg.connect(fresh_database) as conn:
        living = conn.execute(
            "SELECT aggregate_id FROM event_store GROUP BY 1 HAVING max(event_version) = 2 LIMIT 1"
        ).fetchone()
    assert living is not None
    # Version 3 on a living warrior with unreadable data, then more good events after it.
    bad_id = uuid.uuid4()
    with psycopg.connect(fresh_database) as conn:
        conn.execute(INSERT_EVENT, (bad_id, living[0], 3, '{"dob": "soon"}'))
    write_history(fresh_database, 5)

    service = ServiceProcess(fresh_database, free_port())
    projector = ProjectorProcess(fresh_database)
    try:

        def failed_status() -> dict[str, Any] | None:
            [status] = httpx.get(
                f"{service.base_url}/api/v1/queries/projections", headers=service.headers
            ).json()
            return status if status["status"] == "FAILED" else None

        status = wait_for(failed_status, timeout=30, what="the projection to fail")
        assert status["failed_event_id"] == str(bad_id)
        assert "unreadable event data" in status["last_error"]
        stuck_at = status["position"]
        assert stuck_at < head(fresh_database)

        park = operator_action(fresh_database, "park")
        assert park.returncode == 0, park.stderr
        assert f"parked event {bad_id}" in park.stderr

        wait_for(lambda: checkpoint(fresh_database) == head(fresh_database), timeout=30, what="the rest")
        # The parked warrior's later events apply too.
        with psycopg.connect(fresh_database) as conn:
            conn.execute(INSERT_EVENT, (uuid.uuid4(), living[0], 4, '{"name": "After the park"}'))
        wait_for(
            lambda: checkpoint(fresh_database) == head(fresh_database), timeout=30, what="the next event"
        )
        [status] = httpx.get(f"{service.base_url}/api/v1/queries/projections", headers=service.headers).json()
        assert status["status"] == "RUNNING"
        renamed = httpx.get(f"{service.base_url}/api/v1/queries/warriors/{living[0]}").json()
        assert (renamed["name"], renamed["version"]) == ("After the park", 4)
    finally:
        projector.stop()
        service.stop()
    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute("SELECT count(*) FROM warriors_read_model").fetchone()
        parked = conn.execute("SELECT event_id FROM projection_parked_events").fetchall()
    assert rows == (2 + 4,)  # 3 then 5 written, every tenth (the first of each) deleted
    assert parked == [(bad_id,)]


async def test_retry_after_failure_is_refused_when_not_failed(
    pool: AsyncConnectionPool[AsyncConnection],
) -> None:
    from warriors.projections.engine import ProjectionNotFailed

    engine = ProjectionEngine(pool, WarriorsReadModel())
    await engine.register()
    with pytest.raises(ProjectionNotFailed):
        await engine.retry()
    with pytest.raises(ProjectionNotFailed):
        await engine.park()


async def test_retry_applies_the_failed_event_again(
    fresh_database: str, pool: AsyncConnectionPool[AsyncConnection]
) -> None:
    write_history(fresh_database, 1)
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute("SELECT aggregate_id FROM event_store LIMIT 1").fetchone()
    assert row is not None
    engine = ProjectionEngine(pool, WarriorsReadModel())
    await engine.register()
    # Version 4 after 3 (deleted) is poison for the read model: the row is gone.
    with psycopg.connect(fresh_database) as conn:
        conn.execute(INSERT_EVENT, (uuid.uuid4(), row[0], 4, '{"name": "Ghost"}'))
    assert await engine.catch_up() == 3
    result = await engine.run_batch()
    assert result.failed
    await engine.retry()
    assert (await engine.run_batch()).failed  # the cause is still there: FAILED again


async def test_checkpoint_records_lag(
    fresh_database: str, pool: AsyncConnectionPool[AsyncConnection]
) -> None:
    write_history(fresh_database, 50)  # 105 events
    engine = await registered_engine(pool, batch_size=40)
    await engine.run_batch()
    with psycopg.connect(fresh_database) as conn:
        behind = conn.execute("SELECT lag_events, lag_seconds FROM projection_offsets").fetchone()
    assert behind is not None
    assert behind[0] == 105 - 40
    assert behind[1] > 0
    await engine.catch_up()
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT lag_events, lag_seconds FROM projection_offsets").fetchone() == (0, 0)


async def test_a_prefetched_batch_is_used_only_from_its_own_checkpoint(
    fresh_database: str, pool: AsyncConnectionPool[AsyncConnection]
) -> None:
    write_history(fresh_database, 20)  # 42 events
    engine = await registered_engine(pool, batch_size=10)
    first = await engine.run_batch(prefetch=True)  # starts reading events 11-20 elsewhere
    assert first.applied == 10
    await engine.reset()  # the checkpoint moves back to 0: the prefetched batch must not be used
    again = await engine.run_batch(prefetch=True)
    assert again.start.position == 0
    assert again.end == first.end
    assert await engine.catch_up() == 42 - 10
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT total FROM warrior_count").fetchone() == (18,)


async def test_a_replay_passes_over_an_event_parked_by_another_process(
    fresh_database: str, fresh_pool: AsyncConnectionPool[AsyncConnection]
) -> None:
    """The live engine knew the parked events before an operator parked one from the CLI
    (another engine): its later replay from 0 must pass over that event too, not FAIL on it
    again."""
    write_history(fresh_database, 30)
    poison_a_warrior(fresh_database)
    live = ProjectionEngine(fresh_pool, WarriorsReadModel(), 20)
    await live.register()
    await live.catch_up()
    assert (await status_of(fresh_pool)) == "FAILED"
    operator = ProjectionEngine(fresh_pool, WarriorsReadModel())
    await operator.park()  # as `warriors projections park` does, in its own process
    await live.catch_up()
    parked_once = read_model_rows(fresh_database)
    assert any(row[1] == "After the park" for row in parked_once)

    await live.reset()  # a replay from position 0 (as after a lost target)
    await live.catch_up()
    assert (await status_of(fresh_pool)) == "RUNNING"
    assert read_model_rows(fresh_database) == parked_once


async def status_of(pool: AsyncConnectionPool[AsyncConnection], name: str = "warriors_read_model") -> str:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT status FROM projection_offsets WHERE projection_name = %s", (name,)
        )
        row = await cursor.fetchone()
    assert row is not None
    return str(row[0])
