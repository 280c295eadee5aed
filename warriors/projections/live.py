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
from collections.abc import Sequence

from psycopg import AsyncConnection

from warriors.eventstore.errors import StoreUnavailable
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
                        result = await engine.run_batch()
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


async def _wait_for_wakeup(listener: AsyncConnection[object], seconds: float) -> None:
    async for _ in listener.notifies(timeout=seconds, stop_after=1):
        pass
