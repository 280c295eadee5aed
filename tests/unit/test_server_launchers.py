"""The launchers' configuration of a replicated topology (warriors/servers/), without
starting a server: what a Kafka node and an OpenSearch node of a cluster are given."""

from pathlib import Path

import pytest

from warriors.servers import free_port
from warriors.servers.base import free_ports
from warriors.servers.kafka_broker import KafkaBroker, replication_settings
from warriors.servers.opensearch_server import ClusterNode


def properties(broker: KafkaBroker) -> dict[str, str]:
    broker.data_dir.mkdir(parents=True, exist_ok=True)
    broker._write_config()
    lines = broker.config_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_a_node_of_a_cluster_knows_every_voter_and_replicates_the_internal_topics(tmp_path: Path) -> None:
    voters = {1: 9101, 2: 9102, 3: 9103}
    broker = KafkaBroker(tmp_path / "node-2", 9002, cache_dir=tmp_path, node_id=2, voters=voters,
                         cluster_id="abc", replication=3, min_insync_replicas=2)  # fmt: skip
    config = properties(broker)
    assert config["node.id"] == "2"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    assert "controller.quorum.bootstrap.servers" not in config
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9102"
    assert config["offsets.topic.replication.factor"] == "3"
    assert config["min.insync.replicas"] == "2"
    assert config["transaction.state.log.min.isr"] == "2"


def test_a_single_node_is_a_dynamic_quorum_of_its_own(tmp_path: Path) -> None:
    config = properties(KafkaBroker(tmp_path / "kafka", 9002, 9003, cache_dir=tmp_path))
    assert config["node.id"] == "1"
    assert config["controller.quorum.bootstrap.servers"] == "127.0.0.1:9003"
    assert "controller.quorum.voters" not in config
    assert config["offsets.topic.replication.factor"] == config["min.insync.replicas"] == "1"


def test_impossible_replication_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"min\.insync\.replicas 3 with replication 2"):
        replication_settings(2, 3)
    with pytest.raises(ValueError, match="node 4 is not among the voters"):
        KafkaBroker(tmp_path, 9002, cache_dir=tmp_path, node_id=4, voters={1: 9101})


def test_an_opensearch_node_of_a_cluster_gets_its_discovery_settings() -> None:
    node = ClusterNode("warriors-2", 9302, (9301, 9302), ("warriors-1",), ("data", "ingest"))
    assert node.cluster_size == 2
    assert node.settings() == [
        "node.name=warriors-2",
        "transport.port=9302",
        "discovery.seed_hosts=127.0.0.1:9301,127.0.0.1:9302",
        "cluster.initial_cluster_manager_nodes=warriors-1",
        "node.roles=data,ingest",
    ]


def test_free_ports_are_different() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert free_port() > 0
