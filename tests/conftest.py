"""Real PostgreSQL for the suite: an embedded server started here (pip-installed binaries),
or the server named by TEST_DATABASE_URL. Nothing is skipped for a missing service."""

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import dagster as dg
import psycopg
import pytest
import redis
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tests import fuzz_seed
from tests.support import ProjectorProcess, ServiceProcess, fresh_search_engine
from warriors.adapters.search_engine import SearchEngine
from warriors.eventstore.database import apply_migrations
from warriors.security.personal_data import new_master_key_text
from warriors.servers import LocalServer, free_port
from warriors.servers.embedded_postgres import EmbeddedPostgres
from warriors.servers.kafka_broker import KafkaBroker
from warriors.servers.opensearch_server import OpenSearchServer
from warriors.servers.redis_server import RedisServer


def pytest_report_header() -> str:
    """The fuzzing seed in every run's header (CI logs included)."""
    return fuzz_seed.header()


# The services a developer started with `make services` (.env.services) are not the
# tests': each test that uses one passes its URL explicitly.
for _variable in ("REDIS_URL", "SEARCH_URL", "KAFKA_BOOTSTRAP_SERVERS"):
    os.environ[_variable] = ""
# The daily statistics' Parquet files of the tests go to a folder of their own, not .data.
os.environ["ANALYTICS_DIR"] = tempfile.mkdtemp(prefix="warriors-test-analytics-")
# One personal data master key for the whole run (in-process code and every service the
# tests start inherit it); tests/test_erasure.py starts a service without it too.
os.environ["PERSONAL_DATA_KEY"] = new_master_key_text()
os.environ.pop("PERSONAL_DATA_KEY_FILE", None)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """URL of a server database with every migration applied."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        apply_migrations(url)
        yield url
        return
    # Not under pytest's temporary root: each pytest session resets that folder to mode
    # 0700, which would lock out the server's own user (it runs as `warriors-pg` when the
    # tests run as root) if another session starts meanwhile.
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="warriors-test-pg-")), free_port())
    url = server.start()
    apply_migrations(url)
    try:
        yield url
    finally:
        server.destroy()


@contextmanager
def database_of_its_own(postgres: str) -> Iterator[str]:
    """A new, migrated database on the session's server, dropped on the way out."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin_url = postgres.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = postgres.rsplit("/", 1)[0] + f"/{name}"
    apply_migrations(url)
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def fresh_database(postgres: str) -> Iterator[str]:
    """A new, migrated database of its own (for tests that read the whole stream)."""
    with database_of_its_own(postgres) as url:
        yield url


@pytest.fixture
async def fresh_pool(fresh_database: str) -> AsyncIterator[AsyncConnectionPool[AsyncConnection]]:
    """An autocommit pool on a database of its own (for raw events no projection should see)."""
    async with AsyncConnectionPool(
        fresh_database, min_size=1, max_size=8, kwargs={"autocommit": True}
    ) as pool:
        yield pool


@pytest.fixture(scope="session")
def service(postgres: str) -> Iterator[ServiceProcess]:
    """The HTTP entry point on a real socket, against the session's database."""
    process = ServiceProcess(postgres, free_port(), workers=2)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def projector(postgres: str) -> Iterator[ProjectorProcess]:
    """The live projector keeping the session database's read models up to date."""
    process = ProjectorProcess(postgres)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real Redis (Debian's redis-server, which make test installs) on a free port."""
    yield from _running(RedisServer(_folder("redis"), free_port()))


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.start()  # a test may have stopped it
    with redis.Redis.from_url(redis_server.url()) as client:
        client.flushall()
    return redis_server.url()


@pytest.fixture(scope="session")
def opensearch() -> Iterator[OpenSearchServer]:
    """A real OpenSearch 2.19 node (one JVM, from Maven Central) on a free port."""
    yield from _running(OpenSearchServer(_folder("os"), free_port()))


@pytest.fixture
async def search_engine(opensearch: OpenSearchServer) -> AsyncIterator[SearchEngine]:
    async with fresh_search_engine(opensearch) as engine:
        yield engine


@pytest.fixture
def broker() -> Iterator[KafkaBroker]:
    """A real Kafka 4 broker (KRaft, one node, from Maven Central) of this test's own."""
    yield from _running(KafkaBroker(_folder("kafka"), free_port()))


ServerT = TypeVar("ServerT", bound=LocalServer)


def _folder(kind: str) -> Path:
    """Not under pytest's temporary root: another pytest session resets that to 0700, which
    would lock out a server running as its own user."""
    return Path(tempfile.mkdtemp(prefix=f"warriors-test-{kind}-"))


def _running(server: ServerT) -> Iterator[ServerT]:
    """Start `server`, hand it to the test, then stop it and remove its folder."""
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """An ephemeral Dagster instance for in-process runs."""
    with dg.instance_for_test() as test_instance:
        yield test_instance
