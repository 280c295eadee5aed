"""A cap on look-ups of keys that turn out not to be live, per client address and worker.

Every key a worker has not seen costs a PostgreSQL look-up; a client trying made-up keys
(guessing, or a flood to load the database) would get one per request. Each client address
has a budget of AUTH_UNKNOWN_KEYS_PER_MINUTE such look-ups (a token bucket: spent by each
key found unknown or revoked, refilled evenly over a minute); with none left, a request
whose key is not already known to the worker is answered 429 with `Retry-After`, before any
look-up. Keys already known (live or not) cost nothing and are judged as usual, so a client
with a working key goes on; one that spent its budget on bad keys waits a few seconds.
Behind a proxy, the address is the one uvicorn takes from X-Forwarded-For
(FORWARDED_ALLOW_IPS). At most `clients` addresses are remembered (least recently used
first out), so a flood of addresses cannot grow a worker's memory.
"""

import math
from collections import OrderedDict


class TooManyUnknownKeys(Exception):
    """This client has spent its look-ups of unknown keys for now: 429."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            "Too many unknown or revoked API keys from this address;"
            f" retry after {self.retry_after} s with a valid key."
        )


class GuessBudget:
    def __init__(self, per_minute: int, clients: int = 10_000) -> None:
        self._capacity = float(per_minute)
        self._per_second = per_minute / 60.0
        self._clients = clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (self._capacity, now))
        return min(self._capacity, tokens + (now - at) * self._per_second)

    def check(self, client: str, now: float) -> None:
        """Raise TooManyUnknownKeys when `client` may not look another key up now."""
        tokens = self._tokens(client, now)
        if tokens < 1.0:
            raise TooManyUnknownKeys((1.0 - tokens) / self._per_second)

    def spend(self, client: str, now: float) -> None:
        """`client`'s key was looked up and is not live."""
        self._buckets[client] = (self._tokens(client, now) - 1.0, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self._clients:
            self._buckets.popitem(last=False)
