"""The Redis read models against real Redis and PostgreSQL: the cache projection,
compare-and-set under out-of-order and duplicate deliveries, reads through the cache,
a flushed Redis and a dead one."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import orjson
import psycopg
import pytest
import redis
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tests.history import checkpoint, counted, head, with_read_model, write_history
from tests.support import ProjectorProcess, ServiceProcess, wait_for
from warriors.adapters.redis_cache import CacheWrite, RedisReadModels
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.store import EventStore
from warriors.projections.cache import CACHE, WarriorsCache
from warriors.projections.engine import ProjectionEngine
from warriors.readside.queries import WarriorQueries
from warriors.servers import free_port
from warriors.servers.redis_server import RedisServer

Pool = AsyncConnectionPool[AsyncConnection]


@pytest.fixture
async def models(redis_url: str) -> AsyncIterator[RedisReadModels]:
    cache = RedisReadModels(redis_url, ttl_seconds=600)
    yield cache
    await cache.close()


async def engines(pool: Pool, models: RedisReadModels) -> tuple[ProjectionEngine, ProjectionEngine]:
    return await with_read_model(pool, WarriorsCache(models))


async def test_the_cache_projection_keeps_entries_and_the_count(
    fresh_database: str, fresh_pool: Pool, models: RedisReadModels
) -> None:
    write_history(fresh_database, 200)  # 200 created and renamed, 20 deleted
    read_model, cache = await engines(fresh_pool, models)
    assert await models.count() is None  # not caught up yet: readers would use PostgreSQL
    await read_model.catch_up()
    await cache.catch_up()

    assert await models.count() == counted(fresh_database) == 180
    with psycopg.connect(fresh_database) as conn:
        renamed, deleted = conn.execute(
            "SELECT (array_agg(aggregate_id) FILTER (WHERE event_version = 2))[1],"
            " (array_agg(aggregate_id) FILTER (WHERE event_type = 'WarriorDeleted'))[1] FROM event_store"
        ).fetchone() or (None, None)
    changed = await models.entry(renamed)
    assert changed is not None
    assert (changed.version, changed.document) in {(2, None), (3, None)}  # changed: a read fills it
    gone = await models.entry(deleted)
    assert gone is not None
    assert gone.gone


async def test_stale_and_duplicate_writes_never_regress(models: RedisReadModels) -> None:
    warrior = uuid.uuid4()
    at = "2026-01-01T00:00:00+00:00"
    document = {"id": str(warrior), "name": "Old", "dob": "1990-01-01", "fight_skills": [], "version": 1,
                "created_at": at, "updated_at": at}  # fmt: skip
    newer = {**document, "name": "New", "version": 3}
    await models.apply([CacheWrite(warrior, 1, "created", document)])
    await models.apply([CacheWrite(warrior, 3, "changed", None)])  # v3 arrives before v2
    await models.apply([CacheWrite(warrior, 2, "changed", None), CacheWrite(warrior, 1, "created", document)])
    entry = await models.entry(warrior)
    assert entry is not None
    assert entry.version == 3
    await models.fill(warrior, 1, orjson.dumps(document))  # a slow read of version 1 comes back late
    entry = await models.entry(warrior)
    assert entry is not None
    assert (entry.version, entry.document) == (3, None)
    await models.fill(warrior, 3, orjson.dumps(newer))
    await models.fill(warrior, 2, orjson.dumps(document))
    entry = await models.entry(warrior)
    assert entry is not None
    assert entry.document == newer

    await models.apply([CacheWrite(warrior, 4, "deleted", None)])
    await models.apply([CacheWrite(warrior, 1, "created", document), CacheWrite(warrior, 4, "deleted", None)])
    await models.fill(warrior, 3, orjson.dumps(newer))
    entry = await models.entry(warrior)
    assert entry is not None
    assert entry.gone
    await models.start_epoch()
    await models.mark_count_ready()
    assert await models.count() == 0  # created once, deleted once, whatever was redelivered


async def test_reads_fill_the_cache_and_are_served_from_it(
    fresh_database: str, fresh_pool: Pool, models: RedisReadModels
) -> None:
    write_history(fresh_database, 5)
    read_model, cache = await engines(fresh_pool, models)
    await read_model.catch_up()
    await cache.catch_up()
    queries = WarriorQueries(fresh_pool, EventStore(fresh_pool, GroupCommitAppender(fresh_pool)), models)
    with psycopg.connect(fresh_database) as conn:
        [warrior_id] = (
            conn.execute("SELECT id FROM warriors_read_model WHERE version = 2 LIMIT 1").fetchone() or []
        )

    first = await queries.warrior(warrior_id)  # a miss: PostgreSQL, then the cache is filled
    assert first is not None
    entry = await models.entry(warrior_id)
    assert entry is not None
    assert entry.document is not None
    assert entry.document["name"] == first.name
    with psycopg.connect(fresh_database, autocommit=True) as conn:  # only the cache still says so
        conn.execute("UPDATE warriors_read_model SET name = 'Changed behind' WHERE id = %s", (warrior_id,))
    second = await queries.warrior(warrior_id)
    assert second == first
    assert await queries.count() == counted(fresh_database)
    # Asked for a version newer than the cache's entry: not from the cache (the events say).
    ahead = await queries.warrior(warrior_id, min_version=first.version + 1)
    assert ahead is not None
    assert ahead.name == first.name


async def test_a_flushed_redis_falls_back_and_the_projection_replays(
    fresh_database: str, fresh_pool: Pool, models: RedisReadModels, redis_url: str
) -> None:
    write_history(fresh_database, 100)
    read_model, cache = await engines(fresh_pool, models)
    await read_model.catch_up()
    await cache.catch_up()
    queries = WarriorQueries(fresh_pool, EventStore(fresh_pool, GroupCommitAppender(fresh_pool)), models)
    assert await models.count() == 90
    with redis.Redis.from_url(redis_url) as client:
        client.flushall()

    assert await queries.count() == counted(fresh_database) == 90  # from PostgreSQL meanwhile
    write_history(fresh_database, 10)
    await read_model.catch_up()
    await cache.catch_up()  # notices the flush: back to position 0, replays everything
    assert checkpoint(fresh_database, CACHE) == head(fresh_database)
    assert await models.count() == counted(fresh_database) == 99


def test_with_redis_down_the_service_answers_from_postgresql(
    fresh_database: str, redis_url: str, redis_server: RedisServer
) -> None:
    server = redis_server
    env = {"REDIS_URL": redis_url}
    service = ServiceProcess(fresh_database, free_port(), env=env)
    projector = ProjectorProcess(fresh_database, env=env)
    try:
        with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
            created = client.post("/api/v1/commands/warriors", json={"name": "Cached", "dob": "1990-01-01"})
            warrior = created.json()["id"]
            wait_for(
                lambda: checkpoint(fresh_database, CACHE) == head(fresh_database), what="the cache projection"
            )
            assert client.get(f"/api/v1/queries/warriors/{warrior}").json()["name"] == "Cached"
            assert client.get("/health/ready").json()["checks"]["redis"] == "ok"

            server.stop()
            ready = client.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            assert "answering from PostgreSQL" in ready.json()["checks"]["redis"]
            renamed = client.patch(f"/api/v1/commands/warriors/{warrior}", json={"name": "Renamed"})
            assert renamed.status_code == 202
            assert client.get(renamed.headers["location"]).json()["name"] == "Renamed"
            later = client.post("/api/v1/commands/warriors", json={"name": "Later", "dob": "1990-01-01"})
            position = later.json()["position"]
            assert client.get("/api/v1/queries/warriors/count", params={"position": position}).json() == {
                "count": 2
            }

            server.start()  # empty: it keeps nothing on disk
            wait_for(lambda: caught_up(fresh_database, CACHE), timeout=60,
                     what="the cache projection to replay into the restarted Redis")  # fmt: skip
            wait_for(lambda: _redis_count(redis_url) == 2, what="the Redis count")
            assert client.get(f"/api/v1/queries/warriors/{warrior}").json()["name"] == "Renamed"
    finally:
        projector.stop()
        service.stop()
        server.start()


def caught_up(url: str, projection: str) -> bool:
    return checkpoint(url, projection) == head(url)


def _redis_count(url: str) -> int | None:
    with redis.Redis.from_url(url) as client:
        count, ready = client.mget("warriors:count", "warriors:ready")
    return int(count) if ready is not None and count is not None else None


async def test_the_count_is_served_only_while_its_projection_renews_it(
    fresh_database: str, fresh_pool: Pool, redis_url: str
) -> None:
    """A cache projection that stops (or fails, or falls behind) stops renewing its
    count's readiness: within CACHE_COUNT_FRESH_SECONDS the count comes from PostgreSQL
    again, where the read model goes on, instead of a stale number for hours."""
    write_history(fresh_database, 50)
    models = RedisReadModels(redis_url, count_fresh_seconds=0.5)
    try:
        read_model, cache = await engines(fresh_pool, models)
        await read_model.catch_up()
        await cache.catch_up()
        queries = WarriorQueries(fresh_pool, EventStore(fresh_pool, GroupCommitAppender(fresh_pool)), models)
        assert await models.count() == await queries.count() == 45

        write_history(fresh_database, 10)  # the read model goes on; the cache projection has stopped
        await read_model.catch_up()
        assert await models.count() == 45  # Redis still holds the old count ...
        await wait_until(lambda: models.count(), None, "the count's readiness to lapse")
        assert await queries.count() == counted(fresh_database) == 54  # ... no longer served

        await cache.catch_up()  # running again: caught up, the count is ready again
        assert await models.count() == 54
    finally:
        await models.close()


async def wait_until(read: Callable[[], Awaitable[object]], wanted: object, what: str) -> None:
    """Poll `read` until it gives `wanted`, for at most 10 s."""
    try:
        async with asyncio.timeout(10):
            while True:
                if await read() == wanted:
                    return
                await asyncio.sleep(0.05)  # polling, bounded by the time-out
    except TimeoutError:
        raise AssertionError(f"{what}: still {await read()!r} after 10s") from None


async def test_a_replaying_cache_is_not_read(fresh_database: str, fresh_pool: Pool, redis_url: str) -> None:
    """After a flush the cache replays from position 0: entries at old versions, deleted
    warriors alive again until their tombstones come. Until it is caught up, reads go to
    PostgreSQL."""
    write_history(fresh_database, 10)  # w0: created, renamed, deleted; w1: created, renamed; ...
    with psycopg.connect(fresh_database) as conn:
        [(deleted,), (renamed,)] = conn.execute(
            "SELECT aggregate_id FROM event_store WHERE event_type = 'WarriorCreated'"
            " ORDER BY position LIMIT 2"
        ).fetchall()
    models = RedisReadModels(redis_url, count_fresh_seconds=60)
    try:
        read_model, _ = await engines(fresh_pool, models)
        one_by_one = ProjectionEngine(fresh_pool, WarriorsCache(models), 1)
        await one_by_one.register()
        await read_model.catch_up()
        await one_by_one.catch_up()
        queries = WarriorQueries(fresh_pool, EventStore(fresh_pool, GroupCommitAppender(fresh_pool)), models)
        with redis.Redis.from_url(redis_url) as client:
            client.flushall()

        await one_by_one.run_batch()  # notices the flush: back to position 0
        await one_by_one.run_batch()  # w0 created: in Redis as alive, at version 1
        assert (await models.entry(deleted)) is not None
        assert await queries.warrior(deleted) is None  # deleted in the store: 404, not Redis' w0
        for _ in range(3):  # w0 renamed, w0 deleted, w1 created (at version 1, its old name)
            await one_by_one.run_batch()
        entry = await models.entry(renamed)
        assert entry is not None
        assert entry.version == 1
        found = await queries.warrior(renamed)
        assert found is not None
        assert (found.name, found.version) == ("Bulk 1 renamed", 2)

        await one_by_one.catch_up()  # caught up: served from Redis again
        assert await models.count() == counted(fresh_database) == 9
    finally:
        await models.close()
