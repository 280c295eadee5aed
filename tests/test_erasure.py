"""Crypto-shredding end to end, in production mode (Kafka, Redis, OpenSearch, real
processes): events of both schema versions in one store read alike everywhere; an
erasure leaves nothing readable about the person in any table, index, cache entry, topic
message or log line written after it, and a replay from zero keeps it erased; a service
without the master key refuses to start."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.history import copy_events, event_count, read_model_rows
from tests.kafka_support import (
    bus_env,
    cache_matches_the_store,
    caught_up,
    index_differences,
    read_model_differences,
    relay,
)
from tests.support import ROOT, LoggedProcess, ProjectorProcess, ServiceProcess, auth_headers, wait_for
from tests.test_production_faults import empty_search_engine
from warriors.adapters.kafka_bus import TOPIC
from warriors.security.identity import Role
from warriors.servers import free_port
from warriors.servers.kafka_broker import KafkaBroker
from warriors.servers.opensearch_server import OpenSearchServer

COMMANDS = "/api/v1/commands/warriors"
QUERIES = "/api/v1/queries/warriors"
# Made-up, unmistakable personal data: found anywhere after the erasure, it leaked.
V2_NAME, V2_DOB = "Xavierquoz Umbrafell", "1961-06-17"
V1_NAME, V1_DOB = "Yolandrix Quembert", "1953-09-23"
KEPT_NAME, KEPT_V1_NAME = "Kept Warrior", "Legacy Keeper"


def topic_values(broker: KafkaBroker, since: dict[int, int] | None = None) -> list[bytes]:
    """Every message value on the events topic (from `since`'s offsets, per partition)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers()})
    partitions = list(admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions)
    reader = Consumer({"bootstrap.servers": broker.bootstrap_servers(), "group.id": f"audit-{uuid.uuid4()}",
                       "enable.auto.commit": False})  # fmt: skip
    try:
        ends = {p: reader.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1] for p in partitions}
        starts = since or {p: 0 for p in partitions}
        reader.assign([TopicPartition(TOPIC, p, starts.get(p, 0)) for p in partitions])
        values: list[bytes] = []
        positions = dict(starts)

        def read_to_the_end() -> bool:
            for message in reader.consume(500, timeout=1):
                if message.error() is None:
                    values.append(message.value() or b"")
                    positions[message.partition() or 0] = (message.offset() or 0) + 1
            return all(positions.get(p, 0) >= end for p, end in ends.items())

        wait_for(read_to_the_end, timeout=60, what="the topic read to its end")
        return values
    finally:
        reader.close()


def topic_ends(broker: KafkaBroker) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers()})
    partitions = list(admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions)
    reader = Consumer({"bootstrap.servers": broker.bootstrap_servers(), "group.id": f"ends-{uuid.uuid4()}"})
    try:
        return {p: reader.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1] for p in partitions}
    finally:
        reader.close()


def tables_mentioning(url: str, needles: tuple[str, ...], *, skip: str = "") -> list[str]:
    """`schema.table` of every table in the database one of whose rows, as text, holds
    one of `needles` (case-insensitive); `skip`: a WHERE clause excluding rows of the
    event store (its version-1 rows, which the store keeps as written)."""
    pattern = "|".join(re.escape(n) for n in needles)
    found = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)"
            " FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        ).fetchall()
        for (table,) in tables:
            where = f" AND NOT ({skip})" if skip and table == "public.event_store" else ""
            hit = conn.execute(f"SELECT 1 FROM {table} t WHERE t::text ~* %s{where} LIMIT 1", (pattern,))
            if hit.fetchone():
                found.append(table)
    return found


def redis_values_mentioning(redis_url: str, needles: tuple[str, ...]) -> list[str]:
    found = []
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            value: Any = (
                client.get(key) if kind == b"string" else client.hgetall(key) if kind == b"hash" else b""
            )
            if any(n.lower().encode() in str(value).lower().encode() for n in needles):
                found.append(key.decode())
    return found


def search_hits(client: httpx.Client, term: str) -> list[dict[str, Any]]:
    response = client.get(QUERIES, params={"term": term})
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()
    return hits


def legacy_warrior(url: str, name: str, dob: str) -> uuid.UUID:
    """A warrior as the previous release wrote it: schema version 1, plain text, no key."""
    warrior_id = uuid.uuid4()
    copy_events(url, [
        (warrior_id, "WarriorCreated", 1, {"name": name, "dob": dob, "fight_skills": ["Judo"]}),
        (warrior_id, "WarriorUpdated", 2, {"fight_skills": ["Judo", "Bo"]}),
    ])  # fmt: skip
    return warrior_id


def test_erasure_in_production_mode(
    fresh_database: str, broker: KafkaBroker, redis_url: str, opensearch: OpenSearchServer
) -> None:
    url = fresh_database
    v1_id = legacy_warrior(url, V1_NAME, V1_DOB)
    v1_kept = legacy_warrior(url, KEPT_V1_NAME, "1949-02-02")  # another version-1 warrior, kept
    search_url = empty_search_engine(opensearch)
    env = {**bus_env(broker), "REDIS_URL": redis_url, "SEARCH_URL": search_url}
    service = ServiceProcess(url, free_port(), env=env)
    processes: list[LoggedProcess] = [relay(url, broker), ProjectorProcess(url, env=env)]
    try:
        with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=30) as client:
            created = client.post(COMMANDS, json={"name": V2_NAME, "dob": V2_DOB, "fight_skills": ["Karate"]})
            assert created.status_code == 202, created.text
            v2_id = created.json()["id"]
            renamed = client.patch(f"{COMMANDS}/{v2_id}", json={"name": V2_NAME + " Jr"})
            assert renamed.status_code == 202, renamed.text
            kept = client.post(
                COMMANDS, json={"name": KEPT_NAME, "dob": "1990-01-01", "fight_skills": ["Bo"]}
            )
            kept_id = kept.json()["id"]
            # The legacy warrior changed now: its first key is made, its new event sealed.
            assert client.patch(f"{COMMANDS}/{v1_kept}", json={"dob": "1950-01-01"}).status_code == 202
            wait_for(lambda: caught_up(client), timeout=120, what="every sink caught up")

            # Both versions read alike: history, get-by-id, search.
            for warrior_id, name in ((v1_id, V1_NAME), (v2_id, V2_NAME + " Jr")):
                got = client.get(f"{QUERIES}/{warrior_id}")
                assert got.status_code == 200, got.text
                assert got.json()["name"] == name
                assert [w["id"] for w in search_hits(client, name.split()[0])] == [str(warrior_id)]
            history = client.get(f"{QUERIES}/{v1_id}/history").json()
            assert history[0]["data"] == {"name": V1_NAME, "dob": V1_DOB, "fight_skills": ["Judo"]}
            history = client.get(f"{QUERIES}/{v2_id}/history").json()
            assert history[0]["data"] == {"name": V2_NAME, "dob": V2_DOB, "fight_skills": ["Karate"]}
            assert client.get(f"{QUERIES}/{v1_kept}").json()["dob"] == "1950-01-01"
            # Stored and published sealed: the version-2 name is nowhere in plain text.
            with psycopg.connect(url) as conn:
                stored = conn.execute("SELECT event_data::text FROM event_store WHERE schema_version > 1")
                sealed_rows = [row[0] for row in stored.fetchall()]
            assert len(sealed_rows) == 4  # two creations, a rename, the legacy warrior's change
            assert not [row for row in sealed_rows if V2_NAME in row or V2_DOB in row or KEPT_NAME in row]
            values = topic_values(broker)
            assert len(values) == event_count(url)
            assert not [v for v in values if V2_NAME.encode() in v or V2_DOB.encode() in v]

            # Only an operator erases; bad ids answer 404 and change nothing.
            writer = auth_headers(url, Role.WRITER)
            assert client.post(f"{COMMANDS}/{v2_id}/erase", headers=writer).status_code == 403
            assert client.post(f"{COMMANDS}/{uuid.uuid4()}/erase").status_code == 404
            ends = topic_ends(broker)
            for warrior_id in (v2_id, v1_id):
                erased = client.post(f"{COMMANDS}/{warrior_id}/erase")
                assert erased.status_code == 202, erased.text
                assert erased.headers["location"] == f"{QUERIES}/{warrior_id}/history"
                assert client.post(f"{COMMANDS}/{warrior_id}/erase").status_code == 404  # gone
                assert client.patch(f"{COMMANDS}/{warrior_id}", json={"name": "Back"}).status_code == 404
            wait_for(lambda: caught_up(client), timeout=120, what="the erasures applied")

            needles = (V2_NAME.split()[0], V1_NAME.split()[0], V2_DOB, V1_DOB)
            for warrior_id in (v2_id, v1_id):
                assert client.get(f"{QUERIES}/{warrior_id}").status_code == 404
                history = client.get(f"{QUERIES}/{warrior_id}/history").json()
                assert history[-1]["event_type"] == "WarriorErased"
                assert all(event["data"].get("personal_data") == "erased" for event in history[:-1])
                assert not any(n in str(history) for n in needles)
            for needle in needles[:2]:
                assert search_hits(client, needle) == []
            # The store (its version-1 rows aside, kept as written and redacted when read),
            # every read model, the vocabulary, the cache: nothing about either person.
            assert tables_mentioning(url, needles, skip="schema_version = 1") == []
            assert redis_values_mentioning(redis_url, needles) == []
            assert not [v for v in topic_values(broker, since=ends) if any(n.encode() in v for n in needles)]
            # The others are untouched.
            assert client.get(f"{QUERIES}/{kept_id}").json()["name"] == KEPT_NAME
            assert client.get(f"{QUERIES}/{v1_kept}").json()["name"] == KEPT_V1_NAME

            # A replay from zero keeps them erased: the cache flushed is rebuilt from the
            # store (then the topic), the read model and the index compared with fresh folds.
            with redis.Redis.from_url(redis_url) as cache:
                cache.flushall()
            wait_for(lambda: cache_matches_the_store(url, redis_url), timeout=120, what="the cache rebuilt")
            assert redis_values_mentioning(redis_url, needles) == []
            assert read_model_differences(url) == []
            assert index_differences(url, search_url) == []
            assert {row[0] for row in read_model_rows(url)} == {uuid.UUID(kept_id), v1_kept}
    finally:
        service.stop()
        for process in processes:
            process.stop()
    # No log line of any process, the erasures' own included, holds what was erased.
    for log in (service.log_path, *(p.log_path for p in processes)):
        text = Path(log).read_text(errors="replace")
        assert not [n for n in needles if n in text], log


def test_a_service_without_the_master_key_refuses_to_start(fresh_database: str) -> None:
    uvicorn = ["-m", "uvicorn", "api.gateway:create_app", "--factory", "--port", str(free_port())]
    for args in (["-m", "warriors.cli", "project"], uvicorn):
        env = {**os.environ, "DATABASE_URL": fresh_database, "PERSONAL_DATA_KEY": ""}
        done = subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, timeout=120, text=True
        )
        assert done.returncode != 0
        assert "PERSONAL_DATA_KEY" in done.stdout + done.stderr, done.stdout + done.stderr
    # A key that is not 32 bytes of base64 is named, not used.
    env = {**os.environ, "DATABASE_URL": fresh_database, "PERSONAL_DATA_KEY": "c2hvcnQ="}
    done = subprocess.run([sys.executable, "-m", "warriors.cli", "project"], cwd=ROOT, env=env,
                          capture_output=True, timeout=120, text=True)  # fmt: skip
    assert done.returncode == 2
    assert "must be 32 bytes, not 5" in done.stdout + done.stderr
