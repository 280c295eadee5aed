"""Writers through the HTTP API for the fault tests (tests/test_production_faults.py,
tests/test_cluster_topology.py): creations, changes and deletions until stopped, with
what each answer was and when, so that a test can prove that nothing acknowledged is
lost and say the error rate while a fault lasted."""

import random
import threading
import time
import uuid
from collections import Counter

import httpx
import psycopg

SKILLS = ("Katana", "Judo", "Bo", "Kendo", "Aikido", "Karate", "Jodo")


class Writers(threading.Thread):
    """Creations, changes and deletions through the API until stopped; counts what was
    accepted (202) and what failed, keeps every acknowledged event (warrior, version,
    position) and every request's outcome with the time it ended."""

    def __init__(
        self, base_url: str, headers: dict[str, str], rng: random.Random, *, keep_alive: bool = True
    ) -> None:
        """`keep_alive` False: a new connection for each request (so that entry points
        sharing a port through SO_REUSEPORT each get a share of one writer's requests)."""
        super().__init__(daemon=True)
        self.limits = httpx.Limits() if keep_alive else httpx.Limits(max_keepalive_connections=0)
        self.base_url = base_url
        self.headers = headers
        self.rng = rng
        self.stopping = threading.Event()
        self.accepted = 0
        self.failed = 0
        self.living: list[str] = []
        self.acknowledged: list[tuple[str, int, int]] = []  # (warrior, version, position)
        self.outcomes: list[tuple[float, bool]] = []  # (time.monotonic() at the end, accepted)
        self.failures: Counter[str] = Counter()  # why: an HTTP status, or the client's error

    def run(self) -> None:
        with httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=10, limits=self.limits
        ) as client:
            while not self.stopping.is_set():
                try:
                    self._one(client)
                except httpx.HTTPError as exc:
                    self._failed(type(exc).__name__)

    def _skills(self) -> list[str]:
        return self.rng.sample(SKILLS, self.rng.randrange(4))

    def _one(self, client: httpx.Client) -> None:
        roll = self.rng.random()
        if roll < 0.6 or len(self.living) < 5:
            body = {"name": f"Soak {self.accepted}", "dob": "1990-01-01", "fight_skills": self._skills()}
            answer = client.post("/api/v1/commands/warriors", json=body)
            if answer.status_code == 202:
                self.living.append(answer.json()["id"])
        elif roll < 0.9:
            warrior = self.rng.choice(self.living)
            dob = f"19{self.rng.randrange(10, 99)}-0{self.rng.randrange(1, 9)}-1{self.rng.randrange(9)}"
            change = self.rng.choice(
                [{"name": f"Soak renamed {self.accepted}"}, {"fight_skills": self._skills()}, {"dob": dob}]
            )
            answer = client.patch(f"/api/v1/commands/warriors/{warrior}", json=change)
        else:
            warrior = self.living.pop(self.rng.randrange(len(self.living)))
            answer = client.delete(f"/api/v1/commands/warriors/{warrior}")
        if answer.status_code == 202:
            self.accepted += 1
            stored = answer.json()
            self.acknowledged.append((stored["id"], int(stored["version"]), int(stored["position"])))
            self.outcomes.append((time.monotonic(), True))
        else:
            self._failed(f"HTTP {answer.status_code}")

    def _failed(self, why: str) -> None:
        self.failed += 1
        self.failures[why] += 1
        self.outcomes.append((time.monotonic(), False))

    def during(self, start: float, end: float) -> tuple[int, int]:
        """(requests, failures) that ended between `start` and `end` (time.monotonic())."""
        inside = [accepted for at, accepted in list(self.outcomes) if start <= at <= end]
        return len(inside), inside.count(False)


def lost_acknowledgements(url: str, writers: list[Writers]) -> list[tuple[str, int, int]]:
    """Every acknowledged event that is not in the store at its warrior, version and
    position. Empty: nothing acknowledged was lost."""
    acknowledged = [event for writer in writers for event in writer.acknowledged]
    if not acknowledged:
        return []
    with psycopg.connect(url) as conn:
        stored = {
            (str(warrior), version, position)
            for warrior, version, position in conn.execute(
                "SELECT e.aggregate_id, e.event_version, e.position FROM event_store e"
                " JOIN unnest(%s::uuid[], %s::int[]) AS a(id, version)"
                " ON e.aggregate_id = a.id AND e.event_version = a.version",
                ([uuid.UUID(w) for w, _, _ in acknowledged], [v for _, v, _ in acknowledged]),
            )
        }
    return [event for event in acknowledged if event not in stored]
