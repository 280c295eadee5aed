"""`make run`'s command, end to end: embedded PostgreSQL, migrations, the HTTP entry point,
the Dagster webserver (with this project's code location) and daemon, a clean stop on
Ctrl-C, and data that survives a restart."""

import os
import signal
import stat
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import psycopg

from tests.dagster_stack import code_location_loaded
from tests.support import ROOT, wait_for
from warriors.servers import free_port
from warriors.servers.embedded_postgres import EmbeddedPostgres


def start_platform(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "warriors.cli", "run"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def projector_pid(root: int) -> int | None:
    """The live projector's Python process under `warriors run` (not its `sh -c`)."""
    found = [
        p
        for p in descendants(root)
        if command_line(p).startswith(f"{sys.executable} -m warriors.cli project")
    ]
    return found[0] if len(found) == 1 else None


def kill_projector(root: int) -> int:
    """SIGKILL the projector; the new projector's pid, once the supervisor restarted it."""
    killed = wait_for(lambda: projector_pid(root), what="the projector")
    os.kill(killed, signal.SIGKILL)
    return wait_for(lambda: (p := projector_pid(root)) != killed and p, timeout=30, what="its restart")


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone meanwhile
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


DAGSTER_OWNER = (
    "SELECT pg_get_userbyid(d.datdba), r.rolsuper FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba"
    " WHERE d.datname = 'dagster'"
)
SESSION_ROLES = (
    "SELECT DISTINCT a.usename, r.rolsuper, r.rolcreaterole, r.rolcreatedb FROM pg_stat_activity a"
    " JOIN pg_roles r ON r.rolname = a.usename WHERE a.backend_type = 'client backend'"
    " AND a.pid <> pg_backend_pid()"
)
DAGSTER_USERS = "SELECT usename FROM pg_stat_activity WHERE datname = 'dagster' AND pid <> pg_backend_pid()"
CONNECTED_USERS = (
    "SELECT usename FROM pg_stat_activity WHERE datname = 'warriors' AND pid <> pg_backend_pid()"
)


def caught_up(base: str, auth: dict[str, str]) -> bool:
    projections = httpx.get(f"{base}/api/v1/queries/projections", headers=auth)
    return bool(projections.json()[0]["lag_events"] == 0)


def stop_with_ctrl_c(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=60)


def test_run_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    pg_port, http_port, dagster_port = free_port(), free_port(), free_port()
    # Without PERSONAL_DATA_KEY: make run keeps its own master key with the data.
    unset = ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "PERSONAL_DATA_KEY")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env |= {"DATA_DIR": str(tmp_path / "data"), "EMBEDDED_PG_PORT": str(pg_port),
            "HTTP_PORT": str(http_port), "HTTP_WORKERS": "1", "DAGSTER_PORT": str(dagster_port)}  # fmt: skip
    log = tmp_path / "run.log"
    key_file = tmp_path / "data" / "api-key"
    keys: set[str] = set()
    base = f"http://127.0.0.1:{http_port}"
    embedded = EmbeddedPostgres(tmp_path / "data" / "postgres", pg_port)
    created: list[str] = []
    process: subprocess.Popen[bytes] | None = None
    try:
        for round_ in range(2):  # the second round proves the data survived the restart
            process = start_platform(env, log)
            wait_for(lambda: httpx.get(f"{base}/health/ready", timeout=1).status_code == 200,
                     timeout=90, what="the platform to be ready")  # fmt: skip
            # The local operator key: made on the first start, kept (mode 0600) and reused.
            key = key_file.read_text().strip()
            secrets = ["superuser-password", "warriors_api-password", "warriors_projector-password",
                       "warriors_dagster-password"]  # fmt: skip
            personal_key = tmp_path / "data" / "personal-data.key"
            stored_secrets = (tmp_path / "data" / "postgres" / name for name in secrets)
            for secret in (key_file, personal_key, *stored_secrets):
                assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
            keys.add(key)
            auth = {"Authorization": f"Bearer {key}"}
            refused = httpx.post(
                f"{base}/api/v1/commands/warriors", json={"name": "No key", "dob": "1990-01-01"}
            )
            assert refused.status_code == 401
            answer = httpx.post(
                f"{base}/api/v1/commands/warriors", json={"name": f"Run {round_}", "dob": "1990-01-01"},
                headers=auth,
            )  # fmt: skip
            assert answer.status_code == 202
            assert answer.headers["location"].startswith("/api/v1/queries/warriors/")
            created.append(answer.json()["id"])
            read = httpx.get(base + answer.headers["location"])  # the query service is routed too
            assert read.status_code == 200
            assert read.json()["name"] == f"Run {round_}"
            # The first start's warrior opens with the master key kept with the data.
            first = httpx.get(f"{base}/api/v1/queries/warriors/{created[0]}/history").json()
            assert first[0]["data"]["name"] == "Run 0"
            wait_for(partial(caught_up, base, auth), timeout=30, what="the live projector to catch up")
            wait_for(
                lambda: code_location_loaded(f"http://127.0.0.1:{dagster_port}"),
                timeout=120,
                what="the Dagster UI",
            )
            # The services log in as their least-privileged roles, not as the superuser.
            with psycopg.connect(embedded.url()) as conn:
                users = {row[0] for row in conn.execute(CONNECTED_USERS)}
            assert {"warriors_api", "warriors_projector"} <= users, users
            assert "postgres" not in users, users
            # Dagster's storage belongs to a role of its own, which Dagster logs in as; no
            # process the platform started holds the superuser's password (issue 26).
            with psycopg.connect(embedded.url()) as conn:
                owner = conn.execute(DAGSTER_OWNER).fetchone()
                dagster_users = {row[0] for row in conn.execute(DAGSTER_USERS)}
                sessions = conn.execute(SESSION_ROLES).fetchall()
            # Every session the platform holds, in any database, is a role without a
            # superuser's, CREATEROLE's or CREATEDB's power.
            assert sessions, "no session of the platform's"
            assert [row for row in sessions if any(row[1:])] == [], sessions
            assert owner == ("warriors_dagster", False), owner
            assert dagster_users <= {"warriors_dagster"}, dagster_users
            superuser = (tmp_path / "data" / "postgres" / "superuser-password").read_text().strip()
            environments = {pid: environment(pid) for pid in descendants(process.pid)}
            assert not [pid for pid, env in environments.items() if superuser in " ".join(env.values())]
            storage = {url for env in environments.values() if (url := env.get("DAGSTER_POSTGRES_URL"))}
            assert storage
            assert all(url.startswith("postgresql+psycopg2://warriors_dagster:") for url in storage), storage
            if round_ == 0:  # a killed projector is restarted; the platform stays up
                restarted = kill_projector(process.pid)
                assert httpx.get(f"{base}/health/live").status_code == 200
                again = httpx.post(
                    f"{base}/api/v1/commands/warriors", json={"name": "After", "dob": "1990-01-01"},
                    headers=auth,
                )  # fmt: skip
                assert again.status_code == 202
                created.append(again.json()["id"])
                wait_for(
                    partial(caught_up, base, auth), timeout=30, what="the restarted projector to catch up"
                )
                assert restarted in descendants(process.pid)
            # The webserver and the daemon share the one code server warriors run supervises:
            # neither spawned its own.
            code_servers = [
                p
                for p in descendants(process.pid)
                if command_line(p).startswith(f"{sys.executable} -m dagster api grpc")
            ]
            assert len(code_servers) == 1, [command_line(p) for p in code_servers]
            assert stop_with_ctrl_c(process) == 0
            assert not embedded.running(), "Ctrl-C must stop the embedded PostgreSQL too"
        output = log.read_text()
        assert len(keys) == 1, "the second start reuses the first start's key"
        assert f"API key (operator) created in {key_file} (mode 0600)" in output
        assert f"personal data master key created in {tmp_path / 'data' / 'personal-data.key'}" in output
        assert output.count("personal data master key created") == 1, "made once, then reused"
        assert keys.pop() not in output, "the key itself is never printed"
        assert "command API  http://127.0.0.1" in output
        assert "READ_AUTH=open, a development default" in output  # compose and Kubernetes require keys
        assert "live projector listening" in output
        assert f"Dagster UI   http://127.0.0.1:{dagster_port}" in output
        assert "dagster-daemon" in output
        assert "stopped" in output
        assert "projector exited unexpectedly (exit code" in output
        assert "restarting in 1.0s (restart 1 of at most 5" in output
        embedded.start()
        with psycopg.connect(embedded.url()) as conn:
            stored = [
                row[0] for row in conn.execute("SELECT aggregate_id::text FROM event_store ORDER BY position")
            ]
        assert stored == created
    finally:
        if process is not None and process.poll() is None:  # a failed assertion left it running
            stop_with_ctrl_c(process)
        embedded.destroy()
