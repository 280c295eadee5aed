"""retry_until_stopped: tries again after the listed errors, stops promptly."""

import asyncio
import logging
import time

import pytest

from warriors.retrying import Stopped, retry_until_stopped

log = logging.getLogger("test")


async def test_a_step_failing_twice_then_working_gives_its_result(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def step() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"broker down ({calls})")
        return "done"

    with caplog.at_level(logging.WARNING):
        result = await retry_until_stopped(
            "step", step, asyncio.Event(), (ConnectionError,), log, first_pause=0.01
        )
    assert (result, calls) == ("done", 3)
    assert [r.getMessage() for r in caplog.records] == [
        "step failed (1 in a row): broker down (1); trying again in 0.0s",
        "step failed (2 in a row): broker down (2); trying again in 0.0s",
    ]


async def test_an_error_not_listed_is_not_retried() -> None:
    async def step() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await retry_until_stopped("step", step, asyncio.Event(), (ConnectionError,), log)


async def test_a_stop_ends_the_pause_at_once() -> None:
    stop = asyncio.Event()

    async def step() -> None:
        raise ConnectionError("down")

    async def stop_soon() -> None:
        await asyncio.sleep(0.1)  # the pause is 30 s; the stop must cut it short
        stop.set()

    started = time.monotonic()
    stopper = asyncio.create_task(stop_soon())
    with pytest.raises(Stopped):
        await retry_until_stopped("step", step, stop, (ConnectionError,), log, first_pause=30)
    await stopper
    assert time.monotonic() - started < 5
