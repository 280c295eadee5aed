"""Bounded growth, against real PostgreSQL: idempotency keys older than the window are gone
after the hourly clean-up (run as Dagster runs it, as warriors_projector) while a retry
inside the window still returns the first answer; old snapshots are pruned to the newest
few per warrior."""

import asyncio
import secrets
import uuid
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from orchestration.jobs import housekeeping
from orchestration.resources import EventStoreResource
from tests.support import ServiceProcess
from warriors.eventstore.retention import prune_snapshots
from warriors.eventstore.roles import ServiceRole, enable_logins, url_as
from warriors.servers import free_port

COMMANDS = "/api/v1/commands/warriors"
BACKDATE = "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = %s"


def keys(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM idempotency_keys")}


def run_housekeeping(url: str) -> None:
    with dg.instance_for_test() as instance:
        result = housekeeping.execute_in_process(
            resources={"store": EventStoreResource(database_url=url)}, instance=instance
        )
    assert result.success


def test_expired_idempotency_keys_are_cleaned_up_and_fresh_ones_still_answer(fresh_database: str) -> None:
    service = ServiceProcess(fresh_database, free_port())
    try:
        with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:

            def create(key: str, name: str) -> httpx.Response:
                body = {"name": name, "dob": "1990-01-01"}
                answer = client.post(COMMANDS, json=body, headers={"Idempotency-Key": key})
                assert answer.status_code == 202, answer.text
                return answer

            old = create("old-key", "Old")
            fresh = create("fresh-key", "Fresh")
            with psycopg.connect(fresh_database) as conn:  # recorded 25 hours ago
                conn.execute(BACKDATE, ("old-key",))

            passwords = {role: secrets.token_urlsafe(16) for role in ServiceRole}
            enable_logins(fresh_database, passwords)
            run_housekeeping(url_as(fresh_database, ServiceRole.PROJECTOR, passwords[ServiceRole.PROJECTOR]))

            assert keys(fresh_database) == {"fresh-key"}
            again = create("fresh-key", "Fresh")  # inside the window: the first answer
            assert again.json() == fresh.json()
            assert again.headers["idempotent-replayed"] == "true"
            new = create("old-key", "Old")  # expired: a new command
            assert new.json()["id"] != old.json()["id"]
            assert "idempotent-replayed" not in new.headers
    finally:
        service.stop()


def test_the_clean_up_keeps_keys_at_least_an_hour(fresh_database: str) -> None:
    with (
        psycopg.connect(fresh_database) as conn,
        pytest.raises(psycopg.errors.RaiseException, match="at least an hour"),
    ):
        conn.execute("SELECT expire_idempotency_keys(interval '5 minutes', 100)")


def snapshot_versions(url: str) -> dict[uuid.UUID, list[int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT aggregate_id, version FROM event_snapshots ORDER BY 1, 2").fetchall()
    found: dict[uuid.UUID, list[int]] = {}
    for aggregate_id, version in rows:
        found.setdefault(aggregate_id, []).append(version)
    return found


def test_old_snapshots_are_pruned_to_the_newest(fresh_database: str) -> None:
    busy, other = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(fresh_database) as conn:
        for aggregate_id, versions in ((busy, range(1, 6)), (other, range(1, 4))):
            for version in versions:
                conn.execute(
                    "INSERT INTO event_snapshots (aggregate_id, aggregate_type, version, state)"
                    " VALUES (%s, 'Warrior', %s, '{}')",
                    (aggregate_id, version),
                )

    async def prune(ids: list[uuid.UUID] | None) -> int:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            fresh_database, min_size=1, max_size=1, kwargs={"autocommit": True}
        )
        async with pool, pool.connection() as conn:
            return await prune_snapshots(conn, 2, ids)

    assert asyncio.run(prune([busy])) == 3  # only the aggregates given
    assert snapshot_versions(fresh_database) == {busy: [4, 5], other: [1, 2, 3]}
    run_housekeeping(fresh_database)  # every aggregate (SNAPSHOTS_KEPT=2)
    assert snapshot_versions(fresh_database) == {busy: [4, 5], other: [2, 3]}
