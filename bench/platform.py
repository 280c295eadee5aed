"""The platform as `make run` serves it, for the benchmarks that measure it as deployed:
`warriors run` on free ports in a data folder of its own, optionally with Kafka,
OpenSearch and Redis of its own, and the CPU its processes use, read from /proc."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx

from bench.tools import READS_OPEN, ROOT
from warriors.servers import free_port
from warriors.servers.embedded_postgres import EmbeddedPostgres
from warriors.servers.kafka_broker import KafkaBroker
from warriors.servers.opensearch_server import OpenSearchServer
from warriors.servers.redis_server import RedisServer

# The variables that switch services on: empty unless asked for, so a developer's
# .env.services (read from the working folder; the environment wins over it) changes nothing.
SERVICE_VARIABLES = ["KAFKA_BOOTSTRAP_SERVERS", "SEARCH_URL", "REDIS_URL"]


class Platform:
    """`warriors run` in its own process group, its output in `log`. On start it makes
    an operator key in `key_file` (mode 0600), which the benchmarks' writes carry."""

    def __init__(self, data_dir: Path, env: dict[str, str], log: Path) -> None:
        self.data_dir = data_dir
        self.key_file = data_dir / "api-key"
        self.http_port, self.dagster_port, self.pg_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "warriors"), "run"],
            cwd=ROOT,
            env={
                **os.environ,
                "DATABASE_URL": "",  # the embedded server, as make run without DATABASE_URL
                **dict.fromkeys(SERVICE_VARIABLES, ""),
                **READS_OPEN,
                **env,
                "DATA_DIR": str(data_dir),
                # In the run's own folder: a developer's API_KEY_FILE would otherwise be
                # replaced by this throwaway database's key.
                "API_KEY_FILE": str(self.key_file),
                "HTTP_PORT": str(self.http_port),
                "DAGSTER_PORT": str(self.dagster_port),
                "EMBEDDED_PG_PORT": str(self.pg_port),
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def postgres(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.data_dir / "postgres", self.pg_port)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"warriors run exited ({self.process.returncode}); see {self.log}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)  # polling the platform's readiness, bounded by the deadline
        sys.exit(f"warriors run was not ready within {timeout:.0f}s; see {self.log}")

    def api_key(self) -> str:
        """The operator key `warriors run` made on start (ready: the file is written
        before the HTTP workers start). A secret: never print it."""
        return self.key_file.read_text().strip()

    def pids(self) -> list[int]:
        """The roots of its process trees: `warriors run` and the postmaster."""
        return [self.process.pid, *read_pids([self.postgres.pgdata / "postmaster.pid"])]

    def stop(self) -> None:
        """Ctrl-C to the process group (honcho stops the processes, then PostgreSQL), then
        harder if it does not end; the embedded server is stopped in any case."""
        for signum, wait in ((signal.SIGINT, 90), (signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()
        if (self.postgres.pgdata / "PG_VERSION").exists():
            self.postgres.stop("immediate")


class _Stoppable(Protocol):
    def stop(self) -> None: ...


def tear_down(platform: "Platform | None", *servers: _Stoppable | None, workdir: Path) -> None:
    """Stop the platform (Ctrl-C to its process group, as a developer would), then the
    servers started for it, and remove the run's folder."""
    if platform is not None:
        print("\nstopping warriors run ...", flush=True)
        platform.stop()
    for server in servers:
        if server is not None:
            server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


class Services:
    """Kafka, OpenSearch and Redis of this run's own, on free ports (as make services)."""

    def __init__(self, root: Path) -> None:
        self.kafka = KafkaBroker(root / "kafka", free_port())
        self.search = OpenSearchServer(root / "opensearch", free_port())
        self.redis = RedisServer(root / "redis", free_port())
        self.started: list[Callable[[], None]] = []

    def start(self) -> dict[str, str]:
        env = {"SEARCH_ENGINE": "opensearch"}
        for name, variable, start, stop in (
            ("Kafka", "KAFKA_BOOTSTRAP_SERVERS", self.kafka.start, self.kafka.stop),
            ("OpenSearch", "SEARCH_URL", self.search.start, self.search.stop),
            ("Redis", "REDIS_URL", self.redis.start, self.redis.stop),
        ):
            print(f"starting {name} ...", flush=True)
            self.started.append(stop)
            env[variable] = start()
        return env

    def pid_files(self) -> list[Path]:
        return [self.kafka.pid_file, self.search.pid_file, self.redis.pid_file]

    def stop(self) -> None:
        for stop in reversed(self.started):
            try:
                stop()
            except Exception as error:  # stop the others whatever happened to this one
                print(f"stopping a service failed: {error}", file=sys.stderr)


# CPU use from /proc: utime + stime of every live process of the trees, plus what they
# collected from children they waited for (cutime + cstime).
def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state ppid ... utime(12th) stime cutime cstime
        found[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / ticks)
    return found


def tree_cpu(roots: list[int]) -> float:
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = [pid for pid in roots if pid in processes]
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(children.get(pid, []))
    return sum(processes[pid][1] for pid in seen)


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def read_pids(files: list[Path]) -> list[int]:
    """The first number in each file that has one (pid files: the process may be gone)."""
    pids = []
    for path in files:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int(path.read_text().split()[0]))
    return pids


# What each process of `warriors run` is, from its command line: the first of these
# found in its own or its nearest ancestor's command line names its group.
_GROUP_MARKS = [
    ("http", ("uvicorn", "granian")),
    ("projector", ("warriors.cli project",)),
    ("relay", ("warriors.cli relay",)),
    ("dagster", ("dagster",)),
]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_groups(roots: list[int], others: dict[str, list[int]] | None = None) -> dict[str, list[int]]:
    """The processes of `roots`' trees by group: http (with http-worker: its processes
    that have no child, the ones serving requests), projector, relay, dagster, postgres (the
    postmaster's tree, the second root) and supervisor (the rest: warriors run, honcho);
    `others` names more trees (the Redis server: {"redis": [its pid]})."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    groups: dict[str, list[int]] = {}
    stack = [(pid, "postgres" if i > 0 else "supervisor") for i, pid in enumerate(roots) if pid in processes]
    stack += [(pid, group) for group, pids in (others or {}).items() for pid in pids if pid in processes]
    while stack:
        pid, inherited = stack.pop()
        group = inherited
        if inherited == "supervisor":
            command = _cmdline(pid)
            group = next((g for g, marks in _GROUP_MARKS if any(m in command for m in marks)), inherited)
        groups.setdefault(group, []).append(pid)
        stack.extend((child, group) for child in children.get(pid, []))
    groups["http-worker"] = sorted(
        pid
        for pid in groups.get("http", [])
        if pid not in children and "resource_tracker" not in _cmdline(pid)
    )
    return groups


def python_processes(pids: list[int]) -> list[int]:
    """The ones that are not the `sh -c` honcho starts each process through."""
    return [pid for pid in pids if not _cmdline(pid).startswith("/bin/sh ")]


def cpu_by_group(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group's processes (live ones, and the children
    they have reaped)."""
    processes = _processes()
    return {
        group: sum(processes[pid][1] for pid in pids if pid in processes)
        for group, pids in groups.items()
        if group != "http-worker"
    }
