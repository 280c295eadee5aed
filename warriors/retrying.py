"""Retrying a long-running process's step until it works or the process is stopped.

A broker not up yet, a coordinator moving, a seek or commit that fails: ordinary events
for a process that runs for weeks. The step is tried again with a growing pause (0.5 s
doubling to 30 s; back to 0.5 s after a step that ran a minute before failing), each
failure logged, and the pause ends at once when the process is asked to stop.
(tenacity and backoff retry too, but their pauses cannot be cut short by a stop event,
and a stopping process would sit out a 30 s pause.)
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_PAUSE_SECONDS = 0.5
MAX_PAUSE_SECONDS = 30.0
# A step that ran this long before it failed was healthy: the pauses start over.
HEALTHY_RUN_SECONDS = 60.0


class Stopped(Exception):
    """The process was stopped before the step succeeded."""


async def retry_until_stopped(
    what: str,
    step: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    retry_on: tuple[type[BaseException], ...],
    log: logging.Logger,
    *,
    first_pause: float = FIRST_PAUSE_SECONDS,
) -> T:
    """`step()`'s result; an exception of `retry_on` is logged and `step` tried again.
    Raises Stopped if `stop` is set first."""
    pause = first_pause
    failures = 0
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        try:
            return await step()
        except retry_on as exc:
            if loop.time() - started >= HEALTHY_RUN_SECONDS:
                pause, failures = first_pause, 0
            failures += 1
            log.warning("%s failed (%d in a row): %s; trying again in %.1fs", what, failures, exc, pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
            pause = min(pause * 2, MAX_PAUSE_SECONDS)
    raise Stopped(what)
