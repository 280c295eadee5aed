"""Least privilege in PostgreSQL (migration 0011): what the services' roles can and cannot
do to the event store, and the platform working end to end as those roles, including a
blue/green rebuild and a statistics refresh (which need the read models' ownership and
keep the API's rights)."""

import asyncio
import os
import secrets
import subprocess
import sys
from uuid import uuid4

import httpx
import psycopg
import pytest
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from orchestration.instance import ensure_database, ensure_storage, storage_url
from tests.support import ROOT, ProjectorProcess, ServiceProcess, auth_headers, wait_for
from warriors.analytics.storage import refresh_statistics_view
from warriors.eventstore.roles import ServiceRole, enable_logins, url_as
from warriors.projections.read_model import WarriorsReadModel
from warriors.projections.rebuild import RebuildReport, rebuild_blue_green
from warriors.security.identity import Role
from warriors.servers import free_port

COMMANDS = "/api/v1/commands/warriors"
QUERIES = "/api/v1/queries/warriors"

APPEND = (
    "INSERT INTO event_store (event_id, aggregate_id, aggregate_type, event_type, event_version, event_data,"
    " metadata) VALUES (gen_random_uuid(), gen_random_uuid(), 'Warrior', 'WarriorCreated', 1, '{}', '{}')"
)
# Each statement must fail for the role with the error named (`None`: must succeed).
REFUSED_TO_BOTH = [
    ("UPDATE event_store SET event_type = 'Forged'", errors.InsufficientPrivilege),
    ("DELETE FROM event_store", errors.InsufficientPrivilege),
    ("TRUNCATE event_store", errors.InsufficientPrivilege),
    ("ALTER TABLE event_store DISABLE TRIGGER ALL", errors.InsufficientPrivilege),
    ("ALTER TABLE event_store DISABLE TRIGGER event_store_no_update_delete", errors.InsufficientPrivilege),
    ("ALTER TABLE event_store ADD COLUMN forged text", errors.InsufficientPrivilege),
    ("DROP TABLE event_store", errors.InsufficientPrivilege),
    ("UPDATE api_keys SET role = 'operator'", errors.InsufficientPrivilege),
    ("INSERT INTO api_keys (id, name, role, key_digest) VALUES (gen_random_uuid(), 'x', 'operator', "
     "decode(repeat('00', 32), 'hex'))", errors.InsufficientPrivilege),
]  # fmt: skip
REFUSED_TO_API = [
    ("DELETE FROM warriors_read_model", errors.InsufficientPrivilege),
    # Creations are projected inline (sql/0019): the API inserts rows, never changes them.
    ("UPDATE warriors_read_model SET name = 'Forged'", errors.InsufficientPrivilege),
    ("TRUNCATE warriors_read_model", errors.InsufficientPrivilege),
    ("DELETE FROM search_words", errors.InsufficientPrivilege),
    ("DELETE FROM projection_offsets", errors.InsufficientPrivilege),
    ("INSERT INTO event_snapshots (aggregate_id, aggregate_type, version, state)"
     " VALUES (gen_random_uuid(), 'Warrior', 1, '{}')", errors.InsufficientPrivilege),
]  # fmt: skip
REFUSED_TO_PROJECTOR = [
    (APPEND, errors.InsufficientPrivilege),
    ("DELETE FROM idempotency_keys", errors.InsufficientPrivilege),
]  # fmt: skip


def refused(url: str, role: ServiceRole, statement: str) -> type[Exception] | None:
    """The error `statement` raises when run as `role` (None if it ran), rolled back."""
    with psycopg.connect(url) as conn:
        conn.execute(f"SET ROLE {role}")
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return type(exc)
        finally:
            conn.rollback()
    return None


@pytest.mark.parametrize(("statement", "error"), REFUSED_TO_BOTH + REFUSED_TO_API)
def test_the_api_role_cannot_change_what_is_stored(fresh_database: str, statement: str, error: type) -> None:
    assert refused(fresh_database, ServiceRole.API, statement) is error


@pytest.mark.parametrize(("statement", "error"), REFUSED_TO_BOTH + REFUSED_TO_PROJECTOR)
def test_the_projector_role_cannot_change_the_event_store(
    fresh_database: str, statement: str, error: type
) -> None:
    assert refused(fresh_database, ServiceRole.PROJECTOR, statement) is error


def test_what_the_roles_may_do_they_can(fresh_database: str) -> None:
    """The refusals above come from the grants: the API appends and reads, the projector
    reads, and the owner could disable the trigger."""
    assert refused(fresh_database, ServiceRole.API, APPEND) is None
    assert refused(fresh_database, ServiceRole.PROJECTOR, "SELECT count(*) FROM event_store") is None
    assert refused(fresh_database, ServiceRole.PROJECTOR, "DELETE FROM warriors_read_model") is None
    with psycopg.connect(fresh_database) as conn:
        conn.execute("ALTER TABLE event_store DISABLE TRIGGER event_store_no_update_delete")
        conn.rollback()


def test_functions_run_as_the_owner_look_names_up_where_no_service_role_creates(fresh_database: str) -> None:
    """Every SECURITY DEFINER function sets its search path, and no schema on it is one a
    service role may create objects in (issue 26: `public` was on it, where the projector
    creates a rebuild's shadow table, so an object it made there could be found first by a
    function running as the owner)."""
    with psycopg.connect(fresh_database) as conn:
        functions = conn.execute(
            "SELECT p.proname, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        creators = {
            schema: [role for role in ServiceRole if conn.execute(
                "SELECT has_schema_privilege(%s, %s, 'CREATE')", (str(role), schema)).fetchone() == (True,)]
            for (schema,) in conn.execute("SELECT nspname FROM pg_namespace").fetchall()
        }  # fmt: skip
    assert {name for name, _ in functions} >= {"erase_warrior_key", "expire_idempotency_keys"}
    for name, config in functions:
        paths = [c.split("=", 1)[1] for c in config or [] if c.startswith("search_path=")]
        assert paths, f"{name} runs as its owner without a search path of its own"
        schemas = [s.strip().strip('"') for s in paths[0].split(",") if s.strip() != "pg_temp"]
        for schema in schemas:
            who = creators.get(schema)
            assert not who, f"{name} looks names up in {schema}, where {who} create"


def test_dagster_storage_belongs_to_a_role_with_no_right_on_the_platform(fresh_database: str) -> None:
    """Dagster's processes and runs logged in to their storage as the platform's owner (or
    the embedded server's superuser), and could have rewritten history (issue 26). Its
    storage now belongs to warriors_dagster, which may do anything there and nothing on the
    platform's database; a storage the owner made before is handed over whole."""
    storage = storage_url(fresh_database, database=f"dagster_{secrets.token_hex(4)}")
    ensure_database(storage)  # made by the owner, as before the role existed
    with psycopg.connect(storage.replace("+psycopg2", ""), autocommit=True) as conn:
        conn.execute("CREATE TABLE runs (id serial PRIMARY KEY)")
        conn.execute("CREATE TYPE run_state AS ENUM ('queued', 'started')")
    password = secrets.token_urlsafe(16)
    url = ensure_storage(fresh_database, storage, password).replace("+psycopg2", "")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO runs DEFAULT VALUES")
            conn.execute("CREATE TABLE event_logs (id bigserial PRIMARY KEY, state run_state)")
            conn.execute("DROP TYPE run_state CASCADE")
        with psycopg.connect(fresh_database) as conn:
            role = conn.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'warriors_dagster'"
            ).fetchone()
            granted = conn.execute(
                "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = 'warriors_dagster'"
            ).fetchone()
        assert role == (False, False, False)
        assert granted == (0,)
        platform = url_as(fresh_database, "warriors_dagster", password)
        forbidden = (
            "SELECT count(*) FROM event_store",
            "SELECT * FROM api_keys",
            "ALTER TABLE event_store DISABLE TRIGGER ALL",
            "CREATE TABLE public.x (i int)",
        )
        for statement in forbidden:
            with psycopg.connect(platform) as conn, pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
    finally:
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {storage.rsplit('/', 1)[1]} WITH (FORCE)")


@pytest.fixture
def role_urls(fresh_database: str) -> dict[ServiceRole, str]:
    """Each service role with a login (a password of this test's) on the test server."""
    passwords = {role: secrets.token_urlsafe(16) for role in ServiceRole}
    enable_logins(fresh_database, passwords)
    return {role: url_as(fresh_database, role, password) for role, password in passwords.items()}


def test_the_roles_have_timeouts(role_urls: dict[ServiceRole, str]) -> None:
    for role, url in role_urls.items():
        with psycopg.connect(url) as conn:
            statement_timeout = conn.execute("SHOW statement_timeout").fetchone()
            idle_timeout = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        assert statement_timeout is not None
        assert idle_timeout is not None
        assert statement_timeout[0] != "0", role
        assert idle_timeout[0] != "0", role


def test_the_platform_runs_as_its_roles(fresh_database: str, role_urls: dict[ServiceRole, str]) -> None:
    """Writes, projection, reads, a blue/green rebuild and a statistics refresh, each
    process logged in as its own role; after the rebuild the API still reads the swapped-in
    table (its grants were copied)."""
    api_url, projector_url = role_urls[ServiceRole.API], role_urls[ServiceRole.PROJECTOR]
    service = ServiceProcess(api_url, free_port(), with_key=False)
    projector = ProjectorProcess(projector_url)
    try:
        with httpx.Client(
            base_url=service.base_url, headers=auth_headers(fresh_database, Role.WRITER), timeout=10
        ) as client:
            name = f"Role {uuid4().hex[:8]}"
            created = client.post(COMMANDS, json={"name": name, "dob": "1990-01-01"})
            assert created.status_code == 202, created.text
            warrior = created.json()["id"]
            assert (
                client.put(f"{COMMANDS}/{warrior}/skills", json={"fight_skills": ["Judo"]}).status_code == 202
            )

            def found() -> bool:
                answer = client.get(QUERIES, params={"term": name})
                assert answer.status_code == 200, answer.text
                return [w["id"] for w in answer.json()] == [warrior]

            wait_for(found, timeout=30, what="the projector (as warriors_projector) to apply the events")
            projector.stop()

            report = asyncio.run(rebuild_and_refresh(projector_url))
            assert report.events >= 2
            fresh = client.get(QUERIES, params={"term": name, "position": created.json()["position"]})
            assert fresh.status_code == 200, "the API reads the rebuilt table: " + fresh.text
            assert [w["id"] for w in fresh.json()] == [warrior]
            count = client.get(f"{QUERIES}/count")
            assert count.status_code == 200
            assert count.json()["count"] >= 1
            statistics = client.get("/api/v1/queries/statistics")
            assert statistics.status_code == 200
            assert statistics.json()["daily"]
    finally:
        projector.stop()
        service.stop()


async def rebuild_and_refresh(projector_url: str) -> RebuildReport:
    """A blue/green rebuild of the read model and a statistics refresh, as the projector."""
    async with AsyncConnectionPool(
        projector_url, min_size=1, max_size=4, kwargs={"autocommit": True}
    ) as pool:
        report = await rebuild_blue_green(pool, WarriorsReadModel())
        async with pool.connection() as conn:
            assert await refresh_statistics_view(conn) >= 1
    return report


def test_db_roles_gives_the_roles_their_logins(fresh_database: str) -> None:
    """`warriors db-roles` (compose's `migrate`) sets the passwords from the environment,
    prints none of them, and refuses to run without them."""
    env = {**os.environ, "DATABASE_URL": fresh_database}
    command = [sys.executable, "-m", "warriors.cli", "db-roles"]
    missing = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert "API_DB_PASSWORD and PROJECTOR_DB_PASSWORD" in missing.stderr
    passwords = {role: secrets.token_urlsafe(16) for role in ServiceRole}
    env |= {
        "API_DB_PASSWORD": passwords[ServiceRole.API],
        "PROJECTOR_DB_PASSWORD": passwords[ServiceRole.PROJECTOR],
    }
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for role, password in passwords.items():
        assert password not in done.stdout + done.stderr
        with psycopg.connect(url_as(fresh_database, role, password)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role.value,)
