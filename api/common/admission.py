"""Admission control: what a worker takes on past its capacity is answered at once with
503 and `Retry-After`, before any database work, instead of being admitted to wait for a
pool connection and time out after doing part of its work (issue 24: at twice the held
rate the platform answered a fifth of what it answered at capacity).

Per worker and per kind of request (reads: GET, HEAD, OPTIONS; writes: the rest), at
most `in_flight` requests run; up to `queue` more wait for a slot, in arrival order, each
at most `queue_seconds` (the queue-time budget); any further one is shed on arrival. Reads
and writes have limits of their own, so a write flood cannot starve reads, nor the other
way round. Health and metrics are never shed: an overloaded worker still says so.

Static bounds (ADMISSION_* settings), not adaptive ones (Netflix's concurrency-limits,
Envoy's adaptive concurrency): what they give and do not give, measured, is in
docs/operations.md and docs/benchmarks.md, "Overload".
"""

import asyncio
from collections import deque

from prometheus_client import Counter, Gauge

NEVER_SHED = frozenset({"/health/live", "/health/ready", "/metrics"})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})

SHED = Counter(
    "http_requests_shed_total", "Requests answered 503 by admission control", ["service", "kind", "reason"]
)

IN_FLIGHT = Gauge(
    "http_requests_admitted_in_flight",
    "Requests admitted and not yet answered, by kind",
    ["service", "kind"],
    multiprocess_mode="livesum",
)

WAITING = Gauge(
    "http_requests_waiting_admission",
    "Requests waiting in line for a slot, by kind",
    ["service", "kind"],
    multiprocess_mode="livesum",
)


class Limit:
    """At most `in_flight` holders; up to `queue` waiters, each for at most `queue_seconds`."""

    def __init__(self, kind: str, in_flight: int, queue: int, queue_seconds: float) -> None:
        self.kind = kind
        self.in_flight = in_flight
        self.queue = queue
        self.queue_seconds = queue_seconds
        self.holders = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    def try_now(self) -> bool | None:
        """True: a slot was free, and is held. False: the queue is full, shed. None: wait."""
        if self.holders < self.in_flight and not self._waiting:
            self.holders += 1
            return True
        return False if len(self._waiting) >= self.queue else None

    async def wait(self) -> bool:
        """Wait in line for a slot handed over by `release`; False if the budget ran out."""
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(slot)
        try:
            async with asyncio.timeout(self.queue_seconds):
                await asyncio.shield(slot)  # a time-out must not cancel a slot handed over
        except BaseException as exc:
            if slot.done():  # handed over just as this request gave up: pass it on
                self.release()
            else:
                slot.cancel()
                self._waiting.remove(slot)
            if isinstance(exc, TimeoutError):
                return False
            raise  # cancelled (the client went away)
        return True

    def release(self) -> None:
        """Hand the slot to the first waiter still waiting, or free it."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.holders -= 1


class Admission:
    """The two limits of a worker, reads and writes."""

    def __init__(self, reads: Limit, writes: Limit) -> None:
        self.reads = reads
        self.writes = writes

    def limit_for(self, method: str, path: str) -> Limit | None:
        if path in NEVER_SHED:
            return None
        return self.reads if method in _READS else self.writes
