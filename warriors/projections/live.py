"""The live projector: keeps projections caught up by tailing the store.

It waits on `LISTEN event_store` (the command service notifies once per group-commit
flush) and also polls every `idle_seconds`, so a missed wake-up (or an event held back
by an older open transaction, see the gap-safe reader) costs at most that long. A dead
database is waited out with backoff; nothing is lost because checkpoints only move with
the rows.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from psycopg import AsyncConnection

from warriors.eventstore.errors import StoreUnavailable
from warriors.projections.base import ProjectionTargetUnavailable
from warriors.projections.engine import ProjectionEngine

log = logging.getLogger("warriors.projector")
CHANNEL = "event_store"


async def run_live(
    engines: Sequence[ProjectionEngine],
    database_url: str,
    stop: asyncio.Event,
    *,
    idle_seconds: float = 0.1,
) -> None:
    backoff = 0.1
    paused = _Pauses()
    while not stop.is_set():
        try:
            for engine in engines:  # inside the retry: a database still starting is waited out
                await engine.register()
            async with await AsyncConnection.connect(database_url, autocommit=True) as listener:
                await listener.execute(f"LISTEN {CHANNEL}")
                log.info("live projector listening; projections: %s", ", ".join(e.name for e in engines))
                backoff = 0.1
                while not stop.is_set():
                    busy = False
                    for engine in engines:
                        if paused.is_paused(engine.name):
                            continue
                        try:
                            result = await engine.run_batch()
                        except ProjectionTargetUnavailable as exc:  # this projection waits; the others go on
                            paused.pause(engine.name, exc)
                            continue
                        paused.resume(engine.name)
                        busy = busy or result.applied == engine.batch_size
                    if not busy:
                        await _wait_for_wakeup(listener, idle_seconds)
        except Exception as exc:  # a dead database, or a bug: keep the projector alive, say why
            if stop.is_set():
                break
            level = logging.WARNING if isinstance(exc, StoreUnavailable | OSError) else logging.ERROR
            log.log(level, "live projector: %r; retrying in %.1fs", exc, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(backoff * 2, 5.0)


class _Pauses:
    """Per projection: while its target (search engine, cache) is unreachable, it is
    skipped for a growing pause (0.2 s doubling to 5 s); its checkpoint stays where it was,
    so it resumes from there and catches up."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._pause: dict[str, float] = {}

    def is_paused(self, name: str) -> bool:
        return time.monotonic() < self._until.get(name, 0.0)

    def pause(self, name: str, exc: Exception) -> None:
        pause = min(self._pause.get(name, 0.1) * 2, 5.0)
        self._pause[name] = pause
        self._until[name] = time.monotonic() + pause
        log.warning("projection %s: target unavailable (%s); retrying in %.1fs", name, exc, pause)

    def resume(self, name: str) -> None:
        if self._pause.pop(name, None) is not None:
            log.info("projection %s: target reachable again, resuming from its checkpoint", name)
        self._until.pop(name, None)


async def _wait_for_wakeup(listener: AsyncConnection[object], seconds: float) -> None:
    async for _ in listener.notifies(timeout=seconds, stop_after=1):
        pass
