"""The search projection against a real OpenSearch node: versioned writes never regress a
document, a rebuild under live writes never serves an empty or partial index, and an
engine that goes away loses nothing."""

import asyncio
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tests.history import checkpoint, counted, head, with_read_model, write_history
from tests.support import ServiceProcess, wait_for
from warriors.adapters.kafka_bus import BusProducer
from warriors.adapters.search_engine import EngineKind, IndexAction, SearchEngine, SearchUnavailable
from warriors.bus.consumer import ProjectionConsumer
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.reader import read_after
from warriors.eventstore.records import START
from warriors.eventstore.store import EventStore
from warriors.projections.base import ProjectionTargetUnavailable
from warriors.projections.engine import ProjectionEngine, lock_projection
from warriors.projections.live import run_live
from warriors.projections.read_model import WarriorsReadModel
from warriors.projections.rebuild import _create_shadow, rebuild_blue_green
from warriors.projections.search import SEARCH, WarriorsSearch
from warriors.readside import search_index
from warriors.readside.queries import ReadModelBehind, UnknownPosition, WarriorQueries
from warriors.servers import free_port
from warriors.servers.opensearch_server import OpenSearchServer

Pool = AsyncConnectionPool[AsyncConnection]


def doc(warrior_id: str, name: str, version: int) -> dict[str, Any]:
    at = "2026-01-01T00:00:00+00:00"
    return {"id": warrior_id, "name": name, "dob": "1990-01-01", "fight_skills": ["Bo"], "version": version,
            "created_at": at, "updated_at": at}  # fmt: skip


async def engines(pool: Pool, search_engine: SearchEngine) -> tuple[ProjectionEngine, ProjectionEngine]:
    return await with_read_model(pool, WarriorsSearch(search_engine))


def projected(url: str) -> bool:
    return checkpoint(url) == head(url)


def searchable(url: str) -> bool:
    return checkpoint(url, SEARCH) == head(url)


async def test_out_of_order_and_duplicate_writes_never_regress(search_engine: SearchEngine) -> None:
    index = await search_engine.ensure_alias()
    warrior = str(uuid.uuid4())
    await search_engine.write(index, [IndexAction(warrior, 3, doc(warrior, "Third", 3))], refresh=True)
    await search_engine.write(index, [IndexAction(warrior, 2, doc(warrior, "Second", 2))], refresh=True)
    await search_engine.write(index, [IndexAction(warrior, 3, doc(warrior, "Third again", 3))], refresh=True)
    assert (await search_engine.documents([warrior]))[warrior]["name"] == "Third"

    await search_engine.write(index, [IndexAction(warrior, 4, None)], refresh=True)  # deleted at 4
    await search_engine.write(index, [IndexAction(warrior, 1, doc(warrior, "First", 1))], refresh=True)
    assert await search_engine.documents([warrior]) == {}


async def test_the_projection_indexes_whole_documents_and_deletes(
    fresh_database: str, fresh_pool: Pool, search_engine: SearchEngine
) -> None:
    write_history(fresh_database, 100)  # created, renamed, every tenth deleted
    read_model, search = await engines(fresh_pool, search_engine)
    await read_model.catch_up()
    await search.catch_up()
    assert await search_engine.count() == counted(fresh_database) == 90
    found = await search_engine.search(search_index.search_body("renamed", 50))
    assert len(found) == 50
    assert all(d["name"].endswith("renamed") and d["version"] == 2 for d in found)
    await search.catch_up()  # nothing new: nothing changes
    assert await search_engine.count() == 90


async def test_a_rebuild_under_live_writes_never_serves_an_empty_or_partial_index(
    fresh_database: str, fresh_pool: Pool, search_engine: SearchEngine
) -> None:
    write_history(fresh_database, 2000)
    read_model, search = await engines(fresh_pool, search_engine)
    await read_model.catch_up()
    await search.catch_up()
    before = await search_engine.alias_target()
    served: list[int] = []
    done = asyncio.Event()

    async def live_traffic() -> None:
        """Writes go on and the live projector follows them; readers count the alias."""
        while not done.is_set():
            write_history(fresh_database, 5)
            await read_model.catch_up()
            await search.catch_up()
            served.append(await search_engine.count())

    traffic = asyncio.create_task(live_traffic())
    try:
        report = await rebuild_blue_green(fresh_pool, WarriorsSearch(search_engine), batch_size=500)
    finally:
        done.set()
        await traffic
    await search.catch_up()

    assert served, "no read overlapped the rebuild"
    assert min(served) >= 1800, f"the alias served a partial index: {min(served)} documents"
    assert await search_engine.alias_target() not in (None, before)
    assert await search_engine.generations() == [await search_engine.alias_target()]  # the old one is gone
    assert report.position <= head(fresh_database)
    assert await search_engine.count() == counted(fresh_database)


async def test_the_engine_down_loses_nothing(
    fresh_database: str, fresh_pool: Pool, search_engine: SearchEngine, opensearch: OpenSearchServer
) -> None:
    write_history(fresh_database, 50)
    read_model, search = await engines(fresh_pool, search_engine)
    stop = asyncio.Event()
    projector = asyncio.create_task(run_live([read_model, search], fresh_database, stop, idle_seconds=0.05))
    try:
        await asyncio.to_thread(wait_for, lambda: searchable(fresh_database), timeout=60, what="the index")
        opensearch.stop()
        write_history(fresh_database, 30)  # while the engine is down
        await asyncio.to_thread(wait_for, lambda: projected(fresh_database), what="the read model")
        assert not searchable(fresh_database)  # the search projection waits for the engine
        await asyncio.to_thread(opensearch.start)
        await asyncio.to_thread(wait_for, lambda: searchable(fresh_database), timeout=60, what="the catch-up")
    finally:
        stop.set()
        await projector
    assert await search_engine.count() == counted(fresh_database) == 45 + 27
    assert await search_engine.alias_target() is not None


async def test_with_the_engine_down_a_search_with_a_position_answers_from_postgresql(
    fresh_database: str, fresh_pool: Pool, search_engine: SearchEngine, opensearch: OpenSearchServer
) -> None:
    write_history(fresh_database, 20)
    read_model, search = await engines(fresh_pool, search_engine)
    await read_model.catch_up()
    await search.catch_up()
    service = ServiceProcess(fresh_database, free_port(), env={"SEARCH_URL": opensearch.url()})
    try:
        async with httpx.AsyncClient(
            base_url=service.base_url, headers=service.headers, timeout=10
        ) as client:
            query = {"term": "renamed", "position": str(head(fresh_database))}
            on_engine = await client.get("/api/v1/queries/warriors", params=query)
            assert on_engine.status_code == 200
            assert len(on_engine.json()) == 18
            await asyncio.to_thread(opensearch.stop)
            write_history(fresh_database, 5)  # only the read model follows
            await read_model.catch_up()
            query["position"] = str(head(fresh_database))
            fallback = await client.get("/api/v1/queries/warriors", params=query)
            assert fallback.status_code == 200  # not a 503 for the index that cannot move
            assert len(fallback.json()) == 22
    finally:
        service.stop()
        await asyncio.to_thread(opensearch.start)


async def test_a_write_blocked_index_is_waited_out_not_taken_for_poison(
    fresh_database: str, fresh_pool: Pool, search_engine: SearchEngine
) -> None:
    """`index.blocks.write` (or read-only past the disk's flood stage) refuses every write
    with 403 cluster_block_exception: the projection waits, parks and FAILs nothing, and
    goes on once the block is lifted."""
    write_history(fresh_database, 20)
    read_model, search = await engines(fresh_pool, search_engine)
    await read_model.catch_up()
    await search.catch_up()
    index = await search_engine.alias_target()
    assert index is not None
    await search_engine.client.indices.put_settings(index=index, body={"index.blocks.write": True})
    try:
        write_history(fresh_database, 10)
        await read_model.catch_up()
        before = checkpoint(fresh_database, SEARCH)
        with pytest.raises(ProjectionTargetUnavailable, match="cluster_block_exception"):
            await search.run_batch()
        assert checkpoint(fresh_database, SEARCH) == before
    finally:
        await search_engine.client.indices.put_settings(index=index, body={"index.blocks.write": False})
    await search.catch_up()
    assert searchable(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute(
            "SELECT o.status, (SELECT count(*) FROM projection_parked_events p WHERE p.projection_name = %s)"
            " FROM projection_offsets o WHERE o.projection_name = %s",
            (SEARCH, SEARCH),
        ).fetchone()
    assert row == ("RUNNING", 0)
    assert await search_engine.count() == counted(fresh_database) == 18 + 9


async def test_group_members_building_the_index_at_once_leave_one_index_behind_the_alias(
    fresh_database: str, fresh_pool: Pool, search_engine: SearchEngine, opensearch: OpenSearchServer
) -> None:
    """Fed from Kafka, each member of a new consumer group (or one that found the index
    lost) builds the sink from the store, starting by creating the alias if it is
    missing. Unlocked, members doing it at once raced: all saw no alias and created the
    same next index (all but one failed, "already exists"), and one retrying between
    another's index and its alias added a second index behind the alias, after which
    every write failed (400 "no write index is defined for alias") and was parked as
    poison (found by tests/test_production_faults.py). Under the projection's lock, as
    the resets are, they take turns: one index, every document in it."""
    write_history(fresh_database, 20)
    nowhere = f"127.0.0.1:{free_port()}"  # no broker: building from the store needs none
    members = [
        ProjectionConsumer(fresh_pool, WarriorsSearch(SearchEngine(opensearch.url(), EngineKind.OPENSEARCH)),
                           nowhere, BusProducer(nowhere))
        for _ in range(4)
    ]  # fmt: skip
    try:
        outcomes = await asyncio.gather(
            *(m._intact(asyncio.Event()) for m in members), return_exceptions=True
        )
    finally:
        for member in members:
            member.consumer.close()
            await member.projection.close()
    assert outcomes == [True] * len(members)
    assert len(await search_engine.generations()) == 1
    assert await search_engine.count() == 18  # 20 created, every tenth deleted


async def test_a_delete_through_a_missing_alias_does_not_block_the_alias_for_good(
    fresh_database: str, fresh_pool: Pool, search_engine: SearchEngine
) -> None:
    """With the alias removed, a deletion written through it made the engine create a plain
    index named `warriors` (`require_alias` guards index operations, not deletes), and from
    then on the alias could never be added again ("an index exists with the same name as
    the alias"): the projection tried to rebuild forever (found by
    tests/test_production_faults.py). Now the write says the index is gone, and the index
    that took the alias' name is removed in the call that adds the alias."""
    write_history(fresh_database, 20)
    read_model, search = await engines(fresh_pool, search_engine)
    await read_model.catch_up()
    await search.catch_up()
    index = await search_engine.alias_target()
    await search_engine.client.indices.delete_alias(index=index, name=search_index.ALIAS)
    warrior = str(uuid.uuid4())
    with pytest.raises(SearchUnavailable, match="index_not_found_exception"):  # not taken as written
        await search_engine.write(
            search_index.ALIAS, [IndexAction(warrior, 1, doc(warrior, "Lost", 1))], refresh=True
        )
    await search_engine.write(search_index.ALIAS, [IndexAction(warrior, 2, None)], refresh=True)  # a deletion
    assert await search_engine.client.indices.exists(index=search_index.ALIAS)  # a plain index took its name
    write_history(fresh_database, 10)
    await read_model.catch_up()
    _, search = await engines(fresh_pool, search_engine)  # a projector started now: it checks the alias
    await search.catch_up()  # notices the alias gone, starts a new generation, replays from 0
    await search.catch_up()
    assert await search_engine.alias_target() not in (None, index)
    assert await search_engine.count() == counted(fresh_database) == 18 + 9


async def test_a_rebuild_makes_its_shadow_index_under_the_projection_lock(
    fresh_pool: Pool, search_engine: SearchEngine
) -> None:
    """A blue/green rebuild's shadow makes sure the alias exists and deletes every other
    index generation; a Kafka member resetting the index does so under the projection's
    lock (a new generation, then the alias moved to it). The shadow did it without the
    lock: interleaved, the alias ended behind two indexes (every lookup of it failed and
    the projector exited) or the member's new index was deleted (issue 25, item 7). It
    waits for the lock now, and then finds the member's index behind the alias."""
    live = WarriorsSearch(search_engine)
    first = await search_engine.ensure_alias()
    async with fresh_pool.connection() as member, member.transaction():
        await lock_projection(member, live.name)  # a member's reset, under way
        shadow = live.shadow()
        making = asyncio.create_task(_create_shadow(fresh_pool, live, shadow, frozenset()))

        async def waiting_for_the_lock() -> bool:
            cursor = await member.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            row = await cursor.fetchone()
            return bool(row and row[0])

        deadline = asyncio.get_running_loop().time() + 30
        while not await waiting_for_the_lock():
            assert not making.done(), "the shadow was made without waiting for the projection's lock"
            assert asyncio.get_running_loop().time() < deadline, "the shadow neither waited nor finished"
            await asyncio.sleep(0.05)  # polling a condition, with a deadline
        assert await search_engine.generations() == [first]  # nothing touched meanwhile
        await live.reset(member)  # the member's new generation, behind the alias
    await making
    current = await search_engine.alias_target()
    assert current not in (None, first)
    assert await search_engine.generations() == sorted([current, shadow.index])


async def test_fed_from_kafka_a_position_waits_for_the_index_not_the_read_model(
    fresh_database: str, fresh_pool: Pool, search_engine: SearchEngine
) -> None:
    """A search with `?position=` waits for the index when the search engine answers it.
    Fed from Kafka there is no checkpoint in the store, and the wait looked at the read
    model's row of the event's warrior: with the index's consumer group behind, a search
    right after a 202 missed the warrior (issue 25, item 6). It looks at the index's own
    document now."""
    write_history(fresh_database, 3)
    async with fresh_pool.connection() as conn:
        events = await read_after(conn, START, 1000)
        await WarriorsReadModel().apply(conn, events)  # the read model's group: caught up
    position = events[-1].position
    queries = WarriorQueries(fresh_pool, EventStore(fresh_pool, GroupCommitAppender(fresh_pool)),
                             search_engine=search_engine, fed_by_kafka=True)  # fmt: skip
    with pytest.raises(ReadModelBehind):
        await queries.wait_for(position, 0.5, SEARCH)  # the index's group has applied nothing
    await queries.wait_for(position, 0.5)  # the read model's own wait is met
    search = WarriorsSearch(search_engine)
    await search.intact(START)
    async with fresh_pool.connection() as conn:
        await search.apply(conn, events)
    await queries.wait_for(position, 5, SEARCH)
    with pytest.raises(UnknownPosition):
        await queries.wait_for(position + 1000, 0.5, SEARCH)


async def test_an_engine_failing_after_a_position_wait_answers_from_a_read_model_waited_for(
    fresh_database: str, fresh_pool: Pool, search_engine: SearchEngine
) -> None:
    """A search with `?position=` on the search engine waits for the index; should the
    engine fail right after, PostgreSQL answers: from a read model nobody had waited for,
    which could miss the warrior (issue 25, item 6). It waits for the read model first."""
    write_history(fresh_database, 3)
    async with fresh_pool.connection() as conn:
        events = await read_after(conn, START, 1000)
    position = events[-1].position
    store = EventStore(fresh_pool, GroupCommitAppender(fresh_pool))
    queries = WarriorQueries(
        fresh_pool, store, search_engine=search_engine
    )  # no alias yet: every search fails
    with pytest.raises(ReadModelBehind):
        await queries.search("warrior", after=(position, 0.5))
    read_model, _ = await engines(fresh_pool, search_engine)
    await read_model.catch_up()
    await queries.search("warrior", after=(position, 0.5))
