"""The projections this platform runs, by name. Which run depends on the configuration:
the PostgreSQL read model always; the Redis cache when REDIS_URL is set."""

from collections.abc import Callable
from enum import StrEnum

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from warriors.adapters.redis_cache import RedisReadModels
from warriors.config import get_settings
from warriors.projections.base import Projection, TableProjection
from warriors.projections.cache import CACHE, WarriorsCache
from warriors.projections.read_model import READ_MODEL, WarriorsReadModel
from warriors.projections.rebuild import RebuildReport, rebuild_blue_green, rebuild_in_place


class ProjectionName(StrEnum):
    WARRIORS_READ_MODEL = READ_MODEL
    WARRIORS_CACHE = CACHE


class NotConfigured(Exception):
    """The projection's target is not configured (REDIS_URL, SEARCH_URL unset)."""


def build(name: ProjectionName) -> Projection:
    settings = get_settings()
    if name is ProjectionName.WARRIORS_READ_MODEL:
        return WarriorsReadModel()
    if name is ProjectionName.WARRIORS_CACHE:
        if not settings.redis_url:
            raise NotConfigured("the warriors_cache projection needs REDIS_URL")
        return WarriorsCache(RedisReadModels(settings.redis_url, settings.cache_ttl_seconds))
    raise ValueError(f"unknown projection {name}")


def is_table_projection(name: ProjectionName) -> bool:
    return name is ProjectionName.WARRIORS_READ_MODEL


def build_table(name: ProjectionName) -> TableProjection:
    """A projection into a PostgreSQL table (the blue/green rebuild replaces tables)."""
    if name is ProjectionName.WARRIORS_READ_MODEL:
        return WarriorsReadModel()
    raise NotConfigured(f"{name} is not a PostgreSQL table projection")


async def rebuild(
    pool: AsyncConnectionPool[AsyncConnection],
    name: ProjectionName,
    *,
    batch_size: int,
    progress: Callable[[str], None],
) -> RebuildReport:
    """Blue/green for a PostgreSQL table projection; emptied and replayed otherwise."""
    if is_table_projection(name):
        return await rebuild_blue_green(pool, build_table(name), batch_size=batch_size, progress=progress)
    return await rebuild_in_place(pool, build(name), batch_size=batch_size, progress=progress)


def configured() -> list[ProjectionName]:
    """The projections this configuration runs."""
    settings = get_settings()
    names = [ProjectionName.WARRIORS_READ_MODEL]
    if settings.redis_url:
        names.append(ProjectionName.WARRIORS_CACHE)
    return names


def all_projections() -> list[Projection]:
    return [build(name) for name in configured()]
