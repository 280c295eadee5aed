"""Helpers of the Kafka tests (tests/test_kafka_projectors.py, tests/test_production_faults.py,
tests/test_cluster_topology.py):
the relay in a subprocess, what retention does to the topic, and each sink compared with
the event store (the read model, the Redis cache, the search index)."""

import asyncio
import uuid
from typing import Any, Protocol

import httpx
import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.history import read_model_rows, replay_into_shadow
from tests.support import LoggedProcess, wait_for
from warriors.adapters.kafka_bus import TOPIC
from warriors.adapters.redis_cache import COUNT, EPOCH, READY, REBUILDING, VERSIONS, RedisReadModels
from warriors.adapters.search_engine import EngineKind, SearchEngine
from warriors.projections.cache import CACHE
from warriors.projections.read_model import READ_MODEL
from warriors.projections.search import SEARCH
from warriors.projections.status import RELAY, ProjectionStatus, projection_statuses

# The projections that keep a sink.
SINKS = (READ_MODEL, CACHE, SEARCH)
# What a search document holds of its warrior, compared field by field with a fresh fold.
DOCUMENT_FIELDS = ("id", "name", "dob", "fight_skills", "version")


class Kafka(Protocol):
    """A broker (KafkaBroker) or a cluster of them (KafkaCluster)."""

    def bootstrap_servers(self) -> str: ...


def bus_env(kafka: Kafka, replication: int = 1) -> dict[str, str]:
    """The projectors' and the relay's Kafka settings; `replication`: of the topics the
    relay creates."""
    return {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers(), "KAFKA_PARTITIONS": "3",
            "KAFKA_REPLICATION": str(replication)}  # fmt: skip


def relay(url: str, kafka: Kafka, env: dict[str, str] | None = None) -> LoggedProcess:
    """`warriors relay` in a subprocess: `env` over the bus settings of `kafka`."""
    return LoggedProcess(
        ["-m", "warriors.cli", "relay"], {"DATABASE_URL": url, **bus_env(kafka), **(env or {})}, "relay"
    )


def caught_up(client: httpx.Client) -> bool:
    """`GET /projections` (through `client`, with an operator's key) lists the relay and
    every sink, none of them behind."""
    statuses = client.get("/api/v1/queries/projections").json()
    return {s["name"] for s in statuses} >= {RELAY, *SINKS} and all(s["lag_events"] == 0 for s in statuses)


def exact(url: str) -> bool:
    """The read model equals a replay of the whole store, and the count agrees."""
    return not read_model_differences(url)


def read_model_differences(url: str) -> list[str]:
    """The read model against a replay of the whole store, row by row, and its count.
    Empty: equal."""
    rows = {row[0]: row for row in read_model_rows(url)}
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT total FROM warrior_count").fetchone()
    folded = {row[0]: row for row in asyncio.run(replay_into_shadow(url))}
    differences = [] if count == (len(rows),) else [f"warrior_count {count}, {len(rows)} rows"]
    for warrior_id in sorted(set(rows) | set(folded)):
        if rows.get(warrior_id) != folded.get(warrior_id):
            differences.append(
                f"warrior {warrior_id}: read model {rows.get(warrior_id)}, store {folded.get(warrior_id)}"
            )
    return differences


def kafka_statuses(url: str) -> dict[str, ProjectionStatus]:
    """Every projection's status as /projections reports it in Kafka mode."""

    async def read() -> dict[str, ProjectionStatus]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return {s.name: s for s in await projection_statuses(conn, kafka=True)}

    return asyncio.run(read())


def living(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT aggregate_id) FILTER (WHERE event_type = 'WarriorCreated')"
            " - count(DISTINCT aggregate_id) FILTER (WHERE event_type IN ('WarriorDeleted', 'WarriorErased'))"
            " FROM event_store"
        ).fetchone()
    assert row is not None
    return int(row[0])


def drop_the_topics_records(broker: Kafka) -> None:
    """What retention does: every record published so far is deleted from the topic. A
    broker just restarted answers "Not leader for partition" for a moment: tried again
    until it answers (deleting up to an offset already deleted changes nothing)."""
    wait_for(lambda: _drop_records(broker), timeout=60, what="the topic's records deleted")


def _drop_records(broker: Kafka) -> bool:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers()})
    partitions = admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
    reader = Consumer({"bootstrap.servers": broker.bootstrap_servers(), "group.id": f"ends-{uuid.uuid4()}"})
    try:
        ends = [TopicPartition(TOPIC, p, reader.get_watermark_offsets(TopicPartition(TOPIC, p), 10)[1])
                for p in partitions]  # fmt: skip
    finally:
        reader.close()
    for future in admin.delete_records(ends, request_timeout=10).values():
        future.result(timeout=30)
    return True


def redis_count(url: str) -> int | None:
    """The Redis count as the query service would serve it (None: not ready)."""

    async def read() -> int | None:
        models = RedisReadModels(url)
        try:
            return await models.count()
        finally:
            await models.close()

    return asyncio.run(read())


def cache_matches_the_store(url: str, redis_url: str) -> bool:
    """Every warrior's cache entry at its last version (a tombstone when deleted), and the
    count ready and right."""
    return not cache_differences(url, redis_url)


def cache_differences(url: str, redis_url: str) -> list[str]:
    """The Redis cache against the store: the count (and why it is not served: the
    readiness, the epoch, a rebuild's mark), then every warrior whose entry is missing or
    not at its last version. Empty: equal."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT aggregate_id, max(event_version) FROM event_store GROUP BY 1").fetchall()
    last: dict[uuid.UUID, int] = dict(rows)

    async def read() -> tuple[list[Any], list[Any], Any]:
        models = RedisReadModels(redis_url)
        try:
            marks = await models.client.mget(COUNT, READY, EPOCH, REBUILDING)
            versions = await models.client.hmget(VERSIONS, [str(w) for w in last]) if last else []
            return await models.entries(list(last)), versions, marks
        finally:
            await models.close()

    found, versions, (count, ready, epoch, rebuilding) = asyncio.run(read())
    differences = []
    expected = living(url)
    if ready is None or epoch is None or rebuilding is not None or count is None or int(count) != expected:
        differences.append(f"count {count} (ready {ready}, epoch {epoch}, rebuilding {rebuilding}),"
                           f" {expected} living warriors in the store")  # fmt: skip
    for entry, recorded, (warrior, version) in zip(found, versions, last.items(), strict=True):
        if entry is None or entry.version != version:
            differences.append(f"warrior {warrior}: entry at {None if entry is None else entry.version},"
                               f" versions hash {recorded}, store at {version}")  # fmt: skip
    return differences


def index_differences(url: str, search_url: str) -> list[str]:
    """The search index against a fresh fold of the whole store, document by document
    (id, name, dob, skills, version): every living warrior's document equal to its fold,
    no document for a deleted one, and no other document behind the alias. Empty: equal."""
    folded = {
        str(warrior_id): {"id": str(warrior_id), "name": name, "dob": dob.isoformat(),
                          "fight_skills": list(skills), "version": version}
        for warrior_id, name, dob, skills, version, _, _ in asyncio.run(replay_into_shadow(url))
    }  # fmt: skip
    with psycopg.connect(url) as conn:
        everyone = [str(row[0]) for row in conn.execute("SELECT DISTINCT aggregate_id FROM event_store")]

    async def read() -> tuple[dict[str, dict[str, Any]], int]:
        engine = SearchEngine(search_url, EngineKind.OPENSEARCH, query_timeout_ms=10_000)
        try:
            found: dict[str, dict[str, Any]] = {}
            for start in range(0, len(everyone), 1000):
                found.update(await engine.documents(everyone[start : start + 1000]))
            return found, await engine.count()
        finally:
            await engine.close()

    found, count = asyncio.run(read())
    differences = []
    if count != len(folded):
        differences.append(f"the alias holds {count} documents, the store {len(folded)} living warriors")
    for warrior_id in sorted(set(folded) | set(found)):
        document = found.get(warrior_id)
        indexed = None if document is None else {key: document.get(key) for key in DOCUMENT_FIELDS}
        if indexed != folded.get(warrior_id):
            differences.append(f"warrior {warrior_id}: index {indexed}, store {folded.get(warrior_id)}")
    return differences
