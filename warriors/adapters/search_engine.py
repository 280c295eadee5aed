"""One small interface over Elasticsearch 8/9 (the `elasticsearch` client) and OpenSearch
2.x (the `opensearch-py` client), chosen by SEARCH_ENGINE. Both clients take the same
calls with the same bodies (`search_index.py` builds them); they differ in their
exception classes, which this module translates into its own.

Queries (`search`, `suggest`, `ping`) run on a short budget (`query_timeout_ms`, 300 ms by
default) behind a circuit breaker: a query that fails or runs out of time raises
`SearchUnavailable` (the caller answers from PostgreSQL), and for `breaker_seconds` after
it queries fail at once without asking the engine; then one query tries it again (the
others still fail at once until it answers). The projection's calls (writes, index and
alias management, refresh, count, documents) keep the long time-out and ignore the breaker.

The index sits behind the alias `warriors`; each generation is an index of its own
(`warriors-000001`, ...). A rebuild fills a new generation and moves the alias in one
atomic `_aliases` call.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from warriors.readside import search_index
from warriors.readside.search_index import ALIAS

QUERY_TIMEOUT_MS = 300
BREAKER_SECONDS = 1.0
WRITE_TIMEOUT_SECONDS = 10


class _OneLineFailures(logging.Filter):
    """opensearch-py logs every failed request at WARNING with the whole traceback of the
    connection error (some 60 lines, the same each time), so an engine that is down for a
    minute fills the projector's log. The line stays, at its level, with the exception's
    type and message in place of the traceback: nothing is hidden, only shortened. Records
    without an exception pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            record.msg = f"{record.getMessage()}: {reason[:300]}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_ONE_LINE_FAILURES = _OneLineFailures()


def _shorten_client_failures() -> None:
    """Once per process (adding the same filter again is a no-op)."""
    logging.getLogger("opensearch").addFilter(_ONE_LINE_FAILURES)


class EngineKind(StrEnum):
    OPENSEARCH = "opensearch"
    ELASTICSEARCH = "elasticsearch"


class SearchUnavailable(Exception):
    """The engine cannot be reached (or answers 5xx/429): try again later."""


class SearchRejected(Exception):
    """The engine refused a request for a reason retrying will not fix."""


@dataclass(frozen=True, slots=True)
class IndexAction:
    """A versioned write: the aggregate's version is the document's external version, so
    an older or repeated write is refused by the engine (never a regression)."""

    warrior_id: str
    version: int
    document: dict[str, Any] | None  # None: delete


class _Breaker:
    """After a failure, `seconds` of immediate refusals; then one call at a time tries
    (half-open) until one succeeds. `seconds` <= 0: never opens."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._down_until: float | None = None  # None: closed
        self._trying = False

    @property
    def open(self) -> bool:
        """Queries are refused without asking the engine."""
        return self._down_until is not None and (time.monotonic() < self._down_until or self._trying)

    def admit(self) -> bool:
        """False: a plain call (closed); True: this call is the one trying again. Raises
        `SearchUnavailable` while open."""
        if self._down_until is None:
            return False
        if self.open:
            raise SearchUnavailable("failed a moment ago; not retried yet")
        self._trying = True
        return True

    def succeeded(self, trial: bool) -> None:
        if trial:
            self._down_until = None
            self._trying = False

    def failed(self, trial: bool) -> None:
        if trial:
            self._trying = False
        if self.seconds > 0:
            self._down_until = time.monotonic() + self.seconds

    def abandoned(self, trial: bool) -> None:
        """The call ended without telling (cancelled): the next one tries instead."""
        if trial:
            self._trying = False


class SearchEngine:
    def __init__(
        self,
        url: str,
        kind: EngineKind = EngineKind.OPENSEARCH,
        *,
        shards: int = 1,
        replicas: int = 0,
        refresh_interval: str = "200ms",
        query_timeout_ms: int = QUERY_TIMEOUT_MS,
        breaker_seconds: float = BREAKER_SECONDS,
    ) -> None:
        self.kind = kind
        self.settings = search_index.index_settings(shards, replicas, refresh_interval)
        self.query_timeout = query_timeout_ms / 1000
        self._breaker = _Breaker(breaker_seconds)
        if kind is EngineKind.OPENSEARCH:
            import opensearchpy
            from opensearchpy import AsyncOpenSearch

            _shorten_client_failures()
            self.client: Any = AsyncOpenSearch(hosts=[url], timeout=WRITE_TIMEOUT_SECONDS)
            # opensearch-py takes a per-request `request_timeout` on every call.
            self._query_client: Any = self.client
            self._query_options: dict[str, Any] = {"request_timeout": self.query_timeout}
            self._unavailable: tuple[type[BaseException], ...] = (
                opensearchpy.ConnectionError, opensearchpy.ConnectionTimeout, OSError)  # fmt: skip
            self._timed_out: type[Exception] = opensearchpy.ConnectionTimeout
            self._api_error: type[Exception] = opensearchpy.TransportError
            self._not_found: type[Exception] = opensearchpy.NotFoundError
        else:
            import elasticsearch
            from elasticsearch import AsyncElasticsearch

            self.client = AsyncElasticsearch(url, request_timeout=WRITE_TIMEOUT_SECONDS)
            # elasticsearch 8/9: per-request options come from a view sharing the transport.
            self._query_client = self.client.options(request_timeout=self.query_timeout)
            self._query_options = {}
            self._unavailable = (elasticsearch.ConnectionError, elasticsearch.ConnectionTimeout, OSError)
            self._timed_out = elasticsearch.ConnectionTimeout
            self._api_error = elasticsearch.ApiError
            self._not_found = elasticsearch.NotFoundError

    async def close(self) -> None:
        await self.client.close()

    @property
    def breaker_open(self) -> bool:
        """Queries fail at once without asking the engine (a query failed a moment ago)."""
        return self._breaker.open

    @asynccontextmanager
    async def _query(self) -> AsyncIterator[None]:
        """A query's call: refused at once while the breaker is open; else bounded by the
        budget (`asyncio.timeout` around the client's call, which also has the budget as
        its own request time-out). Both clients' aiohttp transport closes the connection
        of a request cancelled mid-way, so a time-out leaves no half-read connection in the
        pool; the next query opens a fresh one."""
        try:
            trial = self._breaker.admit()
        except SearchUnavailable as exc:
            raise SearchUnavailable(f"{self.kind}: {exc}") from None
        try:
            async with self._translated():
                try:
                    async with asyncio.timeout(self.query_timeout):
                        yield
                except (TimeoutError, self._timed_out) as exc:
                    raise SearchUnavailable(
                        f"{self.kind}: no answer within {round(self.query_timeout * 1000)} ms"
                    ) from exc
        except SearchUnavailable:
            self._breaker.failed(trial)
            raise
        except SearchRejected:  # the engine answered: it is there
            self._breaker.succeeded(trial)
            raise
        except BaseException:
            self._breaker.abandoned(trial)
            raise
        self._breaker.succeeded(trial)

    @asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        try:
            yield
        except self._unavailable as exc:
            raise SearchUnavailable(f"{self.kind}: {exc}") from exc
        except self._api_error as exc:
            status = _status(exc)
            if (
                status is None or status >= 500 or status in (404, 429) or _blocked(exc)
            ):  # 404: no index (yet)
                raise SearchUnavailable(f"{self.kind}: {exc}") from exc
            raise SearchRejected(f"{self.kind}: {exc}") from exc

    async def ping(self) -> None:
        """A query (budget and breaker): is the engine there for searches?"""
        async with self._query():
            await self._query_client.info(**self._query_options)

    async def alias_target(self) -> str | None:
        """The index the alias points at; None before the first one exists."""
        async with self._translated():
            try:
                response = await self.client.indices.get_alias(name=ALIAS)
            except self._not_found:
                return None
        [index] = list(response.keys())
        return str(index)

    async def create_index(self, name: str) -> None:
        async with self._translated():
            await self.client.indices.create(
                index=name, body={"settings": self.settings, "mappings": search_index.MAPPINGS}
            )

    async def generations(self) -> list[str]:
        """Every index generation, behind the alias or not."""
        async with self._translated():
            existing = await self.client.indices.get(index=f"{search_index.INDEX_PREFIX}*")
        return sorted(existing)

    async def next_generation(self) -> str:
        """A name for a new index: one generation past every existing one."""
        generations = [search_index.generation_of(name) for name in await self.generations()]
        return search_index.index_name(max(generations, default=0) + 1)

    async def ensure_alias(self) -> str:
        """The alias' index, creating the first generation if there is none."""
        if (current := await self.alias_target()) is not None:
            return current
        first = await self.next_generation()
        await self.create_index(first)
        actions = [*await self._clear_the_name(), {"add": {"index": first, "alias": ALIAS}}]
        async with self._translated():
            await self.client.indices.update_aliases(body={"actions": actions})
        return first

    async def move_alias(self, to_index: str) -> str | None:
        """Point the alias at `to_index` in one atomic call; returns the index it left."""
        current = await self.alias_target()
        actions: list[dict[str, Any]] = [{"add": {"index": to_index, "alias": ALIAS}}]
        if current is not None and current != to_index:
            actions.insert(0, {"remove": {"index": current, "alias": ALIAS}})
        elif current is None:
            actions[:0] = await self._clear_the_name()
        async with self._translated():
            await self.client.indices.update_aliases(body={"actions": actions})
        return current if current != to_index else None

    async def _clear_the_name(self) -> list[dict[str, Any]]:
        """With the alias missing, an index may hold its name: a delete written through
        the missing alias creates one (the engine creates an index for it automatically;
        `require_alias` guards index operations only), and the alias can then never be
        added ("an index exists with the same name as the alias"). It holds nothing of
        the projection's: removed in the atomic call that adds the alias."""
        async with self._translated():
            taken = await self.client.indices.exists(index=ALIAS)
        return [{"remove_index": {"index": ALIAS}}] if taken else []

    async def delete_index(self, name: str) -> None:
        async with self._translated():
            try:
                await self.client.indices.delete(index=name)
            except self._not_found:
                return

    async def refresh(self, index: str = ALIAS) -> None:
        async with self._translated():
            await self.client.indices.refresh(index=index)

    async def write(self, index: str, actions: Sequence[IndexAction], *, refresh: bool) -> None:
        """Index or delete, each with its external version. A refusal for an older or the
        same version is the point of versioning (already there): not an error. With
        `refresh`, return once the writes are visible to searches."""
        if not actions:
            return
        operations: list[dict[str, Any]] = []
        for action in actions:
            meta = {"_index": index, "_id": action.warrior_id, "version": action.version,
                    "version_type": "external"}  # fmt: skip
            if action.document is None:
                operations.append({"delete": meta})
            else:
                operations += [{"index": meta}, action.document]
        async with self._translated():
            # Through the alias, require it: with the alias gone, a write must fail rather
            # than create a plain index named like it (which would block the alias for good).
            response = await self.client.bulk(
                body=operations,
                refresh="wait_for" if refresh else "false",
                **({"require_alias": "true"} if index == ALIAS else {}),
            )
        if not response["errors"]:
            return
        failures = []
        for item in response["items"]:
            [(_, result)] = item.items()
            status, error = result.get("status", 0), result.get("error")
            # 409: not newer; 404 without an error: deleting what is not there.
            if status < 300 or status == 409 or (status == 404 and error is None):
                continue
            failures.append((status, error))
        # An index gone (404 index_not_found_exception: the alias was removed) is an engine
        # that cannot take the writes now, not a refusal of these documents.
        if any(
            status >= 500 or status == 429 or _blocked(error) or _no_index(error)
            for status, error in failures
        ):
            raise SearchUnavailable(f"{self.kind}: bulk write failed: {failures[:3]}")
        if failures:
            raise SearchRejected(f"{self.kind}: bulk write refused: {failures[:3]}")

    async def search(self, body: dict[str, Any], index: str = ALIAS) -> list[dict[str, Any]]:
        async with self._query():
            response = await self._query_client.search(index=index, body=body, **self._query_options)
        return [hit["_source"] for hit in response["hits"]["hits"]]

    async def suggest(self, body: dict[str, Any]) -> list[str]:
        async with self._query():
            response = await self._query_client.search(index=ALIAS, body=body, **self._query_options)
        return search_index.suggestions(dict(response))

    async def count(self, index: str = ALIAS) -> int:
        async with self._translated():
            response = await self.client.count(index=index)
        return int(response["count"])

    async def documents(self, ids: Sequence[str], index: str = ALIAS) -> dict[str, dict[str, Any]]:
        """The documents with these ids, with their versions (as `version`)."""
        if not ids:
            return {}
        async with self._translated():
            response = await self.client.mget(index=index, body={"ids": list(ids)})
        return {doc["_id"]: doc["_source"] for doc in response["docs"] if doc.get("found")}


def _blocked(error: object) -> bool:
    """A block on the index or the cluster (`index.blocks.write`, read-only past the disk's
    flood stage): the engine is not taking writes for now, which says nothing about the
    document. Waited out like an engine that is down, never parked as a poison event."""
    return "cluster_block_exception" in str(error)


def _no_index(error: object) -> bool:
    """The write's index (or the alias it went through) does not exist."""
    return "index_not_found_exception" in str(error)


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        meta = getattr(exc, "meta", None)
        status = getattr(meta, "status", None)
    return status if isinstance(status, int) else None
