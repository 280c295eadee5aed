"""The projections this platform runs, by name. Which run depends on the configuration:
the PostgreSQL read model always; the search index when SEARCH_URL is set; the Redis cache
when REDIS_URL is set."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from warriors.adapters.redis_cache import RedisReadModels
from warriors.adapters.search_engine import SearchEngine
from warriors.config import get_settings
from warriors.eventstore.upcaster_regression import check_upcasters
from warriors.projections.base import BlueGreenProjection, Projection
from warriors.projections.cache import CACHE, WarriorsCache
from warriors.projections.read_model import READ_MODEL, WarriorsReadModel
from warriors.projections.rebuild import RebuildFailed, RebuildReport, rebuild_blue_green, rebuild_in_place
from warriors.projections.search import SEARCH, WarriorsSearch
from warriors.projections.sink_rebuilds import rebuild_through_the_group


class ProjectionName(StrEnum):
    WARRIORS_READ_MODEL = READ_MODEL
    WARRIORS_SEARCH = SEARCH
    WARRIORS_CACHE = CACHE


class NotConfigured(Exception):
    """The projection's target is not configured (REDIS_URL, SEARCH_URL unset)."""


def build(name: ProjectionName, *, at_least_once: bool = False) -> Projection:
    """`at_least_once`: fed from Kafka, where a message may come again."""
    settings = get_settings()
    if name is ProjectionName.WARRIORS_READ_MODEL:
        return WarriorsReadModel(redelivery=at_least_once)
    if name is ProjectionName.WARRIORS_SEARCH:
        return WarriorsSearch(search_engine())
    if name is ProjectionName.WARRIORS_CACHE:
        if not settings.redis_url:
            raise NotConfigured("the warriors_cache projection needs REDIS_URL")
        return WarriorsCache(
            RedisReadModels(
                settings.redis_url, settings.cache_ttl_seconds, settings.cache_count_fresh_seconds
            )
        )
    raise ValueError(f"unknown projection {name}")


def search_engine() -> SearchEngine:
    settings = get_settings()
    if not settings.search_url:
        raise NotConfigured("the warriors_search projection needs SEARCH_URL")
    return SearchEngine(
        settings.search_url,
        settings.search_engine,
        shards=settings.search_shards,
        replicas=settings.search_replicas,
        refresh_interval=settings.search_refresh_interval,
        query_timeout_ms=settings.search_timeout_ms,
        breaker_seconds=settings.search_breaker_seconds,
    )


def build_blue_green(name: ProjectionName) -> BlueGreenProjection | None:
    """The projection when a rebuild can build it anew beside the live one (a table, a
    search index); None when it is rebuilt in place (the Redis cache)."""
    if name is ProjectionName.WARRIORS_READ_MODEL:
        return WarriorsReadModel()
    if name is ProjectionName.WARRIORS_SEARCH:
        return WarriorsSearch(search_engine())
    return None


async def rebuild(
    pool: AsyncConnectionPool[AsyncConnection],
    name: ProjectionName,
    *,
    batch_size: int,
    progress: Callable[[str], None],
    replaying: frozenset[UUID] = frozenset(),
) -> RebuildReport:
    """Blue/green where the projection allows it; emptied and replayed otherwise.
    `replaying`: parked events to apply this time (warriors/projections/parked.py).
    Refused (RebuildFailed) while the upcaster regression fails: the current code cannot
    read every event the store holds, and the rebuild would stop at one, or fold it wrong."""
    async with pool.connection() as conn:
        regression = await check_upcasters(conn)
    if not regression.passed:
        raise RebuildFailed(
            f"{name}: not rebuilt: the upcaster regression fails ({len(regression.failures)} problem(s)):"
            f" {'; '.join(regression.failures[:5])}"
        )
    if (blue_green := build_blue_green(name)) is not None:
        try:
            return await rebuild_blue_green(
                pool, blue_green, batch_size=batch_size, progress=progress, replaying=replaying
            )
        finally:
            await blue_green.close()
    async with opened(name) as projection:
        if get_settings().kafka_bootstrap_servers and isinstance(projection, WarriorsCache):
            # Fed from Kafka, its consumer group rebuilds it (the cache stays partial, never
            # ready, until the member's replay is over): warriors/projections/sink_rebuilds.py.
            return await rebuild_through_the_group(pool, projection, progress=progress, replaying=replaying)
        return await rebuild_in_place(
            pool, projection, batch_size=batch_size, progress=progress, replaying=replaying
        )


@asynccontextmanager
async def opened(name: ProjectionName) -> AsyncIterator[Projection]:
    """The projection, its clients closed on the way out."""
    projection = build(name)
    try:
        yield projection
    finally:
        await projection.close()


def configured() -> list[ProjectionName]:
    """The projections this configuration runs."""
    settings = get_settings()
    names = [ProjectionName.WARRIORS_READ_MODEL]
    if settings.search_url:
        names.append(ProjectionName.WARRIORS_SEARCH)
    if settings.redis_url:
        names.append(ProjectionName.WARRIORS_CACHE)
    return names


def all_projections(*, at_least_once: bool = False) -> list[Projection]:
    return [build(name, at_least_once=at_least_once) for name in configured()]
