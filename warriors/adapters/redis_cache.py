"""The Redis read models: a get-by-id cache and the warrior count.

Keys (all under `warriors:`):
- `warriors:w:<id>`: a cache entry, a hash: `v` (the version), `doc` (the warrior at that
  version, the Read API's JSON, served as it is; empty when changed at that version and
  not known yet) and `gone` (1: deleted at that version). Expires after the cache TTL.
- `warriors:versions`: hash id -> last version the projection applied (negative once
  deleted): what makes the projection's applies idempotent.
- `warriors:count`: the count of living warriors.
- `warriors:ready`: the cache is complete and current, so its entries and its count may
  be served. The projection sets it, with an expiry (CACHE_COUNT_FRESH_SECONDS), each time
  it is caught up with the store (since it started from position 0), and renews it while
  it stays caught up: during a replay (a flushed Redis: old versions, no tombstones yet)
  and once a projection stops, fails or falls behind, readers use PostgreSQL.
- `warriors:epoch`: set when the projection starts from position 0. A flushed Redis
  loses it, which tells the projection to replay (and the readers to use PostgreSQL).
- `warriors:rebuilding`: fed from Kafka, the cache is being rebuilt from the event store
  (the value: the rebuild's generation, `sink_rebuilds` in PostgreSQL), or a rebuild was
  left unfinished (its owner died): whatever the epoch says, the cache is partial. Set
  before the rebuild opens its epoch, removed only when its replay of the store finished;
  while it stands the cache cannot be marked ready (warriors/bus/consumer.py).
- `warriors:rebuilt`: the generation of the last rebuild whose replay finished here. A
  mark that arrives late (a member that asked for rebuild N, then stalled while another
  carried N out) is refused for a generation this old: set after the finish, nothing
  would ever remove it, and the cache would never be ready again.

Every write is a compare-and-set on the version, inside a Lua script (atomic in Redis):
a stale write (an older event redelivered, a read that raced a newer event) never
overwrites a newer entry.
"""

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

PREFIX = "warriors:"
VERSIONS = f"{PREFIX}versions"
COUNT = f"{PREFIX}count"
READY = f"{PREFIX}ready"
EPOCH = f"{PREFIX}epoch"
REBUILDING = f"{PREFIX}rebuilding"
REBUILT = f"{PREFIX}rebuilt"
BREAKER_SECONDS = 1.0

# KEYS: versions, count, entry. ARGV: id, version, kind (created|changed|deleted), doc JSON
# ('' when unknown), ttl seconds.
_APPLY = """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local v = tonumber(ARGV[2])
if math.abs(last) >= v then return 0 end
local alive = ARGV[3] ~= 'deleted'
redis.call('HSET', KEYS[1], ARGV[1], alive and v or -v)
if alive and last <= 0 then redis.call('INCR', KEYS[2])
elseif (not alive) and last > 0 then redis.call('DECR', KEYS[2]) end
local current = tonumber(redis.call('HGET', KEYS[3], 'v') or '0')
if current >= v then return 1 end
redis.call('HSET', KEYS[3], 'v', v, 'doc', alive and ARGV[4] or '', 'gone', alive and 0 or 1)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[5]))
return 1
"""

# KEYS: entry, versions. ARGV: version, doc JSON, ttl, id. A read fills the entry unless
# it holds a newer version or the same version already known (a document or a deletion),
# or the projection has applied a newer version (the read came from a lagging source).
_FILL = """
local v = tonumber(ARGV[1])
if math.abs(tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or '0')) > v then return 0 end
local current = redis.call('HMGET', KEYS[1], 'v', 'doc', 'gone')
local cv = tonumber(current[1] or '0')
if cv > v or (cv == v and ((current[2] or '') ~= '' or current[3] == '1')) then return 0 end
redis.call('HSET', KEYS[1], 'v', v, 'doc', ARGV[2], 'gone', 0)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# KEYS: ready, epoch, count, rebuilding. ARGV: how long it stands, in milliseconds. Ready
# only with the epoch and the count there and no rebuild under way (or left unfinished):
# checked here, atomically, not by the caller (a member's view of the rebuild may be a
# moment old while another member starts one).
_MARK_READY = """
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('EXISTS', KEYS[3]) == 1
   and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[1]))
end
"""

# KEYS: rebuilding, ready, rebuilt. ARGV: the rebuild's generation. Marked (and not ready)
# unless that generation's replay finished already or a later one is marked.
_BEGIN_REBUILD = """
local g = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[3]) or '0') >= g or tonumber(redis.call('GET', KEYS[1]) or '0') > g then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: rebuilding, epoch, rebuilt. ARGV: the rebuild's generation. The rebuild is over only
# if its epoch still stands (a flush in between lost what it wrote) and it is still the one
# marked; or it finished already (a member taking over a rebuild whose owner died between
# this and recording it complete) and nothing has been marked or flushed since.
_FINISH_REBUILD = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local marked = redis.call('GET', KEYS[1])
if marked == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[3], ARGV[1])
  return 1
end
if (not marked) and redis.call('GET', KEYS[3]) == ARGV[1] then return 1 end
return 0
"""


class CacheUnavailable(Exception):
    """Redis cannot be reached."""


@dataclass(frozen=True, slots=True)
class CacheEntry:
    version: int
    raw_document: bytes | None  # the Read API's JSON; None: deleted, or changed and not known yet
    gone: bool

    @property
    def document(self) -> dict[str, Any] | None:
        return orjson.loads(self.raw_document) if self.raw_document else None


@dataclass(frozen=True, slots=True)
class CacheWrite:
    warrior_id: UUID
    version: int
    kind: str  # created | changed | deleted
    document: dict[str, Any] | None


def entry_key(warrior_id: UUID) -> str:
    return f"{PREFIX}w:{warrior_id}"


class RedisReadModels:
    def __init__(self, url: str, ttl_seconds: int = 3600, count_fresh_seconds: float = 5.0) -> None:
        # Short timeouts, and after a failure no new attempt for a second (a circuit
        # breaker): with Redis down, readers answer from PostgreSQL without waiting on it.
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.ttl_seconds = ttl_seconds
        self.count_fresh_seconds = count_fresh_seconds
        self._down_until = 0.0
        self._apply = self.client.register_script(_APPLY)
        self._fill = self.client.register_script(_FILL)
        self._mark_ready = self.client.register_script(_MARK_READY)
        self._begin_rebuild = self.client.register_script(_BEGIN_REBUILD)
        self._finish_rebuild = self.client.register_script(_FINISH_REBUILD)

    @asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        """Redis errors -> CacheUnavailable (the callers decide: fall back, or retry later)."""
        if time.monotonic() < self._down_until:
            raise CacheUnavailable("redis: unreachable a moment ago; not retried yet")
        try:
            yield
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + BREAKER_SECONDS
            raise CacheUnavailable(f"redis: {exc}") from exc

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> None:
        async with self._translated():
            await self.client.ping()

    async def entry(self, warrior_id: UUID) -> CacheEntry | None:
        [entry] = await self.entries([warrior_id])
        return entry

    async def entries(
        self, warrior_ids: Sequence[UUID], *, to_serve: bool = False
    ) -> list[CacheEntry | None]:
        """Several entries in one round trip. `to_serve` (a reader's lookup): none while
        the cache is not ready (replaying, or its projection stopped or behind)."""
        async with self._translated(), self.client.pipeline(transaction=False) as pipe:
            if to_serve:
                pipe.exists(READY)
            for warrior_id in warrior_ids:
                pipe.hmget(entry_key(warrior_id), "v", "doc", "gone")
            rows = await pipe.execute()
        if to_serve and not rows.pop(0):
            return [None] * len(warrior_ids)
        return [
            CacheEntry(int(v), doc or None, gone == b"1") if v is not None else None for v, doc, gone in rows
        ]

    async def fill(self, warrior_id: UUID, version: int, document: bytes) -> None:
        """`document`: the warrior's JSON at `version`, as the Read API answers it."""
        async with self._translated():
            await self._fill(
                keys=[entry_key(warrior_id), VERSIONS],
                args=[version, document, self.ttl_seconds, str(warrior_id)],
            )

    async def apply(self, writes: Sequence[CacheWrite]) -> None:
        """The projection's writes, in stream order, in one round trip."""
        async with self._translated(), self.client.pipeline(transaction=False) as pipe:
            for w in writes:
                document = orjson.dumps(w.document) if w.document is not None else b""
                await self._apply(
                    keys=[VERSIONS, COUNT, entry_key(w.warrior_id)],
                    args=[str(w.warrior_id), w.version, w.kind, document, self.ttl_seconds],
                    client=pipe,
                )
            await pipe.execute()

    async def count(self) -> int | None:
        """The count, or None when it cannot be trusted (not caught up since a replay)."""
        async with self._translated():
            count, ready, epoch, rebuilding = await self.client.mget(COUNT, READY, EPOCH, REBUILDING)
        if count is None or ready is None or epoch is None or rebuilding is not None:
            return None
        return int(count)

    async def has_epoch(self) -> bool:
        async with self._translated():
            return bool(await self.client.exists(EPOCH))

    async def start_epoch(self) -> None:
        async with self._translated():
            await self.client.set(EPOCH, "1", nx=True)

    async def mark_count_ready(self) -> None:
        """Ready for the next `count_fresh_seconds`; only while the epoch stands: a flush in
        between must not make a partial count look ready."""
        async with self._translated():
            await self._mark_ready(
                keys=[READY, EPOCH, COUNT, REBUILDING], args=[round(self.count_fresh_seconds * 1000)]
            )

    async def begin_rebuild(self, generation: int) -> bool:
        """A rebuild from the event store starts (or is taken over): the cache is partial
        until `finish_rebuild`, and not ready from now on (one atomic step). Called before
        the rebuild opens its epoch, so that no moment has an epoch without this mark.
        False (nothing done): that generation finished already, or a later one is marked."""
        async with self._translated():
            return bool(await self._begin_rebuild(keys=[REBUILDING, READY, REBUILT], args=[str(generation)]))

    async def finish_rebuild(self, generation: int) -> bool:
        """The rebuild's replay of the store finished: the cache may be ready again. False
        when its epoch is gone or another rebuild is marked (Redis lost what the replay
        wrote): the rebuild must start over."""
        async with self._translated():
            return bool(await self._finish_rebuild(keys=[REBUILDING, EPOCH, REBUILT], args=[str(generation)]))

    async def clear(self) -> None:
        """Remove every key of the read models (a replay from position 0 follows): the
        readiness and the epoch first, so nothing partial is ever served."""
        async with self._translated():
            await self.client.delete(READY, EPOCH)
            async for keys in _batches(self.client.scan_iter(match=f"{PREFIX}*", count=1000)):
                await self.client.unlink(*keys)


async def _batches(keys: Any, size: int = 1000) -> Any:
    batch: list[bytes] = []
    async for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
