"""Dagster's PostgreSQL storage, holding its connections open.

dagster-postgres opens a new connection for every query, except in the webserver (which
calls `optimize_for_webserver`). The daemon polls the storage from several loops (the run
queue, sensors, schedules, backfills): about 285 new connections a minute on an idle
platform, each a process forked and authenticated by PostgreSQL. That was half of
Dagster's standing cost (docs/benchmarks.md, "As deployed"). This storage keeps one
connection per storage kind open (more, briefly, under concurrent use), in every process
that loads the instance: the daemon, the code server, run workers, the webserver.
"""

from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# A statement of Dagster's own running longer than this is cut (the webserver's default
# is 15 s; the daemon's backfill pages may take longer on a large history).
STATEMENT_TIMEOUT_MS = 60_000
# Connections are replaced after an hour; beyond the one kept, up to this many at once.
POOL_RECYCLE_SECONDS = 3600
MAX_OVERFLOW = 10


class PooledPostgresStorage(DagsterPostgresStorage):
    """DagsterPostgresStorage whose run, event log and schedule storages each keep a
    connection (the pooling the webserver applies to itself, for every process)."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, **kwargs: Any) -> None:
        super().__init__(postgres_url, should_autocreate_tables, **kwargs)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            storage.optimize_for_webserver(
                statement_timeout=STATEMENT_TIMEOUT_MS,
                pool_recycle=POOL_RECYCLE_SECONDS,
                max_overflow=MAX_OVERFLOW,
            )

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> "PooledPostgresStorage":
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
