"""Creations projected inline (warriors/projections/inline.py), against real PostgreSQL and
as the API's own role: the row, its words and the count exist when the append commits;
the projector then finds them applied and goes on; an append that is not stored writes
no row; a blue/green rebuild under inline creations ends equal to a replay of the store.
A flush of inline creations wakes no projector, and a reader waiting on a position does."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tests.history import checkpoint, counted, read_model_rows, replay_into_shadow, write_history
from tests.support import ProjectorProcess, ServiceProcess, wait_for
from warriors.application.warrior_commands import RequestContext, WarriorCommands
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.records import IdempotencyKey
from warriors.eventstore.roles import ServiceRole
from warriors.eventstore.store import EventStore
from warriors.projections.engine import ProjectionEngine
from warriors.projections.inline import INLINE_CREATIONS
from warriors.projections.live import CHANNEL
from warriors.projections.read_model import READ_MODEL, WarriorsReadModel
from warriors.projections.rebuild import rebuild_blue_green
from warriors.servers import free_port

Pool = AsyncConnectionPool[AsyncConnection]
CONTEXT = RequestContext(correlation_id="test", causation_id="test")
COMMANDS = "/api/v1/commands/warriors"
QUERIES = "/api/v1/queries/warriors"


@pytest.fixture
async def api_pool(fresh_database: str) -> AsyncIterator[Pool]:
    """Connections as the HTTP services' role: inline writes need no more than its grants."""

    async def as_api(conn: AsyncConnection[Any]) -> None:
        await conn.execute(f"SET ROLE {ServiceRole.API}")

    async with AsyncConnectionPool(
        fresh_database, min_size=1, max_size=4, kwargs={"autocommit": True}, configure=as_api
    ) as pool:
        yield pool


def commands(pool: Pool, *, inline: bool = True, quiet: bool = False) -> WarriorCommands:
    appender = GroupCommitAppender(pool, inline=INLINE_CREATIONS if inline else None, quiet_inline=quiet)
    return WarriorCommands(EventStore(pool, appender))


async def caught_up_engine(pool: Pool) -> ProjectionEngine:
    engine = ProjectionEngine(pool, WarriorsReadModel(), 500)
    await engine.register()
    await engine.catch_up()
    return engine


def vocabulary_has(url: str, word: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT 1 FROM search_words WHERE word = %s", (word,)).fetchone() is not None


@pytest.mark.parametrize("inline", [True, False])
async def test_a_creation_is_in_the_read_model_when_its_append_commits(
    fresh_database: str, api_pool: Pool, inline: bool
) -> None:
    handler = commands(api_pool, inline=inline)
    accepted = [
        await handler.create({"name": f"Zyxquor {i}", "dob": f"1990-02-0{i}", "fight_skills": ["Judo", "Bo"]},
                             CONTEXT, None)
        for i in range(1, 4)
    ]  # fmt: skip

    rows = {row[0]: row for row in read_model_rows(fresh_database)}  # no projector ran
    if not inline:  # what the assertions below would see without it
        assert (rows, counted(fresh_database), vocabulary_has(fresh_database, "zyxquor")) == ({}, 0, False)
        return
    assert sorted(rows) == sorted(a.warrior_id for a in accepted)
    assert sorted((row[1], row[3], row[4]) for row in rows.values()) == [
        (f"Zyxquor {i}", ["Judo", "Bo"], 1) for i in range(1, 4)
    ]
    assert counted(fresh_database) == 3
    assert vocabulary_has(fresh_database, "zyxquor")
    with psycopg.connect(fresh_database) as conn:  # the row's times are its event's
        created = conn.execute(
            "SELECT count(*) FROM warriors_read_model r JOIN event_store e ON e.aggregate_id = r.id"
            " WHERE r.created_at = e.created_at AND r.updated_at = e.created_at"
        ).fetchone()
    assert created == (3,)


async def test_the_projector_finds_inline_rows_applied_and_goes_on(
    fresh_database: str, api_pool: Pool, fresh_pool: Pool
) -> None:
    write_history(fresh_database, 20)  # events from before: the projector's to apply
    handler = commands(api_pool)
    ids = [
        (await handler.create({"name": f"Inline {i}", "dob": "1985-05-05"}, CONTEXT, None)).warrior_id
        for i in range(6)
    ]
    assert counted(fresh_database) == 6  # only the inline ones so far
    engine = await caught_up_engine(fresh_pool)
    assert counted(fresh_database) == 18 + 6  # write_history deletes every tenth
    await handler.change(ids[0], {"name": "Renamed"}, CONTEXT, None, None)
    await handler.delete(ids[1], CONTEXT, None, None)
    await handler.create({"name": "Late", "dob": "2001-01-01"}, CONTEXT, None)
    await engine.catch_up()

    rows = read_model_rows(fresh_database)
    assert rows == await replay_into_shadow(fresh_database)  # the same as the projector alone
    assert counted(fresh_database) == len(rows) == 18 + 6
    assert "Renamed" in {row[1] for row in rows}


async def test_an_append_that_is_not_stored_writes_no_row(fresh_database: str, api_pool: Pool) -> None:
    handler = commands(api_pool)
    key = IdempotencyKey("one-creation", "fingerprint")
    body = {"name": "Once", "dob": "1999-09-09"}
    # The same key twice at once (one group-commit batch) and once more afterwards: one warrior.
    first, second = await asyncio.gather(
        handler.create(body, CONTEXT, key), handler.create(body, CONTEXT, key)
    )
    third = await handler.create(body, CONTEXT, key)
    assert first.warrior_id == second.warrior_id == third.warrior_id
    assert [row[0] for row in read_model_rows(fresh_database)] == [first.warrior_id]
    assert counted(fresh_database) == 1


async def test_a_blue_green_rebuild_under_inline_creations_ends_equal_to_a_replay(
    fresh_database: str, api_pool: Pool, fresh_pool: Pool
) -> None:
    write_history(fresh_database, 1000)
    engine = await caught_up_engine(fresh_pool)
    handler = commands(api_pool)
    stop = asyncio.Event()
    created: list[uuid.UUID] = []

    async def create_until_stopped() -> None:
        while not stop.is_set():
            accepted = await handler.create(
                {"name": f"During {len(created)}", "dob": "1977-07-07"}, CONTEXT, None
            )
            created.append(accepted.warrior_id)
            await asyncio.sleep(0.002)  # paced (not a wait): a rebuild chasing a flood never ends

    writer = asyncio.create_task(create_until_stopped())
    try:
        report = await rebuild_blue_green(fresh_pool, WarriorsReadModel(), batch_size=200)
    finally:
        stop.set()
        await writer
    await engine.catch_up()

    assert report.events > 0
    assert len(created) > 0
    rows = read_model_rows(fresh_database)
    assert rows == await replay_into_shadow(fresh_database)
    assert counted(fresh_database) == len(rows) == 900 + len(created)


async def test_a_flush_of_inline_creations_wakes_no_projector(fresh_database: str, api_pool: Pool) -> None:
    handler = commands(api_pool, quiet=True)
    async with await AsyncConnection.connect(fresh_database, autocommit=True) as listener:
        await listener.execute(f"LISTEN {CHANNEL}")
        created = await handler.create({"name": "Quiet", "dob": "1990-01-01"}, CONTEXT, None)
        await handler.change(created.warrior_id, {"name": "Loud"}, CONTEXT, None, None)  # not inline: wakes
        # Notifications come in commit order: the change's is the first, or the creation sent one.
        first = await anext(listener.notifies(timeout=10, stop_after=1))
        assert first.channel == CHANNEL
        pending = [n async for n in listener.notifies(timeout=0)]  # what else had arrived
    assert pending == []
    with psycopg.connect(fresh_database) as conn:  # the change's flush came after the creation's
        assert conn.execute("SELECT count(*) FROM event_store").fetchone() == (2,)


def test_a_read_waiting_on_a_position_wakes_the_projector(fresh_database: str) -> None:
    """The projector polls only every 60 s here: an inline creation sends no wake-up, so
    only the reader's own wake-up lets `?position=` answer within its 2 s."""
    projector = ProjectorProcess(fresh_database, {"PROJECTOR_IDLE_SECONDS": "60"}, "quiet-projector")
    service = ServiceProcess(fresh_database, free_port())
    try:
        with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
            wait_for(lambda: checkpoint_row(fresh_database), timeout=30, what="the projector to start")
            created = client.post(COMMANDS, json={"name": "Waited For", "dob": "1990-01-01"})
            assert created.status_code == 202, created.text
            position = created.json()["position"]
            answer = client.get(QUERIES, params={"term": "Waited", "position": position})
            assert answer.status_code == 200, answer.text
            assert [w["id"] for w in answer.json()] == [created.json()["id"]]
            assert checkpoint(fresh_database) >= position
    finally:
        service.stop()
        projector.stop()


def checkpoint_row(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return (
            conn.execute(
                "SELECT 1 FROM projection_offsets WHERE projection_name = %s", (READ_MODEL,)
            ).fetchone()
            is not None
        )
