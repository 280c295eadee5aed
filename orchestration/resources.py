"""Dagster resources: thin synchronous wrappers over the platform's own services.

Assets, checks and sensors call these; none of them holds SQL. Each call opens a small
pool, runs the service's coroutine and closes the pool (runs and sensor ticks are short
and infrequent, so a pool kept between calls would only hold idle connections).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import dagster as dg
import pandas as pd
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import Field

from warriors.analytics.daily import DailyStatistics, compute_daily_statistics
from warriors.analytics.parquet import ParquetPart, write_daily_parquet
from warriors.analytics.storage import (
    creations_up_to,
    refresh_statistics_view,
    save_daily_statistics,
    warriors_created_on,
)
from warriors.application.snapshotting import due_after, due_by_id
from warriors.application.warrior_commands import WarriorCommands
from warriors.config import get_settings
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.observation import StoreObservation, observe_store
from warriors.eventstore.records import StreamPosition
from warriors.eventstore.retention import expire_idempotency_keys, prune_snapshots
from warriors.eventstore.store import EventStore
from warriors.eventstore.upcaster_regression import RegressionReport, check_upcasters
from warriors.projections.cache import WarriorsCache
from warriors.projections.catalog import ProjectionName, opened, rebuild
from warriors.projections.engine import ProjectionEngine, register
from warriors.projections.parked import ParkedEvent, parked_events
from warriors.projections.parked import replay as replay_parked
from warriors.projections.read_model import WarriorsReadModel
from warriors.projections.rebuild import RebuildReport
from warriors.projections.search import WarriorsSearch
from warriors.projections.status import ProjectionStatus, projection_statuses
from warriors.readside.consistency import ConsistencyReport, check_cache, check_read_model, check_search

T = TypeVar("T")
Pool = AsyncConnectionPool[AsyncConnection]

log = logging.getLogger("warriors.orchestration")


class _Database(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The platform's PostgreSQL: `database_url`, else the DATABASE_URL setting."""

    database_url: str = Field(default="", description="Empty: the DATABASE_URL environment variable.")

    def _url(self) -> str:
        url = self.database_url or get_settings().database_url
        if not url:
            raise dg.Failure("DATABASE_URL is not set: start the platform with `make run`, or set it.")
        return url

    def _run(self, work: Callable[[Pool], Awaitable[T]]) -> T:
        async def go() -> T:
            kwargs = {"autocommit": True, "application_name": "warriors-dagster"}
            async with AsyncConnectionPool(self._url(), min_size=1, max_size=4, kwargs=kwargs) as pool:
                return await work(pool)

        return asyncio.run(go())

    def _on_connection(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        async def go(pool: Pool) -> T:
            async with pool.connection() as conn:
                return await work(conn)

        return self._run(go)


class EventStoreResource(_Database):
    """The event store: what it holds, and aggregate snapshots."""

    def observe(self) -> StoreObservation:
        return self._on_connection(observe_store)

    def due_after(
        self, after: StreamPosition, threshold: int, limit: int
    ) -> tuple[list[UUID], int, StreamPosition]:
        return self._on_connection(lambda conn: due_after(conn, after, threshold, limit))

    def due_by_id(self, after_id: UUID | None, threshold: int, limit: int) -> tuple[list[UUID], UUID | None]:
        return self._on_connection(lambda conn: due_by_id(conn, after_id, threshold, limit))

    def snapshot(self, aggregate_ids: list[UUID]) -> int:
        """Snapshot each aggregate at its current version, then keep only its newest
        SNAPSHOTS_KEPT; returns how many were taken."""
        keep = get_settings().snapshots_kept

        async def go(pool: Pool) -> int:
            store = EventStore(pool, GroupCommitAppender(pool))
            commands = WarriorCommands(store)
            taken = 0
            for aggregate_id in aggregate_ids:
                taken += await commands.snapshot(aggregate_id) is not None
            if aggregate_ids:
                async with pool.connection() as conn:
                    await prune_snapshots(conn, keep, aggregate_ids)
            return taken

        return self._run(go)

    def upcaster_regression(self) -> RegressionReport:
        """Every (event type, schema version) stored, read by the current code (a sample)."""
        return self._on_connection(check_upcasters)

    def housekeeping(self) -> tuple[int, int]:
        """Expire idempotency keys older than IDEMPOTENCY_KEY_HOURS and prune every
        aggregate's snapshots to SNAPSHOTS_KEPT: (keys deleted, snapshots deleted)."""
        settings = get_settings()

        async def go(conn: AsyncConnection[Any]) -> tuple[int, int]:
            keys = await expire_idempotency_keys(conn, timedelta(hours=settings.idempotency_key_hours))
            return keys, await prune_snapshots(conn, settings.snapshots_kept)

        return self._on_connection(go)


class ProjectionsResource(_Database):
    """The projections: status and lag, catch-up, blue/green rebuild, consistency."""

    batch_size: int = Field(default=1000, description="Events per projection batch.")

    def statuses(self) -> list[ProjectionStatus]:
        kafka = bool(get_settings().kafka_bootstrap_servers)
        return self._on_connection(lambda conn: projection_statuses(conn, kafka=kafka))

    def status(self, name: ProjectionName) -> ProjectionStatus:
        registered = self._register(name)
        kafka = bool(get_settings().kafka_bootstrap_servers)
        [status] = self._on_connection(lambda conn: projection_statuses(conn, registered, kafka=kafka))
        return status

    def catch_up(self, name: ProjectionName) -> tuple[StreamPosition, StreamPosition, int]:
        """Apply events until caught up (or FAILED): (from, to, events applied). Fed from
        Kafka, the projection's consumer group applies them: nothing to do here (its lag is
        in the status)."""

        async def go(pool: Pool) -> tuple[StreamPosition, StreamPosition, int]:
            if get_settings().kafka_bootstrap_servers:  # its consumer group applies the events
                async with pool.connection() as conn:
                    [status] = await projection_statuses(conn, str(name), kafka=True)
                here = StreamPosition(0, status.position)
                return here, here, 0
            async with opened(name) as projection:
                engine = ProjectionEngine(pool, projection, self.batch_size)
                await engine.register()
                async with pool.connection() as conn:
                    start, _ = await engine.checkpoint(conn)
                applied = await engine.catch_up()
                async with pool.connection() as conn:
                    end, _ = await engine.checkpoint(conn)
            return start, end, applied

        return self._run(go)

    def rebuild(self, name: ProjectionName, progress: Callable[[str], None]) -> RebuildReport:
        """Blue/green for a PostgreSQL table projection; emptied and replayed otherwise."""

        def go(pool: Pool) -> Awaitable[RebuildReport]:
            return rebuild(pool, name, batch_size=self.batch_size, progress=progress)

        self._register(name)
        return self._run(go)

    def parked(self, name: ProjectionName) -> list[ParkedEvent]:
        """Its parked events waiting for a replay or a discard."""
        return self._on_connection(lambda conn: parked_events(conn, name))

    def replay_parked(
        self, name: ProjectionName, event_ids: list[UUID] | None, progress: Callable[[str], None]
    ) -> tuple[list[ParkedEvent], RebuildReport]:
        """Apply parked events (all, or `event_ids`) by rebuilding the projection with them."""

        def go(pool: Pool) -> Awaitable[tuple[list[ParkedEvent], RebuildReport]]:
            return replay_parked(pool, name, event_ids, batch_size=self.batch_size, progress=progress)

        self._register(name)
        return self._run(go)

    def check_consistency(self, name: ProjectionName, sample_size: int) -> ConsistencyReport:
        """The projection against what it should hold: the read model against the events;
        the search index and the cache against the read model."""

        kafka = bool(get_settings().kafka_bootstrap_servers)

        async def check(conn: AsyncConnection[Any]) -> ConsistencyReport:
            async with opened(name) as projection:
                if isinstance(projection, WarriorsReadModel):
                    return await check_read_model(
                        conn, projection.name, projection.table, sample_size, kafka=kafka
                    )
                if isinstance(projection, WarriorsSearch):
                    return await check_search(
                        conn, projection.engine, projection.name, sample_size, kafka=kafka
                    )
                assert isinstance(projection, WarriorsCache)
                return await check_cache(conn, projection.models, projection.name, sample_size, kafka=kafka)

        return self._on_connection(check)

    def _register(self, name: ProjectionName) -> str:
        async def go(pool: Pool) -> str:
            await register(pool, str(name))
            return str(name)

        return self._run(go)


@dataclass(frozen=True)
class ComputedDay:
    """A day of statistics as computed and stored, with what its charts need."""

    stats: DailyStatistics
    recent_creations: pd.DataFrame  # day, warriors_created: the stored days up to this one
    parquet: list[ParquetPart]  # the day's file of each table


class StatisticsResource(_Database):
    """Warrior statistics: the materialized view, the daily tables and their Parquet dataset."""

    analytics_dir: str = Field(
        default="", description="The Parquet dataset's folder. Empty: the ANALYTICS_DIR setting."
    )

    def analytics_root(self) -> Path:
        root = Path(self.analytics_dir) if self.analytics_dir else get_settings().analytics_path()
        return root.absolute()

    def refresh_view(self) -> int:
        return self._on_connection(refresh_statistics_view)

    def compute_day(self, day: date, recent_days: int = 30) -> ComputedDay:
        """Compute one day's statistics from its events and store them, replacing any: the
        daily tables (one transaction), then the day's Parquet files. Also reads back the
        stored creations of the `recent_days` days ending with it."""

        async def go(conn: AsyncConnection[Any]) -> tuple[DailyStatistics, pd.DataFrame]:
            stats = compute_daily_statistics(day, await warriors_created_on(conn, day))
            await save_daily_statistics(conn, stats)
            return stats, await creations_up_to(conn, day, recent_days)

        stats, recent = self._on_connection(go)
        return ComputedDay(stats, recent, write_daily_parquet(self.analytics_root(), stats))
