"""The production mode under faults, end to end on real servers: the relay and two
projector members per projection (Kafka consumer groups), the read model in PostgreSQL
and the Redis cache, writers running throughout. Faults in a random order (seeded,
printed): SIGKILL a projector member, SIGKILL the relay, flush Redis, delete the topic's
records (what retention does). At the end every sink (the read model and its count, every
Redis entry and the Redis count) equals a fresh fold of the event store, entry by entry.

`make test` runs a short version; `make soak` a longer one (SOAK_SECONDS, SOAK_SEED).
"""

import os
import random
import signal
import threading
import time
from collections.abc import Callable

import httpx
import redis

from tests.support import LoggedProcess, ProjectorProcess, ServiceProcess, wait_for
from tests.test_kafka_projectors import (
    bus_env,
    cache_matches_the_store,
    drop_the_topics_records,
    exact,
    relay,
)
from warriors.adapters.embedded_postgres import free_port
from warriors.adapters.kafka_broker import KafkaBroker

SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
SEED = int(os.environ.get("SOAK_SEED", "0")) or random.SystemRandom().randrange(1, 1_000_000)


class Writers(threading.Thread):
    """Creations, renames and deletions through the API until stopped; counts what was
    accepted (202) and what failed."""

    def __init__(self, base_url: str, headers: dict[str, str], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.headers = headers
        self.rng = rng
        self.stopping = threading.Event()
        self.accepted = 0
        self.failed = 0
        self.living: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=10) as client:
            while not self.stopping.is_set():
                try:
                    self._one(client)
                except httpx.HTTPError:
                    self.failed += 1

    def _one(self, client: httpx.Client) -> None:
        roll = self.rng.random()
        if roll < 0.7 or len(self.living) < 5:
            answer = client.post(
                "/api/v1/commands/warriors", json={"name": f"Soak {self.accepted}", "dob": "1990-01-01"}
            )
            if answer.status_code == 202:
                self.living.append(answer.json()["id"])
        elif roll < 0.9:
            warrior = self.rng.choice(self.living)
            answer = client.patch(f"/api/v1/commands/warriors/{warrior}", json={"name": "Soak renamed"})
        else:
            warrior = self.living.pop(self.rng.randrange(len(self.living)))
            answer = client.delete(f"/api/v1/commands/warriors/{warrior}")
        if answer.status_code == 202:
            self.accepted += 1
        else:
            self.failed += 1


def test_the_production_mode_under_faults_ends_equal_to_the_store(
    fresh_database: str, broker: KafkaBroker, redis_url: str
) -> None:
    print(f"production faults: seed {SEED}, {SECONDS:.0f}s")
    rng = random.Random(SEED)
    env = {**bus_env(broker), "REDIS_URL": redis_url, "CACHE_COUNT_FRESH_SECONDS": "2"}
    service = ServiceProcess(fresh_database, free_port(), env=env)
    feeder: list[LoggedProcess] = [relay(fresh_database, broker)]
    members: list[LoggedProcess] = [ProjectorProcess(fresh_database, env=env) for _ in range(2)]
    writers = Writers(service.base_url, service.headers, rng)

    def kill_member() -> None:
        index = rng.randrange(len(members))
        members[index].process.send_signal(signal.SIGKILL)
        members[index].stop()
        members[index] = ProjectorProcess(fresh_database, env=env)

    def kill_relay() -> None:
        feeder[0].process.send_signal(signal.SIGKILL)
        feeder[0].stop()
        feeder[0] = relay(fresh_database, broker)

    def flush_redis() -> None:
        with redis.Redis.from_url(redis_url) as client:
            client.flushall()

    faults: list[tuple[str, Callable[[], None]]] = [
        ("SIGKILL a projector member", kill_member),
        ("SIGKILL the relay", kill_relay),
        ("flush Redis", flush_redis),
        ("delete the topic's records", lambda: drop_the_topics_records(broker)),
    ]
    try:
        writers.start()
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            rng.shuffle(faults)
            for name, fault in faults:
                print(f"fault: {name} (after {writers.accepted} accepted writes)")
                fault()
                time.sleep(rng.uniform(1, 4))  # the faults' timing (random), not a synchronisation
        writers.stopping.set()
        writers.join(timeout=30)
        wait_for(lambda: exact(fresh_database), timeout=180, what="the read model to equal the store")
        wait_for(lambda: cache_matches_the_store(fresh_database, redis_url), timeout=180,
                 what="the cache to equal the store")  # fmt: skip
    finally:
        writers.stopping.set()
        service.stop()
        for process in [*feeder, *members]:
            process.stop()
    print(f"writes accepted {writers.accepted}, failed {writers.failed}")
    assert writers.accepted > 0
