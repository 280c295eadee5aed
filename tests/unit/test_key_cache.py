"""The worker's API-key cache (api/common/key_cache.py): bounded, least recently used first,
and a flood of made-up keys cannot push the live keys out. Pure code."""

from api.common.key_cache import KeyCache
from warriors.security.identity import Identity, Role


def digest(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_a_flood_of_unknown_keys_leaves_the_live_ones() -> None:
    cache = KeyCache(ttl=60, live_entries=3, unknown_entries=100)
    operator = Identity("key:1", Role.OPERATOR)
    cache.put(digest(1), operator, now=0)
    for n in range(1000, 11_000):  # ten thousand made-up keys, each looked up once
        cache.put(digest(n), None, now=1)
    assert cache.get(digest(1), now=2) == (True, operator)
    assert len(cache.unknown) == 100
    assert cache.get(digest(10_999), now=2) == (True, None)  # the newest unknown ones are remembered
    assert cache.get(digest(1000), now=2) == (False, None)  # the oldest went first


def test_the_least_recently_used_live_key_goes_first() -> None:
    cache = KeyCache(ttl=60, live_entries=2)
    a, b, c = (Identity(f"key:{n}", Role.READER) for n in "abc")
    cache.put(digest(1), a, now=0)
    cache.put(digest(2), b, now=0)
    assert cache.get(digest(1), now=1) == (True, a)  # used: now the most recent
    cache.put(digest(3), c, now=2)
    assert cache.get(digest(2), now=3) == (False, None)
    assert cache.get(digest(1), now=3) == (True, a)


def test_entries_expire_after_their_time_to_live() -> None:
    cache = KeyCache(ttl=5)
    cache.put(digest(1), Identity("key:w", Role.WRITER), now=0)
    cache.put(digest(2), None, now=0)
    assert cache.get(digest(1), now=4.9)[0]
    assert cache.get(digest(1), now=5.0) == (False, None)
    assert cache.get(digest(2), now=5.0) == (False, None)
