"""Grouping concurrent requests of one process into one database round trip.

While `max_flushes` flushes are in flight, new items wait in a queue; the next flush
takes all of them (up to `max_batch`). With little traffic every item is flushed at once
on its own, so nothing waits that would not have waited anyway; under load the groups
grow by themselves. The group-commit appender and the grouped get-by-id lookup are both
built on it.
"""

import asyncio
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Histogram

from warriors.eventstore.errors import translate

Item = TypeVar("Item")
Result = TypeVar("Result")

GROUP_SIZE = Histogram(
    "warriors_db_group_size",
    "Requests served by one database round trip, by kind",
    ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


@dataclass(slots=True)
class _Pending(Generic[Item, Result]):
    item: Item
    future: "asyncio.Future[Result]"


class Grouped(ABC, Generic[Item, Result]):
    kind = "unnamed"

    def __init__(self, *, max_batch: int = 256, max_flushes: int = 1) -> None:
        self._max_batch = max_batch
        self._max_flushes = max_flushes
        self._queue: list[_Pending[Item, Result]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self.batch_sizes: Counter[int] = Counter()
        self._size = GROUP_SIZE.labels(self.kind)

    @abstractmethod
    async def _execute(self, items: list[Item]) -> list[Result]:
        """One round trip for `items`; one result per item, in order."""

    async def _submit(self, item: Item) -> Result:
        """Queue `item` and wait for its result. The flush runs on even if the caller is
        cancelled (a client that hangs up does not undo a write in flight)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, future))
        self._start_flushes()
        return await asyncio.shield(future)

    async def drain(self) -> None:
        """Wait for every flush in flight (used at shutdown)."""
        while self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    def _start_flushes(self) -> None:
        while self._queue and len(self._flushes) < self._max_flushes:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            task = asyncio.create_task(self._flush(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flush_done)

    def _flush_done(self, task: "asyncio.Task[None]") -> None:
        self._flushes.discard(task)
        self._start_flushes()

    async def _flush(self, batch: list[_Pending[Item, Result]]) -> None:
        self.batch_sizes[len(batch)] += 1
        self._size.observe(len(batch))
        try:
            results = await self._execute([p.item for p in batch])
        except BaseException as exc:  # every waiter must hear about the failure
            error = translate(exc)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)
