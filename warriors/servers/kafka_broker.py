"""A development Apache Kafka 4 broker: a KRaft node, broker and controller in one JVM. On
its own by default (a single-node quorum); a node of a cluster with `node_id`, `voters`
and `cluster_id` (warriors/servers/cluster.py builds one).

The broker comes from Maven Central (`org.apache.kafka:kafka_2.13`, versions in
services/kafka/pom.xml): Maven resolves its runtime classpath once per version of that pom,
with the downloads kept under DATA_DIR/services/ (`maven/` and `kafka/classpath-*.txt`), so
a fresh machine downloads once and later starts run no Maven at all. Needs `java` (17 or
newer) on PATH, and `mvn` the first time.

One data folder per broker holds everything else: `server.properties` (written at each
start), `cluster-id`, the partitions and the KRaft metadata log in `data/` (formatted once:
as a single-node dynamic quorum, or with the cluster's id), `broker.pid`, `broker.log`
(log4j2, services/kafka/log4j2.xml) and `broker.out` (the JVM's own output: what happens
before logging starts). It listens on
127.0.0.1 only: a PLAINTEXT port for clients and a CONTROLLER port for KRaft.

    python -m warriors.servers.kafka_broker start|stop|status [--data-dir D] [--port P]

prints the bootstrap servers on start; the default data folder is DATA_DIR/kafka.
"""

import argparse
import base64
import hashlib
import logging
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from warriors.config import PROJECT_ROOT, get_settings
from warriors.servers.base import (
    LocalServer,
    ServerError,
    accepts_connections,
    alive,
    command_line_has,
    folder_lock,
    free_port,
    read_pid,
    spawn,
    terminate,
)
from warriors.servers.jvm import cached_jars, jdk_tool, resolve_classpath

log = logging.getLogger("warriors.kafka")

SERVICE_DIR = PROJECT_ROOT / "services" / "kafka"
POM = SERVICE_DIR / "pom.xml"
LOG4J_CONFIG = SERVICE_DIR / "log4j2.xml"

DEFAULT_PORT = 9092
NODE_ID = 1
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0
_KILL_TIMEOUT_SECONDS = 10.0

DEFAULT_HEAP_MB = 512
JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# Every node is a broker and a KRaft controller in one JVM. Topics are created explicitly.
BROKER_SETTINGS = {
    "process.roles": "broker,controller",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
}


def replication_settings(replication: int, min_insync_replicas: int) -> dict[str, str]:
    """The replicas of the internal topics (consumer offsets, transactions, share groups)
    and the default of the others; `min.insync.replicas`: how many of them must have a
    record before an `acks=all` producer is told it is written. One node: 1 and 1."""
    if not 1 <= min_insync_replicas <= replication:
        raise ValueError(f"min.insync.replicas {min_insync_replicas} with replication {replication}")
    factor, isr = str(replication), str(min_insync_replicas)
    return {
        "default.replication.factor": factor,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": factor,
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": factor,
        "share.coordinator.state.topic.min.isr": isr,
    }


class KafkaBrokerError(ServerError):
    pass


class KafkaBroker(LocalServer):
    display_name = "the Kafka broker"
    error = KafkaBrokerError

    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int | None = None,
        *,
        cache_dir: Path | None = None,
        node_id: int = NODE_ID,
        voters: Mapping[int, int] | None = None,
        cluster_id: str | None = None,
        replication: int = 1,
        min_insync_replicas: int = 1,
        heap_mb: int = DEFAULT_HEAP_MB,
    ) -> None:
        """One node of its own by default (a single-node dynamic KRaft quorum).

        `controller_port` None: the one this data folder used last, else a free one.
        `cache_dir`: where Maven's downloads and the classpath go (default DATA_DIR/services).
        A node of a cluster (KafkaCluster): its `node_id`, the static controller quorum
        `voters` (node id -> controller port on 127.0.0.1, this node's among them), the
        `cluster_id` every node is formatted with, the `replication` and
        `min_insync_replicas` of the internal topics (replication_settings).
        `heap_mb`: the JVM's largest heap."""
        self.data_dir = data_dir.absolute()
        self.port = port
        self.node_id = node_id
        self.voters = dict(voters) if voters is not None else None
        if self.voters is not None:
            if node_id not in self.voters:
                raise ValueError(f"node {node_id} is not among the voters {sorted(self.voters)}")
            controller_port = self.voters[node_id]
        self.controller_port = controller_port
        self.cluster_id = cluster_id
        self.replication = replication
        self.min_insync_replicas = min_insync_replicas
        replication_settings(replication, min_insync_replicas)  # checked now, not at start
        self.heap_mb = heap_mb
        self.cache_dir = (cache_dir or get_settings().data_dir / "services").absolute()
        self._admin: AdminClient | None = None

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
        with folder_lock(self._lock_file()):
            pid = self._launch_unless_running()
            self._wait_started(pid, time.monotonic() + timeout)
        return self.bootstrap_servers()

    def launch(self) -> int:
        """Start the broker unless it runs, without waiting for it (a node of a cluster
        cannot get ready before a majority of the controllers runs); its pid. Then
        `wait_started`."""
        with folder_lock(self._lock_file()):
            return self._launch_unless_running()

    def wait_started(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Until the launched broker answers a metadata request listing itself."""
        with folder_lock(self._lock_file()):
            pid = self._pid()
            if pid is None:
                raise KafkaBrokerError(
                    f"the Kafka broker is not running; see {self.log_file}{self.failure_detail()}"
                )
            self._wait_started(pid, time.monotonic() + timeout)

    def _lock_file(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir / "server.lock"

    def _launch_unless_running(self) -> int:
        pid = self._pid()
        if pid is not None:
            self.port = self._configured_ports()[0] or self.port
            return pid
        java = jdk_tool("java", "a Java runtime (17 or newer) runs the Kafka broker", KafkaBrokerError)
        classpath = self._classpath()
        if self.controller_port is None:
            self.controller_port = self._configured_ports()[1] or free_port()
        self._write_config()
        self._format(java, classpath)
        return self._launch(java, classpath)

    def _wait_started(self, pid: int, deadline: float) -> None:
        try:
            self.wait_ready(deadline, pid)
        finally:
            self._close_admin()
            if not alive(pid):
                self.pid_file.unlink(missing_ok=True)

    def running(self) -> bool:
        return self._pid() is not None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM (a controlled shutdown), then SIGKILL if it is not over within `timeout`."""
        if not self.data_dir.exists():
            return
        with folder_lock(self._lock_file()):
            pid = self._pid()
            if pid is None:
                return
            log.info("stopping the Kafka broker (pid %d)", pid)
            terminate(
                pid,
                name=self.display_name,
                timeout=timeout,
                kill_timeout=_KILL_TIMEOUT_SECONDS,
                error=KafkaBrokerError,
                log_file=self.log_file,
            )
            self.pid_file.unlink(missing_ok=True)

    def probe(self, deadline: float) -> str | None:
        """Ready once the broker answers a metadata request listing itself."""
        if self._admin is None:
            if not accepts_connections(self.port):
                return "its port does not accept connections"
            # librdkafka's own log lines go to Python logging, not straight to stderr.
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap_servers()}, logger=log)
        try:
            metadata = self._admin.list_topics(timeout=max(0.5, min(2.0, deadline - time.monotonic())))
        except KafkaException as exc:
            return str(exc)
        return None if self.node_id in metadata.brokers else "the broker is not registered yet"

    def _close_admin(self) -> None:
        self._admin = None  # librdkafka's handle closes when collected

    def _classpath(self) -> str:
        """The broker's runtime classpath, resolved by Maven if not yet (downloads once)."""
        cached = self.classpath_file
        if (classpath := cached_jars(cached)) is not None:
            return classpath
        cached.parent.mkdir(parents=True, exist_ok=True)
        log.info(
            "resolving the Kafka broker's classpath with Maven (downloads once, into %s)", self.cache_dir
        )
        return resolve_classpath(
            POM,
            cached,
            self.cache_dir / "maven",
            cached.parent / "resolve.log",
            scope="runtime",
            error=KafkaBrokerError,
        )

    def _write_config(self) -> None:
        listeners = f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
        if self.voters is None:  # a dynamic quorum of this one node, formatted `--standalone`
            quorum = {"controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}"}
        else:  # a static quorum: every node knows every controller from its configuration
            voters = ",".join(f"{node}@127.0.0.1:{port}" for node, port in sorted(self.voters.items()))
            quorum = {"controller.quorum.voters": voters}
        settings = {
            **BROKER_SETTINGS,
            "node.id": str(self.node_id),
            **replication_settings(self.replication, self.min_insync_replicas),
            "listeners": listeners,
            "advertised.listeners": listeners,
            **quorum,
            "log.dirs": str(self.log_dir),
        }
        lines = ["# Written by warriors/servers/kafka_broker.py at each start: edits are lost."]
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
        """Format the storage once: as a single-node dynamic KRaft quorum (`--standalone`),
        or, for a node of a cluster, with the cluster's id (the voters are configured)."""
        if (self.log_dir / "meta.properties").exists():
            return
        cluster_id_file = self.data_dir / "cluster-id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text((self.cluster_id or random_cluster_id()) + "\n")
        cluster_id = cluster_id_file.read_text().strip()
        log.info("formatting the Kafka storage in %s (cluster id %s)", self.log_dir, cluster_id)
        standalone = ["--standalone"] if self.voters is None else []
        result = subprocess.run(
            [java, *self._java_options(), "-cp", classpath, "kafka.tools.StorageTool", "format",
             *standalone, "--cluster-id", cluster_id, "--config", str(self.config_file)],
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
        heap = [f"-Xms{min(256, self.heap_mb)}m", f"-Xmx{self.heap_mb}m"]
        command = [java, *heap, *JVM_OPTIONS, *self._java_options(), "-cp", classpath, "kafka.Kafka",
                   str(self.config_file)]  # fmt: skip
        pid = spawn(command, self.output_file, cwd=self.data_dir)
        self.pid_file.write_text(f"{pid}\n")
        return pid

    def _java_options(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", f"-Dkafka.logs.dir={self.data_dir}"]

    def _pid(self) -> int | None:
        """The pid of the broker running on this data folder, if one is."""
        pid = read_pid(self.pid_file)
        if pid is None or not command_line_has(pid, b"kafka.Kafka", bytes(self.config_file)):
            return None
        return pid if alive(pid) else None

    def failure_detail(self) -> str:
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


def random_cluster_id() -> str:
    """Like Kafka's Uuid.randomUuid().toString(): 16 random bytes, URL-safe base64 without
    padding, never starting with '-' (the tools would read it as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m warriors.servers.kafka_broker", description="The development Kafka broker."
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
