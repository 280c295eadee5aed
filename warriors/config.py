"""All configuration, from environment variables (and a `.env.services` file if present).

This is the only place that reads the environment. Every variable is listed in the
README's Configuration section.
"""

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from warriors.adapters.search_engine import BREAKER_SECONDS, QUERY_TIMEOUT_MS, EngineKind

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# An ALLOWED_HOSTS entry: a DNS name or IPv4 address, or an IPv6 address in brackets.
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env.services", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: `make run` starts an embedded server.",
    )
    data_dir: Path = Field(
        default=PROJECT_ROOT / ".data",
        description="Where the embedded PostgreSQL keeps its data (survives restarts).",
    )
    embedded_pg_port: int = Field(default=5433, description="Port of the embedded PostgreSQL.")
    analytics_dir: Path | None = Field(
        default=None,
        description="Dagster: where the daily statistics are also written as a Hive-partitioned"
        " Parquet dataset (TABLE/day=YYYY-MM-DD/part-0.parquet) for pandas, DuckDB or a notebook."
        " Unset: DATA_DIR/analytics.",
    )

    log_format: Literal["text", "json"] = Field(
        default="text", description="text: readable lines; json: one JSON object per line (compose)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="DEBUG adds a line per command stored and per event applied."
    )

    metrics_port: int | None = Field(
        default=None,
        description="The projector and the relay serve their own /metrics on this port (compose: 9101, on"
        " the private network). Unset: none (under `make run` the HTTP entry point shows them).",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Where METRICS_PORT listens.")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="An OTLP/HTTP collector (e.g. http://127.0.0.1:4318): traces on. Unset: off.",
    )

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    http_workers: int = Field(default=2, ge=1, description="ASGI worker processes.")
    allowed_hosts: str = Field(
        default="",
        description="The host names the HTTP service answers to, comma-separated (e.g."
        " `warriors.example.com,127.0.0.1`; IPv6 in brackets), matched case-insensitively without"
        " the port; a request naming another Host answers 400, which defeats DNS rebinding."
        " Empty: any host (the default, for `make run`).",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names_only(cls, value: str) -> str:
        for entry in value.split(","):
            name = entry.strip().lower()
            if name and not _HOST_NAME.fullmatch(name):
                raise ValueError(
                    f"{entry.strip()!r} is not a host name: give names or addresses without a"
                    " scheme, port or path (IPv6 in brackets, e.g. [::1])"
                )
        return value

    def allowed_host_names(self) -> frozenset[str]:
        """ALLOWED_HOSTS as lower-case names; empty: any host is allowed."""
        return frozenset(name for entry in self.allowed_hosts.split(",") if (name := entry.strip().lower()))

    db_pool_min_size: int = Field(default=4, ge=1)
    db_pool_max_size: int = Field(default=16, ge=1)
    db_pool_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Wait for a connection before answering 503."
    )
    # Admission control (api/common/admission.py, docs/operations.md "Overload"): per HTTP
    # worker, reads (GET) and writes each run at most *_in_flight at once; up to
    # admission_queue more of each wait in line at most admission_queue_seconds; the rest
    # are answered 503 at once.
    admission_reads_in_flight: int = Field(default=48, ge=1)
    admission_writes_in_flight: int = Field(default=48, ge=1)
    admission_queue: int = Field(default=64, ge=0)
    admission_queue_seconds: float = Field(default=0.1, gt=0)
    append_max_batch: int = Field(
        default=256, ge=1, description="Most commands written in one group-commit INSERT."
    )
    append_max_flushes: int = Field(
        default=1,
        ge=1,
        description="Group-commit INSERTs in flight at once per worker. One gave the largest"
        " batches and the best throughput and tail here (docs/benchmarks.md).",
    )
    inline_read_model: bool = Field(
        default=True,
        description="A creation's read-model row is written in the statement that appends its event"
        " (warriors/projections/inline.py); PostgreSQL mode only (ignored with Kafka).",
    )
    projector_batch_size: int = Field(default=1000, ge=1, description="Events per projection batch.")
    projector_idle_seconds: float = Field(
        default=0.1, gt=0, description="Live projector poll interval when no wake-up arrives."
    )
    read_wait_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Longest wait for `?position=` before answering 503."
    )
    redis_url: str | None = Field(
        default=None, description="Redis for the get-by-id cache and the count. Unset: PostgreSQL only."
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="Kafka: the relay publishes the store's events; projectors consume them."
    )
    kafka_partitions: int = Field(default=3, ge=1, description="Partitions of warrior-events (at creation).")
    kafka_replication: int = Field(default=1, ge=1, description="Replication of the topics (at creation).")
    kafka_retention_hours: int = Field(
        default=168,
        ge=1,
        description="How long the topics keep a record (retention.ms, set at creation). Recovery never"
        " depends on it: a sink is rebuilt from the event store.",
    )
    kafka_session_timeout_seconds: float = Field(
        default=45.0,
        ge=6,
        le=1800,
        description="How long a projector's consumer may go unheard (killed, hung) before its group"
        " moves its partitions to the other members (Kafka's session.timeout.ms).",
    )
    kafka_group_instance_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Static group membership (Kafka's group.instance.id, KIP-345): a projector that"
        " restarts with the same id takes its partitions back at once instead of after the session"
        " time-out. Each consumer group's member is `<id>-<projection>`; two live projectors must"
        " never share an id (the broker fences the older). `warriors run` sets one for its projector."
        " Unset: dynamic membership.",
    )
    kafka_max_poll_interval_seconds: float = Field(
        default=300.0,
        ge=6,
        le=86400,
        description="Longest a projector's consumer may go without polling before its group moves its"
        " partitions (Kafka's max.poll.interval.ms; never below the session time-out). A rebuild from"
        " the event store keeps polling, so it may last longer than this.",
    )
    search_url: str | None = Field(
        default=None, description="Search engine for ?term= and suggest. Unset: PostgreSQL search."
    )
    search_engine: EngineKind = Field(
        default=EngineKind.OPENSEARCH, description="opensearch or elasticsearch."
    )
    search_shards: int = Field(default=1, ge=1)
    search_replicas: int = Field(default=0, ge=0)
    search_refresh_interval: str = Field(
        default="200ms", description="How soon the engine makes writes searchable (and ?position= waits)."
    )
    search_timeout_ms: int = Field(
        default=QUERY_TIMEOUT_MS,
        ge=1,
        description="A search's budget on the engine before PostgreSQL answers.",
    )
    search_breaker_seconds: float = Field(
        default=BREAKER_SECONDS,
        ge=0,
        description="After a failed or timed-out search, searches skip the engine this long (PostgreSQL"
        " answers); then one tries it again.",
    )
    search_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="A search's answer is served again this long to the same term (per worker); a read"
        " with ?position= bypasses it. 0: no cache.",
    )
    search_cache_entries: int = Field(default=10_000, ge=0, description="Most answers a worker keeps.")
    search_vocabulary_in_worker: bool = Field(
        default=True,
        description="Each HTTP worker holds the search vocabulary and answers a term that can match"
        " nothing without a query (PostgreSQL search; warriors/readside/vocabulary.py).",
    )
    cache_ttl_seconds: int = Field(default=3600, ge=1, description="How long a Redis cache entry lives.")
    cache_count_fresh_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long the Redis count is served after its projection last reported it caught up:"
        " a projection that stops, fails or falls behind has its count ignored after this long.",
    )
    lag_threshold_events: int = Field(
        default=1000, ge=0, description="Dagster: a projection further behind than this is lagging."
    )
    lag_threshold_seconds: float = Field(
        default=30.0, ge=0, description="Dagster: a projection whose oldest unapplied event is older lags."
    )
    snapshot_every_events: int = Field(
        default=50, ge=2, description="Dagster: snapshot an aggregate with this many events since its last."
    )
    idempotency_key_hours: float = Field(
        default=24.0,
        ge=1,
        description="An Idempotency-Key is remembered at least this long; the hourly clean-up deletes"
        " older ones, after which a retry with that key is a new command.",
    )
    snapshots_kept: int = Field(default=2, ge=1, description="Snapshots kept per warrior (the newest).")
    consistency_sample_size: int = Field(
        default=200, ge=0, description="Dagster: read-model rows folded again from events per check."
    )
    services_kafka_port: int = Field(default=9092, description="`make services`: the Kafka broker's port.")
    services_search_port: int = Field(default=9200, description="`make services`: OpenSearch's HTTP port.")
    services_redis_port: int = Field(default=6380, description="`make services`: Redis' port.")
    dagster_postgres_url: str | None = Field(
        default=None,
        description="Dagster's own storage, used as given. Unset: database `dagster` on the platform's"
        " server, owned by the role warriors_dagster (DAGSTER_DB_PASSWORD).",
    )
    dagster_db_password: SecretStr | None = Field(
        default=None,
        description="`warriors dagster-storage` (and `make run` with DATABASE_URL): the password of"
        " warriors_dagster, the role that owns Dagster's storage and nothing else. Unset on the embedded"
        " server: made once, kept with its data.",
    )
    dagster_host: str = "127.0.0.1"
    dagster_port: int = Field(default=3000, description="Dagster UI (webserver) port under `make run`.")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="Larger bodies: 413.")
    compat_routes: bool = Field(
        default=True,
        description="Serve the load test's own routes (/warrior, /counting-warriors; api/compat). On so"
        " the stress test runs as is; switch it off in production.",
    )

    read_auth: Literal["open", "required"] = Field(
        default="open",
        description="open: anyone may read (a key sent anyway must be valid); required: reads need a"
        " key (reader, writer or operator). Writes always need writer, operator endpoints operator.",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a worker remembers a key's role: a revoked key is refused within this.",
    )
    auth_unknown_keys_per_minute: int = Field(
        default=30,
        ge=1,
        description="Per client address and worker, how many keys found unknown or revoked may be looked up"
        " in PostgreSQL a minute; past it, 429 with Retry-After and no look-up (api/common/key_guesses.py).",
    )
    compat_open_writes: bool = Field(
        default=False,
        description="Let anyone POST /warrior (the load test's route) without a key. Only for a load"
        " test on a closed network: anyone who reaches the port can then create warriors.",
    )
    api_db_password: SecretStr | None = Field(
        default=None,
        description="`warriors db-roles`: the password of warriors_api (the HTTP services).",
    )
    projector_db_password: SecretStr | None = Field(
        default=None,
        description="`warriors db-roles`: the password of warriors_projector (projector, relay, Dagster).",
    )
    personal_data_key: SecretStr | None = Field(
        default=None,
        description="The master key (32 bytes, base64) that wraps each warrior's own key; names and"
        " dates of birth are stored encrypted under those. Required by every service.",
    )
    personal_data_key_file: Path | None = Field(
        default=None,
        description="A file holding the master key instead (mode 0600); `make run` keeps one in"
        " DATA_DIR/personal-data.key.",
    )
    api_key_file: Path | None = Field(
        default=None,
        description="`make run`: where the local operator key is kept (mode 0600). Unset: DATA_DIR/api-key.",
    )

    @property
    def read_auth_required(self) -> bool:
        return self.read_auth == "required"

    def local_key_file(self) -> Path:
        return self.api_key_file or self.data_dir / "api-key"

    def local_personal_key_file(self) -> Path:
        return self.personal_data_key_file or self.data_dir / "personal-data.key"

    def analytics_path(self) -> Path:
        return self.analytics_dir or self.data_dir / "analytics"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
