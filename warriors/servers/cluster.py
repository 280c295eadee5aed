"""Replicated topologies on loopback, from the same launchers: a Kafka KRaft cluster (every
node a broker and a controller, a static quorum of all of them) and an OpenSearch cluster
of several JVMs. Each node keeps its own folder under the cluster's root and can be
stopped and started again on its own (the same ports, the same data), as a fault would.

The topology test (tests/test_cluster_topology.py) runs them; docs/deployment.md says
what was measured.
"""

import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from warriors.servers.base import free_ports
from warriors.servers.kafka_broker import (
    START_TIMEOUT_SECONDS,
    STOP_TIMEOUT_SECONDS,
    KafkaBroker,
    random_cluster_id,
)
from warriors.servers.opensearch_server import START_TIMEOUT_SECONDS as OPENSEARCH_START_TIMEOUT_SECONDS
from warriors.servers.opensearch_server import ClusterNode, OpenSearchServer

T = TypeVar("T")

KAFKA_HEAP_MB = 384
OPENSEARCH_HEAP_MB = 512


class KafkaCluster:
    """`size` nodes, node ids 1..size, every one a voter of the KRaft quorum. The internal
    topics have `replication` replicas and `min_insync_replicas` (and so does a topic
    created without its own settings)."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        replication: int = 3,
        min_insync_replicas: int = 2,
        heap_mb: int = KAFKA_HEAP_MB,
        cache_dir: Path | None = None,
    ) -> None:
        self.root = root
        ports = free_ports(2 * size)
        voters = {node: ports[size + node - 1] for node in range(1, size + 1)}
        cluster_id = random_cluster_id()
        self.brokers = [
            KafkaBroker(root / f"node-{node}", ports[node - 1], cache_dir=cache_dir, node_id=node,
                        voters=voters, cluster_id=cluster_id, replication=replication,
                        min_insync_replicas=min_insync_replicas, heap_mb=heap_mb)
            for node in voters
        ]  # fmt: skip

    def bootstrap_servers(self) -> str:
        """Every node's address: a client reaches the cluster while any of them answers."""
        return ",".join(broker.bootstrap_servers() for broker in self.brokers)

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> str:
        """Launch every node that is not running (side by side: formatting a node's storage
        is a JVM start of its own), then wait for each (a node gets ready only once a
        majority of the controllers runs); the bootstrap servers."""
        deadline = time.monotonic() + timeout
        _each(self.brokers, KafkaBroker.launch)
        for broker in self.brokers:
            broker.wait_started(max(1.0, deadline - time.monotonic()))
        return self.bootstrap_servers()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Every node at once: one by one, the last could not shut down in a controlled way
        (no quorum left) and would wait out `timeout`."""

        def stop(broker: KafkaBroker) -> None:
            broker.stop(timeout)

        _each(self.brokers, stop)

    def destroy(self) -> None:
        self.stop(timeout=5.0)  # the data goes anyway: no need to wait for a clean shutdown
        shutil.rmtree(self.root, ignore_errors=True)


class OpenSearchCluster:
    """`size` nodes named warriors-1..size; the first `managers` of them are eligible as the
    cluster manager (and bootstrap the first election), the others hold data only. Every
    node holds data and ingests."""

    def __init__(
        self,
        root: Path,
        size: int = 2,
        *,
        managers: int = 1,
        heap_mb: int = OPENSEARCH_HEAP_MB,
        cache_dir: Path | None = None,
        start_timeout: float = OPENSEARCH_START_TIMEOUT_SECONDS,
    ) -> None:
        if not 1 <= managers <= size:
            raise ValueError(f"{managers} manager-eligible nodes of {size}")
        self.root = root
        ports = free_ports(2 * size)
        transport = tuple(ports[size:])
        names = [f"warriors-{node}" for node in range(1, size + 1)]
        self.nodes = [
            OpenSearchServer(
                root / name,
                ports[index],
                cache_dir,
                cluster=ClusterNode(
                    name=name,
                    transport_port=transport[index],
                    seed_transport_ports=transport,
                    initial_cluster_managers=tuple(names[:managers]),
                    roles=("cluster_manager", "data", "ingest") if index < managers else ("data", "ingest"),
                ),
                heap_mb=heap_mb,
                start_timeout=start_timeout,
            )
            for index, name in enumerate(names)
        ]

    def urls(self) -> list[str]:
        return [node.url() for node in self.nodes]

    def start(self) -> list[str]:
        """Launch every node that is not running, then wait until each is ready (every node
        joined, the cluster yellow or green); their URLs."""
        _each(self.nodes, OpenSearchServer.launch)
        return [node.wait_started() for node in self.nodes]

    def stop(self) -> None:
        _each(self.nodes, OpenSearchServer.stop)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _each(servers: Sequence[T], action: Callable[[T], object]) -> None:
    """`action` on every server side by side; the first error raised once all are done."""
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        for future in [pool.submit(action, server) for server in servers]:
            future.result()
