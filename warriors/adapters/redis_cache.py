"""The Redis read models: a get-by-id cache and the warrior count.

Keys (all under `warriors:`):
- `warriors:w:<id>`: a cache entry, JSON `{"v": version, "doc": {...}}` (the warrior at
  that version), `{"v": version, "gone": true}` (deleted at that version) or
  `{"v": version}` (changed at that version, document not known yet). Expires after the
  cache TTL.
- `warriors:versions`: hash id -> last version the projection applied (negative once
  deleted): what makes the projection's applies idempotent.
- `warriors:count`, `warriors:count:ready`: the count of living warriors; only served
  once `ready` says the projection has reached the head of the store since it started
  from position 0.
- `warriors:epoch`: set when the projection starts from position 0. A flushed Redis
  loses it, which tells the projection to replay (and the readers to use PostgreSQL).

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
COUNT_READY = f"{PREFIX}count:ready"
EPOCH = f"{PREFIX}epoch"
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
local current = redis.call('GET', KEYS[3])
if current and cjson.decode(current)['v'] >= v then return 1 end
local entry
if not alive then entry = '{"v":' .. v .. ',"gone":true}'
elseif ARGV[4] ~= '' then entry = '{"v":' .. v .. ',"doc":' .. ARGV[4] .. '}'
else entry = '{"v":' .. v .. '}' end
redis.call('SET', KEYS[3], entry, 'EX', tonumber(ARGV[5]))
return 1
"""

# KEYS: entry. ARGV: version, doc JSON, ttl. A read fills the entry unless it holds a
# newer version, or the same version already known (a document or a deletion).
_FILL = """
local current = redis.call('GET', KEYS[1])
local v = tonumber(ARGV[1])
if current then
  local c = cjson.decode(current)
  if c['v'] > v or (c['v'] == v and (c['doc'] ~= nil or c['gone'] ~= nil)) then return 0 end
end
redis.call('SET', KEYS[1], '{"v":' .. v .. ',"doc":' .. ARGV[2] .. '}', 'EX', tonumber(ARGV[3]))
return 1
"""


class CacheUnavailable(Exception):
    """Redis cannot be reached."""


@dataclass(frozen=True, slots=True)
class CacheEntry:
    version: int
    document: dict[str, Any] | None  # None: deleted, or changed and not known yet
    gone: bool


@dataclass(frozen=True, slots=True)
class CacheWrite:
    warrior_id: UUID
    version: int
    kind: str  # created | changed | deleted
    document: dict[str, Any] | None


def entry_key(warrior_id: UUID) -> str:
    return f"{PREFIX}w:{warrior_id}"


class RedisReadModels:
    def __init__(self, url: str, ttl_seconds: int = 3600) -> None:
        # Short timeouts, and after a failure no new attempt for a second (a circuit
        # breaker): with Redis down, readers answer from PostgreSQL without waiting on it.
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.ttl_seconds = ttl_seconds
        self._down_until = 0.0
        self._apply = self.client.register_script(_APPLY)
        self._fill = self.client.register_script(_FILL)

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
        async with self._translated():
            raw = await self.client.get(entry_key(warrior_id))
        if raw is None:
            return None
        value = orjson.loads(raw)
        return CacheEntry(int(value["v"]), value.get("doc"), bool(value.get("gone")))

    async def fill(self, warrior_id: UUID, version: int, document: dict[str, Any]) -> None:
        async with self._translated():
            await self._fill(
                keys=[entry_key(warrior_id)], args=[version, orjson.dumps(document), self.ttl_seconds]
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
            count, ready = await self.client.mget(COUNT, COUNT_READY)
        return int(count or 0) if ready is not None else None

    async def has_epoch(self) -> bool:
        async with self._translated():
            return bool(await self.client.exists(EPOCH))

    async def start_epoch(self) -> None:
        async with self._translated():
            await self.client.set(EPOCH, "1", nx=True)

    async def mark_count_ready(self) -> None:
        async with self._translated():
            await self.client.set(COUNT_READY, "1")

    async def clear(self) -> None:
        """Remove every key of the read models (a replay from position 0 follows)."""
        async with self._translated():
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
