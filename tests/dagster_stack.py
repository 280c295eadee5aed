"""The real Dagster webserver and daemon sharing one code server (as `warriors run` runs
them), with PostgreSQL storage, for the tests that drive Dagster through its GraphQL API
and the browser."""

import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from dagster_graphql import DagsterGraphQLClient

from orchestration.instance import (
    code_server_args,
    code_server_workspace,
    create_storage,
    ensure_database,
    prepare_home,
    storage_url,
)
from tests.support import LoggedProcess, wait_for
from warriors.servers import free_port

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class DagsterStack:
    port: int
    webserver: LoggedProcess
    daemon: LoggedProcess
    code_server: LoggedProcess

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.base_url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    def wait_for_run(self, run_id: str, timeout: float = 300) -> str:
        """The run's final status; the daemon dequeues it, a run worker executes it."""
        status = wait_for(
            lambda: (s := self.client.get_run_status(run_id).value) in FINISHED and s,
            timeout=timeout,
            what=f"run {run_id} to finish (logs: {self.webserver.log_path}, {self.daemon.log_path})",
        )
        return str(status)

    def stop(self) -> None:
        self.daemon.stop()
        self.webserver.stop()
        self.code_server.stop()


def start_dagster(database_url: str, home: Path) -> DagsterStack:
    storage = storage_url(database_url, f"dagster_{uuid.uuid4().hex[:8]}")
    ensure_database(storage)
    env = {
        "DATABASE_URL": database_url,
        "DAGSTER_HOME": str(prepare_home(home)),
        "DAGSTER_POSTGRES_URL": storage,
    }
    create_storage(env)
    port = free_port()
    # As `warriors run` does: one code server, shared by the webserver and the daemon.
    socket = Path(tempfile.mkdtemp(prefix="dagster-code-")) / "code.sock"
    workspace = str(code_server_workspace(home, socket))
    code_server = LoggedProcess(code_server_args(socket), env, "dagster-code")
    try:
        wait_for(lambda: _code_server_listening(code_server, socket), timeout=120, what="the code server")
    except BaseException:
        code_server.stop()
        raise
    webserver = LoggedProcess(
        ["-m", "dagster_webserver", "-w", workspace, "-h", "127.0.0.1", "-p", str(port)], env, "dagster-web"
    )
    # dagster-daemon has no `python -m` form: its console script is run with this Python.
    daemon_script = str(Path(sys.executable).parent / "dagster-daemon")
    daemon = LoggedProcess([daemon_script, "run", "-w", workspace], env, "dagster-daemon")
    stack = DagsterStack(port, webserver, daemon, code_server)
    try:
        wait_for(lambda: _location_loaded(stack), timeout=120, what=f"Dagster on {stack.base_url}")
        wait_for(lambda: _daemon_alive(stack), timeout=120, what="the Dagster daemon's heartbeat")
    except BaseException:
        stack.stop()
        raise
    return stack


def _code_server_listening(code_server: LoggedProcess, socket: Path) -> bool:
    if code_server.process.poll() is not None:
        raise RuntimeError(f"the Dagster code server exited; see {code_server.log_path}")
    return socket.is_socket()


def _location_loaded(stack: DagsterStack) -> bool:
    if stack.webserver.process.poll() is not None:
        raise RuntimeError(f"dagster-webserver exited; see {stack.webserver.log_path}")
    return code_location_loaded(stack.base_url)


def code_location_loaded(base_url: str) -> bool:
    """The webserver at `base_url` answers and has loaded the `warriors` code location."""
    query = (
        "{ workspaceOrError { ... on Workspace { locationEntries {"
        " name locationOrLoadError { __typename } } } } }"
    )
    body = httpx.post(f"{base_url}/graphql", json={"query": query}, timeout=5).json()
    entries = body["data"]["workspaceOrError"]["locationEntries"]
    return [(e["name"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
        ("warriors", "RepositoryLocation")
    ]


def _daemon_alive(stack: DagsterStack) -> bool:
    if stack.daemon.process.poll() is not None:
        raise RuntimeError(f"dagster-daemon exited; see {stack.daemon.log_path}")
    data = stack.graphql("{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }")
    statuses = {d["daemonType"]: d["healthy"] for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]}
    return bool(statuses.get("QUEUED_RUN_COORDINATOR") and statuses.get("BACKFILL"))


def launch(stack: DagsterStack, job: str, run_config: dict[str, Any] | None = None) -> str:
    started = time.monotonic()
    run_id = stack.client.submit_job_execution(job, run_config=run_config or {})
    assert run_id, f"no run id after {time.monotonic() - started:.1f}s"
    return run_id
