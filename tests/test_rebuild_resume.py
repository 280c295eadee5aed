"""A sink's rebuild from the event store resumed by another member of its consumer group
(its owner died mid-replay), on real PostgreSQL, Redis and OpenSearch, with the fault put
at the exact moment that matters instead of hoped for: the sink loses its data just after
the member that takes the rebuild over last looked at it.

A member resumes a rebuild from where the dead owner's replay got only into a sink that
still holds everything before that point. Resumed into a sink that lost its data, the
events before the resume point were missing for good while every check said complete
(CI, tests/test_production_faults.py with seed 917749: the search index short of
documents after a takeover "from position 167"; the cache's count never served again).

The members run in this process (their consumer pointed at no broker: a rebuild from the
store needs none) and are driven through `_intact`, what a member calls before each batch.
"""

import asyncio

import psycopg
import redis
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tests.history import write_history
from tests.kafka_support import cache_differences, index_differences
from warriors.adapters.kafka_bus import BusProducer
from warriors.adapters.redis_cache import RedisReadModels
from warriors.adapters.search_engine import EngineKind, SearchEngine
from warriors.bus.consumer import ProjectionConsumer
from warriors.eventstore.records import StreamPosition
from warriors.projections.base import Projection
from warriors.projections.cache import WarriorsCache
from warriors.projections.search import WarriorsSearch
from warriors.readside.search_index import ALIAS
from warriors.servers import free_port
from warriors.servers.opensearch_server import OpenSearchServer

Pool = AsyncConnectionPool[AsyncConnection]
WARRIORS = 20  # 20 created and renamed, every tenth deleted: 42 events
RESUMED_AT = 21  # the dead owner's replay got this far (events)


def member(pool: Pool, projection: Projection) -> ProjectionConsumer:
    nowhere = f"127.0.0.1:{free_port()}"
    return ProjectionConsumer(pool, projection, nowhere, BusProducer(nowhere))


async def close(consumer: ProjectionConsumer) -> None:
    consumer.consumer.close()
    await consumer.projection.close()


def left_mid_replay(url: str, name: str) -> None:
    """The sink's rebuild as its owner leaves it when it dies: a new generation under way,
    its replay recorded as far as the RESUMED_AT-th stored event, nobody holding its lock."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT transaction_id::text::bigint, position FROM event_store"
            " ORDER BY transaction_id, position OFFSET %s LIMIT 1",
            (RESUMED_AT - 1,),
        ).fetchone()
        assert row is not None
        updated = conn.execute(
            "UPDATE sink_rebuilds SET generation = generation + 1, state = 'rebuilding', owner = NULL,"
            " replayed_transaction_id = %s::text::xid8, replayed_position = %s, finished_at = NULL"
            " WHERE projection_name = %s AND state = 'complete'",
            (row[0], row[1], name),
        )
        assert updated.rowcount == 1


async def test_a_takeover_into_an_index_whose_alias_went_missing_rebuilds_it_whole(
    fresh_database: str, fresh_pool: Pool, search_engine: SearchEngine, opensearch: OpenSearchServer
) -> None:
    """The member found the alias a moment ago (the search projection answers `intact` from
    a look up to five seconds old); the alias is deleted; the member takes over a rebuild
    left mid-replay. It must find the index lost and replay the whole store into a new
    one, not resume into nothing from the dead owner's position."""
    write_history(fresh_database, WARRIORS)
    stop = asyncio.Event()
    search = member(fresh_pool, WarriorsSearch(SearchEngine(opensearch.url(), EngineKind.OPENSEARCH)))
    try:
        assert await search._intact(stop)  # no rebuild on record: built from the store
        assert not await asyncio.to_thread(index_differences, fresh_database, opensearch.url())
        left_mid_replay(fresh_database, search.projection.name)
        assert await search.projection.intact(StreamPosition(0, 1))  # looked: the alias stands
        for index in await search_engine.client.indices.get_alias(name=ALIAS):
            await search_engine.client.indices.delete_alias(index=index, name=ALIAS)

        assert await search._intact(stop)  # takes the rebuild over
    finally:
        await close(search)
    assert await asyncio.to_thread(index_differences, fresh_database, opensearch.url()) == []


class FlushedAfterTheLook(WarriorsCache):
    """The cache projection, with Redis flushed just after its next fresh look (armed)."""

    armed = False

    async def intact(self, checkpoint: StreamPosition, *, fresh: bool = False) -> bool:
        found = await super().intact(checkpoint, fresh=fresh)
        if self.armed and fresh:
            self.armed = False
            await self.models.client.flushall()
        return found


async def test_a_takeover_into_a_cache_flushed_after_its_look_rebuilds_it_whole(
    fresh_database: str, fresh_pool: Pool, redis_url: str
) -> None:
    """The member taking a rebuild over finds the cache intact, and Redis is flushed right
    after. Opening a new epoch there and resuming from the dead owner's position left the
    cache without the first events for good, its count short, and called it complete. It
    must start over from position 0."""
    write_history(fresh_database, WARRIORS)
    stop = asyncio.Event()
    cache = FlushedAfterTheLook(RedisReadModels(redis_url, count_fresh_seconds=60))
    consumer = member(fresh_pool, cache)
    try:
        assert await consumer._intact(stop)  # no rebuild on record: built from the store
        await cache.caught_up()
        assert await asyncio.to_thread(cache_differences, fresh_database, redis_url) == []
        left_mid_replay(fresh_database, cache.name)
        cache.armed = True

        assert await consumer._intact(stop)  # takes the rebuild over
        await cache.caught_up()
    finally:
        await close(consumer)
    assert await asyncio.to_thread(cache_differences, fresh_database, redis_url) == []


async def test_a_rebuilds_mark_arriving_after_its_replay_finished_is_refused(redis_url: str) -> None:
    """A member asks for rebuild N (in PostgreSQL) and stalls before marking the cache
    partial in Redis; another carries N out meanwhile. The late mark stood for good
    (nothing removes a finished rebuild's mark), and the count was never served again."""
    models = RedisReadModels(redis_url, count_fresh_seconds=60)
    with redis.Redis.from_url(redis_url) as client:
        client.set("warriors:count", 0)
    try:
        await models.start_epoch()
        assert await models.begin_rebuild(1)
        assert await models.finish_rebuild(1)
        assert not await models.begin_rebuild(1)  # late: refused
        await models.mark_count_ready()
        assert await models.count() == 0

        assert await models.begin_rebuild(3)
        assert not await models.begin_rebuild(2)  # an older generation's late mark
        await models.mark_count_ready()
        assert await models.count() is None  # 3 under way: not served
        assert await models.finish_rebuild(3)
        # Finishing again (a member taking over a rebuild whose owner died before recording
        # it complete) holds while nothing was flushed or marked since ...
        assert await models.finish_rebuild(3)
        with redis.Redis.from_url(redis_url) as client:
            client.flushall()
        await models.start_epoch()
        assert not await models.finish_rebuild(3)  # ... but not after a flush
    finally:
        await models.close()


async def test_partitions_assigned_during_a_rebuild_are_bounded_by_it_once_it_ends(
    fresh_database: str, fresh_pool: Pool, redis_url: str
) -> None:
    """A group that never committed, assigned while a rebuild runs, reads each partition
    from its earliest record. Records deleted after the replay read the store and before
    the first fetch were passed over unseen (their events missing from the sink for good:
    CI, the fault test, two deletions the cache never got), because a partition assigned
    during a rebuild had no bound for its first offset. Once the rebuild ends, each such
    partition not read yet is bounded by the rebuild's end of it (here no broker answered
    for the ends: 0, so any later first record asks for a rebuild)."""
    write_history(fresh_database, WARRIORS)
    stop = asyncio.Event()
    consumer = member(fresh_pool, WarriorsCache(RedisReadModels(redis_url, count_fresh_seconds=60)))
    try:
        assert await consumer._intact(stop)  # the first rebuild, before any assignment
        left_mid_replay(fresh_database, consumer.projection.name)  # a rebuild under way ...
        consumer._expected = {0: None, 1: None, 2: 7}  # ... when partitions 0 and 1 were assigned
        assert await consumer._intact(stop)  # takes it over and finishes it
    finally:
        await close(consumer)
    assert consumer._first_at_most == {0: 0, 1: 0}
