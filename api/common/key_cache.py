"""A worker's memory of which API keys are live, so that most requests cost no key look-up.

Two bounded LRU maps with a time to live: keys found live, and keys found not live
(unknown, revoked). They are apart so that a flood of made-up keys, each looked up once,
only ever evicts other made-up keys: the live keys in use stay (before, one map of 10,000
entries was cleared whole when full, valid keys with it, and every client's next request
paid a look-up).
"""

import time
from collections import OrderedDict
from typing import Generic, TypeVar

from warriors.security.identity import Identity

V = TypeVar("V")


class _Lru(Generic[V]):
    """At most `entries` values, each for `ttl` seconds; the least recently used goes first."""

    def __init__(self, entries: int, ttl: float) -> None:
        self._entries = entries
        self._ttl = ttl
        self._values: OrderedDict[bytes, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: bytes, now: float) -> tuple[bool, V | None]:
        found = self._values.get(key)
        if found is None or found[1] <= now:
            return False, None
        self._values.move_to_end(key)
        return True, found[0]

    def put(self, key: bytes, value: V, now: float) -> None:
        self._values[key] = (value, now + self._ttl)
        self._values.move_to_end(key)
        while len(self._values) > self._entries:
            self._values.popitem(last=False)


class KeyCache:
    """Live keys' identities, and keys known not to be live, by key digest."""

    def __init__(self, ttl: float, live_entries: int = 10_000, unknown_entries: int = 10_000) -> None:
        self.live: _Lru[Identity] = _Lru(live_entries, ttl)
        self.unknown: _Lru[None] = _Lru(unknown_entries, ttl)

    def get(self, digest: bytes, now: float | None = None) -> tuple[bool, Identity | None]:
        """(known, identity): known False means look it up; identity None means not live."""
        now = time.monotonic() if now is None else now
        known, identity = self.live.get(digest, now)
        if known:
            return True, identity
        known, _ = self.unknown.get(digest, now)
        return known, None

    def put(self, digest: bytes, identity: Identity | None, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if identity is None:
            self.unknown.put(digest, None, now)
        else:
            self.live.put(digest, identity, now)
