"""The workers' answer cache (pure asyncio): kept for its time, bounded, one computation
for concurrent misses, errors never kept."""

import asyncio

import pytest

from warriors.readside.answer_cache import AnswerCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A computation that counts its calls and, while `gate` is unset, waits for it."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> bytes:
        self.calls += 1
        await self.gate.wait()
        return f"answer {self.calls}".encode()


async def test_an_answer_is_served_again_until_it_expires() -> None:
    clock, compute = Clock(), Counting()
    cache = AnswerCache(1.0, 10, clock)
    assert await cache.get("judo", compute) == b"answer 1"
    clock.now += 0.9
    assert await cache.get("judo", compute) == b"answer 1"
    clock.now += 0.2
    assert await cache.get("judo", compute) == b"answer 2"
    assert (cache.hits, cache.misses) == (1, 2)


async def test_concurrent_misses_compute_once() -> None:
    compute = Counting()
    compute.gate.clear()
    cache = AnswerCache(1.0, 10)
    waiting = [asyncio.create_task(cache.get("judo", compute)) for _ in range(20)]
    await asyncio.sleep(0)  # let every task reach the cache before the answer comes
    compute.gate.set()
    assert set(await asyncio.gather(*waiting)) == {b"answer 1"}
    assert compute.calls == 1


async def test_errors_reach_every_waiter_and_are_not_kept() -> None:
    cache = AnswerCache(1.0, 10)
    gate = asyncio.Event()

    async def failing() -> bytes:
        await gate.wait()
        raise RuntimeError("database down")

    waiting = [asyncio.create_task(cache.get("judo", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    for task in waiting:
        with pytest.raises(RuntimeError, match="database down"):
            await task
    assert await cache.get("judo", Counting()) == b"answer 1"


async def test_least_recently_used_goes_first_and_zero_disables() -> None:
    compute = Counting()
    cache = AnswerCache(10.0, 2)
    for key in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        await cache.get(key, compute)
    assert compute.calls == 3
    await cache.get("a", compute)
    await cache.get("b", compute)
    assert compute.calls == 4
    off = AnswerCache(0, 10)
    await off.get("a", compute)
    await off.get("a", compute)
    assert compute.calls == 6
