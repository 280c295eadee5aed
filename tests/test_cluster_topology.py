"""The platform on a replicated topology, on loopback, with real servers (issue 16):

- a 3-node Kafka 4 KRaft cluster (every node a broker and a controller; the topics with 3
  replicas and `min.insync.replicas` 2, the brokers' default, which the topics the relay
  creates inherit; the relay's producer is idempotent with `acks=all`, so an event counts
  as published once 2 replicas have it);
- 2 OpenSearch nodes in one cluster, the index with 2 shards and 1 replica each
  (`SEARCH_SHARDS`/`SEARCH_REPLICAS`); warriors-1 is the cluster manager, warriors-2 a
  data node (a 2-node cluster cannot keep a manager when either of 2 eligible nodes is
  gone; production wants 3 eligible nodes, docs/deployment.md);
- 2 HTTP entry-point processes sharing one port through SO_REUSEPORT
  (tests/reuseport_http.py says why not a proxy);
- 3 projector members (Kafka mode): each projection's consumer group has 3 members,
  one per partition; the relay; Redis; PostgreSQL (the event store).

While writers run through the shared port with an API key (a new connection for each
request, so that both entry points get a share): stop a broker (a controlled shutdown)
and start it again, side by side with stopping the data node of the search cluster and
starting it again (neither is on the writers' path; each is a JVM start); then, in a
random order, SIGKILL an HTTP entry point and start another, SIGKILL a projector member
and start another (back once its groups have 3 members again). Then: every acknowledged (202) write
is in the store at its version and position; the read model, every Redis entry and every
search document equal a fresh fold of the store; the Kafka partitions and the search
shards have all their replicas again. Printed: the writers' requests and error rate before
the faults and during each fault (from the fault to the server being back), and the times.

`make test` runs each fault once, the servers down DOWN_SECONDS (1 s); `make soak-cluster`
runs faults in a random order for CLUSTER_SECONDS (default 300), down 5 s each;
CLUSTER_SEED repeats a run's order and timing.
"""

import logging
import os
import random
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from tests.kafka_support import (
    SINKS,
    bus_env,
    cache_matches_the_store,
    caught_up,
    exact,
    index_differences,
    read_model_differences,
    relay,
)
from tests.reuseport_http import EntryPoint
from tests.support import LoggedProcess, ProjectorProcess, auth_headers, wait_for
from tests.writers import Writers, lost_acknowledgements
from warriors.adapters.kafka_bus import TOPIC
from warriors.projections.status import consumer_group
from warriors.readside.search_index import ALIAS
from warriors.security.identity import Role
from warriors.servers import free_port
from warriors.servers.cluster import KafkaCluster, OpenSearchCluster
from warriors.servers.kafka_broker import KafkaBroker

SECONDS = float(os.environ.get("CLUSTER_SECONDS", "0"))  # 0: each fault once
SEED = int(os.environ.get("CLUSTER_SEED", "0")) or random.SystemRandom().randrange(1, 1_000_000)
DOWN_SECONDS = 5.0 if SECONDS >= 60 else 1.0  # how long a stopped server stays stopped
REPLICATION = 3
MIN_INSYNC_REPLICAS = 2
PARTITIONS = 3
MEMBERS = 3
ENTRY_POINTS = 2
WRITER_THREADS = 2 if SECONDS else 1  # the short run: less load on 2 cores
# How long a JVM may take to start: 5 JVMs and the platform share 2 cores (and, in `make
# test`, other tests run beside): a broker's start was measured at 50-66 s, a search node's
# at 99-113 s, against 11 s and 26 s on an idle machine.
START_TIMEOUT_SECONDS = 300.0
# How soon a SIGKILLed member's partitions move to the others (the least the broker accepts).
SESSION_TIMEOUT_SECONDS = 6


@dataclass
class Window:
    """A fault, from the moment it began to the server being back (ready)."""

    name: str
    began: float
    ended: float = 0.0


@dataclass
class Topology:
    """The processes of the platform on the clusters, and what replaces a killed one."""

    url: str
    port: int
    env: dict[str, str]
    entry_points: list[EntryPoint] = field(default_factory=list)
    members: list[LoggedProcess] = field(default_factory=list)
    feeder: list[LoggedProcess] = field(default_factory=list)
    started: int = 0

    def entry_point(self) -> EntryPoint:
        self.started += 1
        return EntryPoint(self.url, self.port, self.env, f"http-{self.port}-{self.started}")

    def member(self) -> LoggedProcess:
        self.started += 1
        return ProjectorProcess(self.url, env=self.env, name=f"projector-{self.started}")

    def stop(self) -> None:
        for process in [*self.entry_points, *self.feeder, *self.members]:
            process.stop()


@pytest.fixture
def clusters() -> Iterator[tuple[KafkaCluster, OpenSearchCluster]]:
    """The Kafka and the OpenSearch clusters, started side by side, removed afterwards."""
    kafka = KafkaCluster(Path(tempfile.mkdtemp(prefix="warriors-test-kafka-cluster-")), 3,
                         replication=REPLICATION, min_insync_replicas=MIN_INSYNC_REPLICAS)  # fmt: skip
    search = OpenSearchCluster(Path(tempfile.mkdtemp(prefix="warriors-test-os-cluster-")), 2, managers=1,
                               start_timeout=START_TIMEOUT_SECONDS)  # fmt: skip
    try:
        starting = time.monotonic()
        with ThreadPoolExecutor(max_workers=2) as pool:
            kafka_started = pool.submit(kafka.start, START_TIMEOUT_SECONDS)
            search_started = pool.submit(search.start)
            kafka_started.result()
            search_started.result()
        print(f"\nthe Kafka and OpenSearch clusters started in {time.monotonic() - starting:.0f}s")
        yield kafka, search
    finally:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(kafka.destroy), pool.submit(search.destroy)]:
                future.result()  # both return None


def admin_of(kafka: KafkaCluster) -> AdminClient:
    """A new admin client each time: one kept across a broker's restart was seen answering
    NOT_COORDINATOR to every group description for minutes (librdkafka 2.x). Its log
    lines go to Python logging, not to the test's output."""
    return AdminClient(
        {"bootstrap.servers": kafka.bootstrap_servers()}, logger=logging.getLogger("tests.kafka")
    )


def group_members(kafka: KafkaCluster) -> dict[str, set[str]] | None:
    """Each projection's consumer group's member ids, None unless every group is stable
    with MEMBERS members."""
    admin = admin_of(kafka)
    futures = admin.describe_consumer_groups([consumer_group(sink) for sink in SINKS], request_timeout=5)
    members = {}
    for group_id, future in futures.items():
        group = future.result(timeout=10)
        if group.state != ConsumerGroupState.STABLE or len(group.members) != MEMBERS:
            return None
        members[group_id] = {member.member_id for member in group.members}
    return members


def groups_renewed(kafka: KafkaCluster, before: dict[str, set[str]]) -> bool:
    """Every group stable with MEMBERS members again, a new one among them in each (the
    killed member's session expired, its replacement joined)."""
    members = group_members(kafka)
    return members is not None and all(members[group] != before[group] for group in before)


def topic_replicated(kafka: KafkaCluster) -> bool:
    """The event topic: PARTITIONS partitions, each with REPLICATION replicas all in sync,
    and `min.insync.replicas` MIN_INSYNC_REPLICAS in effect."""
    admin = admin_of(kafka)
    partitions = admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
    if len(partitions) != PARTITIONS:
        return False
    if any(len(p.replicas) != REPLICATION or len(p.isrs) != REPLICATION for p in partitions.values()):
        return False
    [future] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, TOPIC)]).values()
    config = future.result(timeout=10)
    return bool(config["min.insync.replicas"].value == str(MIN_INSYNC_REPLICAS))


def index_replicated(search_url: str) -> bool:
    """The cluster green with both nodes, the index behind the alias with 1 replica of each
    shard, every primary and replica started, on different nodes."""
    health = httpx.get(f"{search_url}/_cluster/health", params={"wait_for_status": "green", "timeout": "2s"},
                       timeout=10).json()  # fmt: skip
    if health.get("status") != "green" or health.get("number_of_nodes") != 2:
        return False
    shards = httpx.get(f"{search_url}/_cat/shards/{ALIAS}", params={"format": "json"}, timeout=10).json()
    nodes: dict[str, set[str]] = {}
    for shard in shards:
        if shard["state"] != "STARTED":
            return False
        nodes.setdefault(shard["shard"], set()).add(shard["node"])
    return len(shards) >= 2 and all(len(held) == 2 for held in nodes.values())


def test_the_replicated_topology_under_faults(
    fresh_database: str, redis_url: str, clusters: tuple[KafkaCluster, OpenSearchCluster]
) -> None:
    began = time.monotonic()
    kafka, search = clusters
    rng = random.Random(SEED)
    print(
        f"\ncluster topology: seed {SEED}, {SECONDS:.0f}s of faults (0: each once), down {DOWN_SECONDS:.0f}s"
    )
    search_url = search.nodes[0].url()  # the cluster manager: the node every client talks to
    env = {**bus_env(kafka, replication=REPLICATION), "REDIS_URL": redis_url, "SEARCH_URL": search_url,
           "SEARCH_SHARDS": "2", "SEARCH_REPLICAS": "1", "CACHE_COUNT_FRESH_SECONDS": "2",
           "KAFKA_SESSION_TIMEOUT_SECONDS": str(SESSION_TIMEOUT_SECONDS)}  # fmt: skip
    topology = Topology(fresh_database, free_port(), env)
    base_url = f"http://127.0.0.1:{topology.port}"
    operator = auth_headers(fresh_database, Role.OPERATOR)
    # A new connection per request: the kernel spreads them over both entry points.
    writers = [
        Writers(
            base_url, auth_headers(fresh_database, Role.WRITER), random.Random(SEED + 1 + n), keep_alive=False
        )
        for n in range(WRITER_THREADS)
    ]
    windows: list[Window] = []

    def say(message: str) -> None:
        print(f"{time.monotonic() - began:6.1f}s {message}\n", end="")  # one write: threads print too

    def fault(name: str, action: Callable[[], None]) -> None:
        window = Window(name, time.monotonic())
        say(f"fault: {name}")
        action()
        window.ended = time.monotonic()
        windows.append(window)
        say(f"back after {window.ended - window.began:.1f}s: {name}")

    def stop_a_broker(broker: KafkaBroker) -> None:
        stopping = time.monotonic()
        broker.stop()  # SIGTERM: a controlled shutdown (leadership moves first)
        stopped = time.monotonic()
        time.sleep(DOWN_SECONDS)  # the fault's duration
        broker.start(START_TIMEOUT_SECONDS)  # the same node id, port and data: back once registered
        say(f"broker {broker.node_id}: stopped in {stopped - stopping:.1f}s,"
            f" started again in {time.monotonic() - stopped - DOWN_SECONDS:.1f}s")  # fmt: skip

    def stop_a_search_node() -> None:
        node = search.nodes[1]
        stopping = time.monotonic()
        node.stop()  # its shards' copies on warriors-1 become (or stay) the primaries
        stopped = time.monotonic()
        time.sleep(DOWN_SECONDS)  # the fault's duration
        node.start()  # back once it has joined the cluster again
        say(f"search node warriors-2: stopped in {stopped - stopping:.1f}s,"
            f" started again in {time.monotonic() - stopped - DOWN_SECONDS:.1f}s")  # fmt: skip

    def slow_faults() -> None:
        """The broker and the search node side by side (neither is on the writers' path,
        and each takes a JVM start): two windows that overlap."""
        broker = rng.choice(kafka.brokers)
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(fault, "stop a Kafka broker", partial(stop_a_broker, broker)),
                       pool.submit(fault, "stop a search node", stop_a_search_node)]  # fmt: skip
            for future in futures:
                future.result()

    def kill_an_entry_point() -> None:
        index = rng.randrange(len(topology.entry_points))
        topology.entry_points[index].process.send_signal(signal.SIGKILL)
        topology.entry_points[index].stop()
        topology.entry_points[index] = topology.entry_point()  # back once its app started

    def kill_a_member() -> None:
        before = wait_for(lambda: group_members(kafka), timeout=90, what="every consumer group full")
        index = rng.randrange(len(topology.members))
        topology.members[index].process.send_signal(signal.SIGKILL)
        topology.members[index].stop()
        topology.members[index] = topology.member()
        # Back once every group has MEMBERS members again (the dead one's session expired).
        wait_for(lambda: groups_renewed(kafka, before), timeout=90, what="every consumer group renewed")

    quick_faults = [
        ("SIGKILL an HTTP entry point", kill_an_entry_point),
        ("SIGKILL a projector member", kill_a_member),
    ]
    try:
        topology.feeder.append(relay(fresh_database, kafka, env))
        topology.members.extend(topology.member() for _ in range(MEMBERS))
        topology.entry_points.extend(topology.entry_point() for _ in range(ENTRY_POINTS))
        with httpx.Client(base_url=base_url, headers=operator, timeout=10) as client:
            wait_for(lambda: caught_up(client), timeout=120, what="every projection registered")
        wait_for(lambda: group_members(kafka), timeout=90, what=f"{MEMBERS} members in every consumer group")
        assert topic_replicated(kafka), "the event topic is not replicated as configured"
        set_up = time.monotonic()
        for writer in writers:
            writer.start()
        wait_for(lambda: sum(w.accepted for w in writers) >= 100, timeout=60, what="the writers under way")
        baseline = Window("before the faults", set_up, time.monotonic())
        deadline = time.monotonic() + SECONDS
        first_round = True
        while first_round or time.monotonic() < deadline:  # every fault at least once
            slow_faults()
            for name, action in rng.sample(quick_faults, len(quick_faults)):
                fault(name, action)
            if SECONDS:
                time.sleep(rng.uniform(0.5, 3))  # the faults' timing (random), not a synchronisation
            first_round = False
        for writer in writers:
            writer.stopping.set()
        for writer in writers:
            writer.join(timeout=30)
        faulted = time.monotonic()
        try:
            wait_for(lambda: exact(fresh_database), timeout=180, what="the read model to equal the store")
        except TimeoutError:
            print("\n".join(read_model_differences(fresh_database)[:20]))
            raise
        wait_for(lambda: cache_matches_the_store(fresh_database, redis_url), timeout=180,
                 what="the cache to equal the store")  # fmt: skip
        wait_for(lambda: not index_differences(fresh_database, search_url), timeout=180,
                 what="the search index to equal the store")  # fmt: skip
        with httpx.Client(base_url=base_url, headers=operator, timeout=10) as client:
            wait_for(lambda: caught_up(client), timeout=60, what="the projections to report no lag")
        converged = time.monotonic()
        wait_for(lambda: topic_replicated(kafka), timeout=120, what="every partition with 3 in-sync replicas")
        wait_for(lambda: index_replicated(search_url), timeout=180, what="every shard with its replica")
        replicated = time.monotonic()
    finally:
        for writer in writers:
            writer.stopping.set()
        topology.stop()

    lost = lost_acknowledgements(fresh_database, writers)
    accepted = sum(w.accepted for w in writers)
    why = sum((w.failures for w in writers), Counter[str]())
    failed = sum(w.failed for w in writers)
    print(f"writes acknowledged {accepted}, failed {failed} {dict(why)}; lost {len(lost)}")
    print("writers' error rate (requests that ended in the window; a fault's window runs until it is back):")
    by_name: dict[str, list[Window]] = {}
    for window in [baseline, *windows]:
        by_name.setdefault(window.name, []).append(window)
    for name, those in by_name.items():
        requests = failures = 0
        for window in those:
            counted = [w.during(window.began, window.ended) for w in writers]
            requests += sum(r for r, _ in counted)
            failures += sum(f for _, f in counted)
        seconds = sum(w.ended - w.began for w in those)
        rate = 100 * failures / requests if requests else 0.0
        print(f"  {name:30s} x{len(those)} {seconds:6.1f}s {requests:6d} requests"
              f" {failures:4d} failed ({rate:.2f}%)")  # fmt: skip
    print(f"set-up {set_up - began:.0f}s, faults {faulted - set_up:.0f}s,"
          f" convergence {converged - faulted:.0f}s, replicas back {replicated - converged:.0f}s,"
          f" total {replicated - began:.0f}s")  # fmt: skip
    assert accepted > 0
    assert not lost, f"acknowledged writes missing from the store: {lost[:10]}"
