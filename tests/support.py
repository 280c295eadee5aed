"""Helpers shared by the tests: waiting on conditions and running the HTTP service."""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import psycopg

from warriors.adapters.search_engine import EngineKind, SearchEngine
from warriors.domain.events import plain_data
from warriors.eventstore.opening import KeyRecord, Keyring
from warriors.readside.vocabulary import Vocabulary, VocabularyListener
from warriors.security.identity import Role, key_subject
from warriors.security.key_store import create_key
from warriors.servers.opensearch_server import OpenSearchServer

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `condition` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # the thing waited on may not be up yet
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


async def until(condition: Callable[[], bool], *, within: float = 30.0, what: str = "condition") -> None:
    """Poll `condition` on the event loop until it holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


class LoggedProcess:
    """A subprocess of the project's, its output in test-output/, stopped politely."""

    def __init__(self, args: list[str], env: dict[str, str], name: str) -> None:
        self.log_path = ROOT / "test-output" / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def auth_headers(database_url: str, role: Role) -> dict[str, str]:
    """Headers carrying a new API key of `role` in the database at `database_url`."""
    _, key = create_key(database_url, role, f"tests ({role})")
    return {"Authorization": f"Bearer {key}"}


class ServiceProcess(LoggedProcess):
    """`uvicorn api.gateway:create_app` in a subprocess, on a real socket."""

    def __init__(
        self,
        database_url: str,
        port: int,
        workers: int = 1,
        env: dict[str, str] | None = None,
        *,
        with_key: bool = True,
    ):
        self.base_url = f"http://127.0.0.1:{port}"
        # What a test sends to be allowed everything: an operator's API key, made in the
        # (migrated) database unless `with_key` is False (a database that is not there).
        self.headers: dict[str, str] = {}
        self.user_id = ""  # what the events it writes record as their user_id
        if with_key:
            record, key = create_key(database_url, Role.OPERATOR, "tests")
            self.headers, self.user_id = {"Authorization": f"Bearer {key}"}, key_subject(str(record.id))
        super().__init__(
            ["-m", "uvicorn", "api.gateway:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers), "--no-access-log"],
            {"DATABASE_URL": database_url, **(env or {})},
            f"service-{port}",
        )  # fmt: skip
        wait_for(self._live, timeout=60, what=f"the service on {self.base_url}")

    def _live(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"service exited; see {self.log_path}")
        return httpx.get(f"{self.base_url}/health/live", timeout=1).status_code == 200


class ProjectorProcess(LoggedProcess):
    """`warriors project` (the live projector) in a subprocess."""

    def __init__(self, database_url: str, env: dict[str, str] | None = None, name: str = "projector"):
        super().__init__(
            ["-m", "warriors.cli", "project"], {"DATABASE_URL": database_url, **(env or {})}, name
        )


@asynccontextmanager
async def fresh_search_engine(server: OpenSearchServer) -> AsyncIterator[SearchEngine]:
    """A client of `server`, with no warriors index left from other tests."""
    server.start()  # a test may have stopped it
    # A generous budget: a test of the engine's answers must get them, not PostgreSQL's
    # fallback, on a busy machine.
    engine = SearchEngine(server.url(), EngineKind.OPENSEARCH, query_timeout_ms=10_000)
    try:
        for index in await engine.generations():
            await engine.delete_index(index)
        yield engine
    finally:
        await engine.close()


def opened_events(postgres: str, warrior_id: str) -> list[tuple[str, int, dict[str, Any], dict[str, Any]]]:
    """The warrior's stored events, (event type, version, data, metadata), their data
    opened with the warrior's key and shown as the API's history shows it (personal
    fields at the top level): what was stored, whatever the schema version."""
    with psycopg.connect(postgres) as conn:
        rows = conn.execute(
            "SELECT event_type, event_version, schema_version, event_data, metadata FROM event_store"
            " WHERE aggregate_id = %s ORDER BY event_version",
            (warrior_id,),
        ).fetchall()
        key = conn.execute(
            "SELECT wrapped_key, master_key_id FROM warrior_keys WHERE warrior_id = %s", (warrior_id,)
        ).fetchone()
    aggregate_id = UUID(warrior_id)
    records = {aggregate_id: KeyRecord(bytes(key[0]) if key[0] else None, key[1])} if key else {}
    keyring = Keyring(records)
    return [
        (
            event_type,
            version,
            plain_data(event_type, keyring.open_data(aggregate_id, event_type, schema, data)),
            meta,
        )
        for event_type, version, schema, data, meta in rows
    ]


@asynccontextmanager
async def listening_vocabulary(database_url: str) -> AsyncIterator[Vocabulary]:
    """An HTTP worker's search vocabulary, loaded from `database_url` and kept by LISTEN."""
    listener = VocabularyListener(database_url, Vocabulary())
    listener.start()
    try:
        await until(lambda: listener.vocabulary.ready, what="the vocabulary loaded")
        yield listener.vocabulary
    finally:
        await listener.stop()
