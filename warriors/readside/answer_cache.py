"""Recent answers of one worker process, kept a short time (micro-caching).

Searches repeat: under load the same common names and skills are asked for many times a
second, and each asks the database for the same rows. Within `seconds` of an answer, the
same question gets the same bytes; concurrent misses of one question wait for the first
one's answer instead of asking the database again (single flight). At most `entries`
answers are kept, the least recently used dropped first. A failed computation is never
kept: every waiter gets its error and the next question asks again.

What it costs: an answer can be up to `seconds` older than the read model (search is
eventually consistent anyway; a read with `?position=` bypasses the cache and waits for
the read model, see api/query/routes.py).
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable


class AnswerCache:
    def __init__(self, seconds: float, entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.entries = entries
        self._clock = clock
        self._answers: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[bytes]] = {}
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.seconds > 0 and self.entries > 0

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        """The answer to `key`: a recent one, the one being computed, or `compute()`'s."""
        if not self.enabled:
            return await compute()
        now = self._clock()
        if (kept := self._answers.get(key)) is not None:
            if kept[0] > now:
                self._answers.move_to_end(key)
                self.hits += 1
                return kept[1]
            del self._answers[key]
        if (pending := self._pending.get(key)) is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answer = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(answer)
            self._answers[key] = (self._clock() + self.seconds, answer)
            if len(self._answers) > self.entries:
                self._answers.popitem(last=False)
            return answer
        finally:
            del self._pending[key]
