"""Admission control's limit (api/common/admission.py): pure asyncio, no server."""

import asyncio

import pytest

from api.common.admission import Admission, Limit


async def test_holders_are_bounded_and_the_queue_is_served_in_order() -> None:
    limit = Limit("write", in_flight=2, queue=2, queue_seconds=5)
    assert limit.try_now() is True
    assert limit.try_now() is True
    assert limit.try_now() is None  # full: wait in line
    served: list[str] = []

    async def waiter(name: str) -> None:
        assert await limit.wait()
        served.append(name)

    first = asyncio.create_task(waiter("first"))
    await asyncio.sleep(0)  # `first` is in line before `second`
    second = asyncio.create_task(waiter("second"))
    await asyncio.sleep(0)
    assert limit.try_now() is False  # two waiting: the next is shed at once
    limit.release()
    await first
    limit.release()
    await second
    assert served == ["first", "second"]
    assert limit.holders == 2  # each release handed its slot on
    limit.release()
    limit.release()
    assert limit.holders == 0


async def test_a_waiter_past_the_budget_is_refused_and_leaves_the_line() -> None:
    limit = Limit("write", in_flight=1, queue=4, queue_seconds=0.01)
    assert limit.try_now() is True
    assert await limit.wait() is False
    limit.release()
    assert limit.holders == 0
    assert limit.try_now() is True  # the line is empty again


async def test_a_waiter_cancelled_in_line_takes_no_slot() -> None:
    limit = Limit("write", in_flight=1, queue=4, queue_seconds=5)
    assert limit.try_now() is True
    gone = asyncio.create_task(limit.wait())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    limit.release()
    assert limit.holders == 0


async def test_a_slot_handed_over_as_its_waiter_gives_up_is_passed_on() -> None:
    limit = Limit("write", in_flight=1, queue=4, queue_seconds=5)
    assert limit.try_now() is True
    giving_up = asyncio.create_task(limit.wait())
    await asyncio.sleep(0)
    next_in_line = asyncio.create_task(limit.wait())
    await asyncio.sleep(0)
    limit.release()  # hands the slot to `giving_up`...
    giving_up.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await giving_up
    assert await next_in_line is True  # the slot went on, not lost
    assert limit.holders == 1


def test_health_and_metrics_are_never_limited_and_reads_and_writes_apart() -> None:
    reads, writes = Limit("read", 1, 0, 1), Limit("write", 1, 0, 1)
    admission = Admission(reads, writes)
    assert admission.limit_for("GET", "/health/ready") is None
    assert admission.limit_for("GET", "/metrics") is None
    assert admission.limit_for("GET", "/api/v1/queries/warriors") is reads
    assert admission.limit_for("POST", "/api/v1/commands/warriors") is writes
    assert admission.limit_for("DELETE", "/api/v1/commands/warriors/x") is writes
