"""The event store against real PostgreSQL: append-only, snapshots, atomic group commits."""

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from warriors.application.warrior_commands import RequestContext, WarriorCommands, living, rebuild
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.errors import AppendOnlyViolation, translated_errors
from warriors.eventstore.records import (
    Appended,
    AppendRequest,
    IdempotencyKey,
    KeyTaken,
    NewEvent,
    StreamPosition,
    VersionTaken,
)
from warriors.eventstore.store import AggregateStream, EventStore

CONTEXT = RequestContext(correlation_id="test", causation_id="test")


@pytest.fixture
def pool(fresh_pool: AsyncConnectionPool[AsyncConnection]) -> AsyncConnectionPool[AsyncConnection]:
    return fresh_pool


@pytest.fixture
def appender(pool: AsyncConnectionPool[AsyncConnection]) -> GroupCommitAppender:
    return GroupCommitAppender(pool)


@pytest.fixture
def commands(pool: AsyncConnectionPool[AsyncConnection], appender: GroupCommitAppender) -> WarriorCommands:
    return WarriorCommands(EventStore(pool, appender))


def new_event(aggregate_id: uuid.UUID, version: int) -> NewEvent:
    return NewEvent(
        uuid.uuid4(), aggregate_id, "Warrior", "WarriorUpdated", version, 1, {"name": f"v{version}"}, {}
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE event_store SET event_data = '{}' WHERE position = (SELECT min(position) FROM event_store)",
        "DELETE FROM event_store WHERE position = (SELECT min(position) FROM event_store)",
        "TRUNCATE event_store",
    ],
)
async def test_database_refuses_to_change_the_event_store(
    commands: WarriorCommands, fresh_database: str, statement: str
) -> None:
    await commands.create({"name": "Immutable", "dob": "1990-01-01"}, CONTEXT, None)
    with psycopg.connect(fresh_database) as conn:
        before = conn.execute(
            "SELECT count(*), md5(string_agg(event_data::text, '')) FROM event_store"
        ).fetchone()
    with (
        pytest.raises(AppendOnlyViolation, match="append-only"),
        translated_errors(),
        psycopg.connect(fresh_database) as conn,
    ):
        conn.execute(statement)
    with psycopg.connect(fresh_database) as conn:
        after = conn.execute(
            "SELECT count(*), md5(string_agg(event_data::text, '')) FROM event_store"
        ).fetchone()
    assert after == before


async def test_loading_from_a_snapshot_equals_a_full_replay(
    commands: WarriorCommands, fresh_database: str
) -> None:
    created = await commands.create(
        {"name": "Snap", "dob": "1990-01-01", "fight_skills": ["Bo"]}, CONTEXT, None
    )
    wid = created.warrior_id
    for i in range(5):
        await commands.change(wid, {"name": f"Snap {i}"}, CONTEXT, None, None)
    snapshot = await commands.snapshot(wid)
    assert snapshot is not None
    assert snapshot.version == 6
    await commands.replace_skills(wid, {"fight_skills": ["Katana", "Bo"]}, CONTEXT, None, None)
    await commands.change(wid, {"dob": "1991-02-03"}, CONTEXT, None, None)

    store = EventStore(commands._store.pool, GroupCommitAppender(commands._store.pool))
    stream = await store.load_stream(wid)
    assert stream.snapshot is not None
    assert stream.snapshot.version == 6
    assert [version for _, version, _, _ in stream.events] == [7, 8]  # only the events after it

    every_event = await store.aggregate_events(wid)
    replay = living(rebuild(wid, AggregateStream.from_events(every_event)))  # opened by the store
    from_snapshot = rebuild(wid, stream.opened(wid))
    assert stream.snapshot.schema_version == 2  # its personal fields sealed, like the events'
    assert "Snap" not in str(stream.snapshot.state)
    assert from_snapshot == replay
    assert replay is not None
    assert (replay.name, replay.fight_skills, replay.dob.isoformat(), replay.version) == (
        "Snap 4", ("Katana", "Bo"), "1991-02-03", 8,
    )  # fmt: skip


async def test_a_batch_never_commits_part_of_an_append(
    appender: GroupCommitAppender, fresh_database: str
) -> None:
    """Two appends race for version 2 inside one batch: the single-event one is first in
    the batch and wins; the two-event one loses entirely (its version 1 is not kept)."""
    aggregate = uuid.uuid4()
    single = AppendRequest([new_event(aggregate, 2)])
    double = AppendRequest([new_event(aggregate, 1), new_event(aggregate, 2)])
    outcomes = await appender._write([single, double])
    assert isinstance(outcomes[0], Appended)
    assert outcomes[0].version == 2
    assert outcomes[1] == VersionTaken()
    with psycopg.connect(fresh_database) as conn:
        versions = conn.execute(
            "SELECT event_version FROM event_store WHERE aggregate_id = %s", (aggregate,)
        ).fetchall()
    assert versions == [(2,)]


async def test_a_key_whose_append_lost_its_version_race_is_not_kept(
    appender: GroupCommitAppender, fresh_database: str
) -> None:
    aggregate = uuid.uuid4()
    key = IdempotencyKey(f"lost-{aggregate}", "fp")
    outcomes = await appender._write(
        [AppendRequest([new_event(aggregate, 1)]), AppendRequest([new_event(aggregate, 1)], key)]
    )
    assert isinstance(outcomes[0], Appended)
    assert outcomes[1] == VersionTaken()
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute(
            "SELECT count(*) FROM idempotency_keys WHERE key = %s", (key.key,)
        ).fetchone() == (0,)


async def test_one_key_twice_in_a_batch_writes_once(appender: GroupCommitAppender) -> None:
    key = IdempotencyKey(f"twice-{uuid.uuid4()}", "fp")
    outcomes = await appender._write(
        [AppendRequest([new_event(uuid.uuid4(), 1)], key), AppendRequest([new_event(uuid.uuid4(), 1)], key)]
    )
    assert isinstance(outcomes[0], Appended)
    assert outcomes[1] == KeyTaken()


async def test_concurrent_appends_are_grouped_and_each_gets_its_outcome(
    appender: GroupCommitAppender, fresh_database: str
) -> None:
    aggregates = [uuid.uuid4() for _ in range(200)]
    outcomes = await asyncio.gather(*(appender.append(AppendRequest([new_event(a, 1)])) for a in aggregates))
    positions: list[Any] = [o.position for o in outcomes if isinstance(o, Appended)]
    assert len(set(positions)) == 200
    assert max(appender.batch_sizes) > 1  # some flushes carried several appends
    with psycopg.connect(fresh_database) as conn:
        stored = conn.execute(
            "SELECT aggregate_id, position FROM event_store WHERE aggregate_id = ANY(%s)", (aggregates,)
        )
        assert {row[0]: row[1] for row in stored} == {
            o.aggregate_id: o.position for o in outcomes if isinstance(o, Appended)
        }


def test_stream_position_defaults_to_start() -> None:
    assert StreamPosition() == StreamPosition(0, 0)


def opposing_batch(order: list[uuid.UUID], side: str, keyed: bool) -> list[AppendRequest]:
    return [
        AppendRequest([new_event(a, 1)], IdempotencyKey(f"{side}-{a}", "fp") if keyed else None)
        for a in order
    ]


async def test_two_workers_batches_in_opposite_order_do_not_deadlock(fresh_database: str) -> None:
    """Two processes' batches touching the same aggregates in opposite order: without one
    lock order they can wait on each other until PostgreSQL aborts one (a 503 for all)."""
    async with (
        AsyncConnectionPool(fresh_database, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool_a,
        AsyncConnectionPool(fresh_database, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool_b,
    ):
        worker_a, worker_b = GroupCommitAppender(pool_a), GroupCommitAppender(pool_b)
        for round_ in range(40):
            aggregates = [uuid.uuid4() for _ in range(20)]
            keyed = round_ % 2 == 0  # keyed batches run in a transaction, unkeyed in one statement

            a_out, b_out = await asyncio.gather(
                worker_a._write(opposing_batch(aggregates, "a", keyed)),
                worker_b._write(opposing_batch(aggregates[::-1], "b", keyed)),
            )
            winners = [isinstance(o, Appended) for o in a_out] + [isinstance(o, Appended) for o in b_out]
            assert sum(winners) == 20  # each aggregate's version 1 went to exactly one of them
