"""A development Apache Kafka 4 broker: one KRaft node, broker and controller in one JVM.

The broker comes from Maven Central (`org.apache.kafka:kafka_2.13`, versions in
services/kafka/pom.xml): Maven resolves its runtime classpath once per version of that pom,
with the downloads kept under DATA_DIR/services/ (`maven/` and `kafka/classpath-*.txt`), so
a fresh machine downloads once and later starts run no Maven at all. Needs `java` (17 or
newer) on PATH, and `mvn` the first time.

One data folder per broker holds everything else: `server.properties` (written at each
start), `cluster-id`, the partitions and the KRaft metadata log in `data/` (formatted once,
as a single-node dynamic quorum), `broker.pid`, `broker.log` (log4j2, services/kafka/log4j2.xml)
and `broker.out` (the JVM's own output: what happens before logging starts). It listens on
127.0.0.1 only: a PLAINTEXT port for clients and a CONTROLLER port for KRaft.

    python -m warriors.adapters.kafka_broker start|stop|status [--data-dir D] [--port P]

prints the bootstrap servers on start; the default data folder is DATA_DIR/kafka.
"""

import argparse
import base64
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from warriors.adapters.embedded_postgres import free_port
from warriors.config import PROJECT_ROOT, get_settings

log = logging.getLogger("warriors.kafka")

SERVICE_DIR = PROJECT_ROOT / "services" / "kafka"
POM = SERVICE_DIR / "pom.xml"
LOG4J_CONFIG = SERVICE_DIR / "log4j2.xml"

DEFAULT_PORT = 9092
NODE_ID = 1
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0
_KILL_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.1

JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# A single node: every internal topic has one replica. Topics are created explicitly.
BROKER_SETTINGS = {
    "process.roles": "broker,controller",
    "node.id": str(NODE_ID),
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "num.partitions": "1",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
}


class KafkaBrokerError(RuntimeError):
    pass


class KafkaBroker:
    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int | None = None,
        *,
        cache_dir: Path | None = None,
    ) -> None:
        """`controller_port` None: the one this data folder used last, else a free one.
        `cache_dir`: where Maven's downloads and the classpath go (default DATA_DIR/services)."""
        self.data_dir = data_dir.absolute()
        self.port = port
        self.controller_port = controller_port
        self.cache_dir = (cache_dir or get_settings().data_dir / "services").absolute()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        """Kafka's `log.dirs`: the partitions and the KRaft metadata log."""
        return self.data_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def output_file(self) -> Path:
        return self.data_dir / "broker.out"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def classpath_file(self) -> Path:
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
        return self.cache_dir / "kafka" / f"classpath-{digest}.txt"

    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> str:
        """Start the broker unless it already runs on this data folder; wait until it answers
        a metadata request; returns its bootstrap servers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            pid = self._pid()
            if pid is None:
                java = _require("java", "a Java runtime (17 or newer) is needed to run the Kafka broker")
                classpath = self._classpath()
                if self.controller_port is None:
                    self.controller_port = self._configured_ports()[1] or free_port()
                self._write_config()
                self._format(java, classpath)
                pid = self._launch(java, classpath)
            else:
                self.port, self.controller_port = (
                    self._configured_ports()[0] or self.port,
                    self.controller_port,
                )
            self._wait_ready(pid, time.monotonic() + timeout)
        return self.bootstrap_servers()

    def running(self) -> bool:
        return self._pid() is not None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM (a controlled shutdown), then SIGKILL if it is not over within `timeout`."""
        if not self.data_dir.exists():
            return
        with self._lock():
            pid = self._pid()
            if pid is None:
                return
            log.info("stopping the Kafka broker (pid %d)", pid)
            os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, time.monotonic() + timeout):
                log.warning(
                    "the Kafka broker did not stop within %.0fs: killing it (see %s)", timeout, self.log_file
                )
                os.kill(pid, signal.SIGKILL)
                if not self._wait_exit(pid, time.monotonic() + _KILL_TIMEOUT_SECONDS):
                    raise KafkaBrokerError(f"the Kafka broker (pid {pid}) survived SIGKILL")
            self.pid_file.unlink(missing_ok=True)

    def _classpath(self) -> str:
        """The broker's runtime classpath, resolved by Maven if not yet (downloads once)."""
        cached = self.classpath_file
        if cached.exists():
            classpath = cached.read_text().strip()
            if classpath and all(Path(jar).exists() for jar in classpath.split(os.pathsep)):
                return classpath
        mvn = _require("mvn", "Maven is needed once to download the Kafka broker from Maven Central")
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        log.info(
            "resolving the Kafka broker's classpath with Maven (downloads once, into %s)", self.cache_dir
        )
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM), "dependency:build-classpath", "-Dmdep.includeScope=runtime",
             f"-Dmdep.outputFile={partial}", f"-Dmaven.repo.local={self.cache_dir / 'maven'}"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if result.returncode != 0 or not partial.exists():
            output = (result.stdout + result.stderr).strip()[-3000:]
            raise KafkaBrokerError(f"Maven could not resolve {POM} ({result.returncode}):\n{output}")
        partial.replace(cached)
        return cached.read_text().strip()

    def _write_config(self) -> None:
        settings = {
            **BROKER_SETTINGS,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.log_dir),
        }
        lines = ["# Written by warriors/adapters/kafka_broker.py at each start: edits are lost."]
        lines += [f"{key}={value}" for key, value in settings.items()]
        self.config_file.write_text("\n".join(lines) + "\n")

    def _adopt_configured_ports(self) -> None:
        """Take the ports of the broker already running on this data folder."""
        port, controller_port = self._configured_ports()
        self.port = port or self.port
        self.controller_port = controller_port or self.controller_port

    def _configured_ports(self) -> tuple[int | None, int | None]:
        """The (broker, controller) ports of the last start on this data folder."""
        if not self.config_file.exists():
            return None, None
        text = self.config_file.read_text()
        found = [
            re.search(rf"^listeners=.*{name}://[^,:]+:(\d+)", text, re.M)
            for name in ("PLAINTEXT", "CONTROLLER")
        ]
        broker, controller = (int(match.group(1)) if match else None for match in found)
        return broker, controller

    def _format(self, java: str, classpath: str) -> None:
        """Format the storage once, as a single-node dynamic KRaft quorum (`--standalone`)."""
        if (self.log_dir / "meta.properties").exists():
            return
        cluster_id_file = self.data_dir / "cluster-id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(_random_cluster_id() + "\n")
        cluster_id = cluster_id_file.read_text().strip()
        log.info("formatting the Kafka storage in %s (cluster id %s)", self.log_dir, cluster_id)
        result = subprocess.run(
            [java, *self._java_options(), "-cp", classpath, "kafka.tools.StorageTool", "format",
             "--standalone", "--cluster-id", cluster_id, "--config", str(self.config_file)],
            capture_output=True,
            text=True,
            cwd=self.data_dir,
        )  # fmt: skip
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-3000:]
            raise KafkaBrokerError(
                f"formatting the Kafka storage failed ({result.returncode}), see {self.log_file}:\n{output}"
            )

    def _launch(self, java: str, classpath: str) -> int:
        log.info("starting the Kafka broker on %s (log: %s)", self.bootstrap_servers(), self.log_file)
        with self.output_file.open("ab") as output:
            self._process = subprocess.Popen(
                [
                    java,
                    *JVM_OPTIONS,
                    *self._java_options(),
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(self.config_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # not stopped by a Ctrl-C meant for whoever started it
            )
        self.pid_file.write_text(f"{self._process.pid}\n")
        return self._process.pid

    def _java_options(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", f"-Dkafka.logs.dir={self.data_dir}"]

    def _wait_ready(self, pid: int, deadline: float) -> None:
        """Until the broker answers a metadata request listing itself, or the deadline."""
        admin: AdminClient | None = None
        last_error = "its port does not accept connections"
        while True:
            if not self._alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise KafkaBrokerError(
                    f"the Kafka broker exited while starting; see {self.log_file}{self._output_tail()}"
                )
            if admin is None and _accepts(self.port):
                # librdkafka's own log lines go to Python logging, not straight to stderr.
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers()}, logger=log)
            if admin is not None:
                try:
                    metadata = admin.list_topics(timeout=max(0.5, min(2.0, deadline - time.monotonic())))
                    if NODE_ID in metadata.brokers:
                        return
                    last_error = "the broker is not registered yet"
                except KafkaException as exc:
                    last_error = str(exc)
            if time.monotonic() >= deadline:
                raise KafkaBrokerError(
                    f"the Kafka broker did not answer on {self.bootstrap_servers()} in time ({last_error});"
                    f" see {self.log_file}{self._output_tail()}"
                )
            self._pause(pid)

    def _wait_exit(self, pid: int, deadline: float) -> bool:
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            self._pause(pid)
        return True

    def _pause(self, pid: int) -> None:
        """Wait a moment, returning early if the broker is this process's child and exits."""
        if self._process is not None and self._process.pid == pid:
            with suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=_POLL_SECONDS)
        else:
            time.sleep(_POLL_SECONDS)

    def _alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # exited, not yet reaped

    def _pid(self) -> int | None:
        """The pid of the broker running on this data folder, if one is."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        ours = b"kafka.Kafka" in cmdline and os.fsencode(self.config_file) in cmdline
        return pid if ours and self._alive(pid) else None

    def _output_tail(self) -> str:
        """The JVM's own output if any, and the last error the broker logged with its cause."""
        detail = ""
        if self.output_file.exists() and (output := self.output_file.read_text(errors="replace").strip()):
            detail += f" and {self.output_file}:\n{output[-2000:]}"
        if self.log_file.exists():
            lines = self.log_file.read_text(errors="replace").splitlines()[-500:]
            errors = [i for i, line in enumerate(lines) if "] ERROR " in line or "] FATAL " in line]
            if errors:
                error = lines[errors[-1] : errors[-1] + 100]
                causes = [line for line in error if line.startswith("Caused by:")]
                detail += "\nits last error:\n" + "\n".join(error[:2] + causes[-1:])
        return detail

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One start or stop at a time on a data folder, across processes."""
        with (self.data_dir / "adapter.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def _require(program: str, why: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise KafkaBrokerError(f"`{program}` is not on PATH: {why}")
    return path


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _random_cluster_id() -> str:
    """Like Kafka's Uuid.randomUuid().toString(): 16 random bytes, URL-safe base64 without
    padding, never starting with '-' (the tools would read it as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m warriors.adapters.kafka_broker", description="The development Kafka broker."
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--data-dir", type=Path, help="its data folder (default: DATA_DIR/kafka)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"client port (default {DEFAULT_PORT})"
    )
    parser.add_argument("--controller-port", type=int, help="KRaft port (default: the last one, else free)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    broker = KafkaBroker(args.data_dir or get_settings().data_dir / "kafka", args.port, args.controller_port)
    try:
        if args.command == "start":
            print(broker.start())
        elif args.command == "stop":
            broker.stop()
        elif broker.running():
            broker._adopt_configured_ports()
            print(broker.bootstrap_servers())
        else:
            print("not running", file=sys.stderr)
            return 1
    except KafkaBrokerError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
