"""The query side's reads, over the read models and (for consistency) the event store."""

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from warriors.adapters.redis_cache import CacheEntry, CacheUnavailable, RedisReadModels
from warriors.adapters.search_engine import SearchEngine, SearchRejected, SearchUnavailable
from warriors.application.warrior_commands import living, rebuild
from warriors.domain.events import plain_data
from warriors.eventstore.errors import translated_errors
from warriors.eventstore.grouping import Grouped
from warriors.eventstore.store import AggregateStream, EventStore
from warriors.projections.live import CHANNEL
from warriors.projections.parked import parked_events
from warriors.projections.read_model import READ_MODEL
from warriors.projections.search import SEARCH
from warriors.projections.status import ProjectionStatus, projection_statuses
from warriors.readside import search_index
from warriors.readside.search_index import MAX_RESULTS
from warriors.readside.search_terms import (
    MAX_COMPLETIONS,
    MAX_TYPOS,
    SearchTerms,
    TsQueries,
    fold_ascii,
    parse,
)
from warriors.readside.vocabulary import Vocabulary

MAX_SUGGESTIONS = 10


@dataclass(frozen=True, slots=True)
class WarriorView:
    id: UUID
    name: str
    dob: date
    fight_skills: list[str]
    version: int
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> "WarriorView":
        """From its JSON (`to_json`'s, as the cache keeps it)."""
        return cls(
            UUID(document["id"]), document["name"], date.fromisoformat(document["dob"]),
            document["fight_skills"], document["version"],
            datetime.fromisoformat(document["created_at"]), datetime.fromisoformat(document["updated_at"]),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """For orjson, which writes UUIDs, dates and times itself (ISO 8601)."""
        return {
            "id": self.id, "name": self.name, "dob": self.dob, "fight_skills": self.fight_skills,
            "version": self.version, "created_at": self.created_at, "updated_at": self.updated_at,
        }  # fmt: skip


class ReadModelBehind(Exception):
    """The read model did not reach the asked position in time."""


class UnknownPosition(Exception):
    """No event has the asked position."""


_COLUMNS = "id, name, dob, fight_skills, version, created_at, updated_at"

_BY_IDS = f"SELECT {_COLUMNS} FROM {READ_MODEL} WHERE id = ANY(%s)"


class GroupedLookup(Grouped[UUID, "tuple[Any, ...] | None"]):
    """Concurrent get-by-id requests of a worker, served by one `id = ANY(...)` query.

    Per-query costs (a round trip, a wake-up of a server process, the driver's send and
    wait) dominated get-by-id under load; grouping pays them once per group."""

    kind = "get_by_id"

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection], *, max_flushes: int = 1) -> None:
        super().__init__(max_batch=256, max_flushes=max_flushes)
        self._pool = pool

    async def get(self, warrior_id: UUID) -> "tuple[Any, ...] | None":
        return await self._submit(warrior_id)

    async def _execute(self, items: list[UUID]) -> "list[tuple[Any, ...] | None]":
        # Binary results and plain tuples: the cheapest way through the driver (measured).
        async with self._pool.connection() as conn, conn.cursor(binary=True) as cur:
            await cur.execute(_BY_IDS, (list(set(items)),), prepare=True)
            rows = {row[0]: row for row in await cur.fetchall()}
        return [rows.get(item) for item in items]


class GroupedCacheLookup(Grouped[UUID, CacheEntry | None]):
    """Concurrent cache reads of a worker, served by one Redis pipeline (HMGETs)."""

    kind = "cache_get"

    def __init__(self, cache: RedisReadModels) -> None:
        super().__init__(max_batch=256)
        self._cache = cache

    async def get(self, warrior_id: UUID) -> CacheEntry | None:
        return await self._submit(warrior_id)

    async def _execute(self, items: list[UUID]) -> list[CacheEntry | None]:
        return await self._cache.entries(items, to_serve=True)


_NEWEST = f"SELECT {_COLUMNS} FROM {READ_MODEL} ORDER BY created_at DESC, id DESC LIMIT %(limit)s"

# The vocabulary's words for a term: typos of its words (words with the same first letter,
# a length within the allowed edits, both from one index, and a Levenshtein distance
# within them; the closest few per word), and the words its last word begins (the first
# few in the index's order: bounded however short the prefix).
_VOCABULARY = f"""
SELECT w.word, t.word
FROM unnest(%(words)s::text[], %(edits)s::int[]) AS w(word, edits)
CROSS JOIN LATERAL (
    SELECT s.word FROM search_words s
    WHERE left(s.word, 1) = left(w.word, 1)
      AND length(s.word) BETWEEN length(w.word) - w.edits AND length(w.word) + w.edits
      AND s.word <> w.word
      AND levenshtein_less_equal(s.word, w.word, w.edits) <= w.edits
    ORDER BY levenshtein_less_equal(s.word, w.word, w.edits), s.word
    LIMIT {MAX_TYPOS}
) t
UNION ALL
(SELECT %(prefix)s, word FROM search_words WHERE word LIKE %(prefix)s || '%%'
 ORDER BY word LIMIT {MAX_COMPLETIONS})
"""

# Candidates first, each kind capped at 50 and taken straight from a GIN index: names
# holding every word (each with its typos, completions and synonyms), anything holding
# every word, names holding any word, anything holding any word. Only those (at most 200)
# are ranked: a match in the name first (3, and 3 more for the words as typed: exact
# before typos), then the text rank over name and skills (names weighted 3 to skills' 2,
# counted once more for the words as typed), which orders warriors matching more words
# first. A term of one word skips the "every word" kinds (the same rows). The queries
# come through `q` so that every plan is a bitmap index scan whatever the words: with
# them as constants the planner took a sequential scan "until 50 rows match" for words it
# guessed common, which read the whole table (20-60 ms) when they were not.
_RANK = "'{0.1, 0.2, 0.667, 1.0}'"
_CANDIDATES = {
    "every": f"""
    (SELECT id FROM {READ_MODEL}, q WHERE name_vector @@ q.every_word LIMIT 50)
    UNION (SELECT id FROM {READ_MODEL}, q WHERE search_vector @@ q.every_word LIMIT 50)
    UNION""",
    "any": f"""
    (SELECT id FROM {READ_MODEL}, q WHERE name_vector @@ q.any_word LIMIT 50)
    UNION (SELECT id FROM {READ_MODEL}, q WHERE search_vector @@ q.any_word LIMIT 50)""",
}


def _search(candidates: str) -> str:
    return f"""
WITH q AS (
    SELECT to_tsquery('simple', %(every_word)s) AS every_word, to_tsquery('simple', %(any_word)s) AS any_word,
           to_tsquery('simple', %(exact)s) AS exact
),
candidates AS ({candidates})
SELECT r.id, r.name, r.dob, r.fight_skills, r.version, r.created_at, r.updated_at
FROM {READ_MODEL} r JOIN candidates USING (id), q
ORDER BY 3 * (r.name_vector @@ q.any_word)::int + 3 * (r.name_vector @@ q.exact)::int
         + ts_rank({_RANK}, r.search_vector, q.any_word) + ts_rank({_RANK}, r.search_vector, q.exact) DESC,
         r.created_at DESC, r.id
LIMIT %(limit)s
"""


_SEARCH_ONE_WORD = _search(_CANDIDATES["any"])
_SEARCH_WORDS = _search(_CANDIDATES["every"] + _CANDIDATES["any"])

_SUGGEST = f"""
SELECT name FROM (
    SELECT DISTINCT ON (name_folded, name) name, name_folded FROM {READ_MODEL}
    WHERE name_folded LIKE %(prefix)s ESCAPE '\\'
    ORDER BY name_folded, name
    LIMIT 200
) AS matches
ORDER BY name_folded, name
LIMIT %(limit)s
"""

# NULL (not reached) while the projection has no checkpoint yet.
_FIRST_DELAY = 0.002
_WAKE_PROJECTORS = f"SELECT pg_notify('{CHANNEL}', '')"
_REACHED = """
SELECT coalesce((e.transaction_id, e.position) <= (o.last_transaction_id, o.last_position), false)
FROM event_store e
LEFT JOIN projection_offsets o ON o.projection_name = %(projection)s
WHERE e.position = %(position)s
"""

# Fed from Kafka, the read model has no single checkpoint (partitions move on their own):
# the event at a position is applied when its warrior's row has reached its version, or
# (a deletion, or an event followed by one) when the read model has applied a deletion at
# that version or later: not when the store merely holds one, which says nothing of
# whether the consumer has got that far.
_REACHED_BY_AGGREGATE = """
SELECT CASE
    WHEN r.version IS NOT NULL THEN r.version >= e.event_version
    ELSE EXISTS (SELECT 1 FROM read_model_deletions d
                 WHERE d.id = e.aggregate_id AND d.version >= e.event_version)
END
FROM event_store e LEFT JOIN warriors_read_model r ON r.id = e.aggregate_id
WHERE e.position = %(position)s
"""


# The event at a position: its warrior, its version, and the version of the warrior's
# deletion or erasure, if any.
_EVENT_AT = """
SELECT e.aggregate_id, e.event_version,
       (SELECT max(d.event_version) FROM event_store d
        WHERE d.aggregate_id = e.aggregate_id AND d.event_type IN ('WarriorDeleted', 'WarriorErased'))
FROM event_store e WHERE e.position = %(position)s
"""


class WarriorQueries:
    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection],
        store: EventStore,
        cache: RedisReadModels | None = None,
        search_engine: SearchEngine | None = None,
        *,
        fed_by_kafka: bool = False,
        vocabulary: Vocabulary | None = None,
    ) -> None:
        self.pool = pool
        self.store = store
        self.cache = cache
        self.search_engine = search_engine
        self.fed_by_kafka = fed_by_kafka
        self.vocabulary = vocabulary
        self._cached = GroupedCacheLookup(cache) if cache is not None else None
        self._lookup = GroupedLookup(pool)

    async def warrior(self, warrior_id: UUID, min_version: int | None = None) -> WarriorView | None:
        found = await self.warrior_json(warrior_id, min_version)
        return WarriorView.from_document(orjson.loads(found[0])) if found else None

    async def warrior_json(
        self, warrior_id: UUID, min_version: int | None = None
    ) -> tuple[bytes, int] | None:
        """(the warrior's JSON, its version): from the Redis cache when it has the warrior
        (at `min_version` or later), as stored; otherwise from PostgreSQL, and the cache is
        filled (a compare-and-set on the version: never over a newer entry). Redis down or
        flushed: PostgreSQL answers."""
        if self._cached is not None:
            with contextlib.suppress(CacheUnavailable):
                entry = await self._cached.get(warrior_id)
                if entry is not None and (min_version is None or entry.version >= min_version):
                    if entry.gone:
                        return None
                    if entry.raw_document is not None:
                        return entry.raw_document, entry.version
        warrior = await self._from_database(warrior_id, min_version)
        if warrior is None:
            return None
        document = orjson.dumps(warrior.to_json())
        if self.cache is not None:
            with contextlib.suppress(CacheUnavailable):
                await self.cache.fill(warrior_id, warrior.version, document)
        return document, warrior.version

    async def _from_database(self, warrior_id: UUID, min_version: int | None) -> WarriorView | None:
        """The read model's row, one primary-key lookup. When there is no row yet (a
        creation not projected yet) or it is older than `min_version`, the warrior is
        folded from its events instead, so following a command's Location always shows
        what the command wrote."""
        row = await self._lookup.get(warrior_id)
        if row is not None and (min_version is None or row[4] >= min_version):
            return WarriorView(*row)
        events = await self.store.aggregate_events(warrior_id)
        if not events:
            return None
        state = living(rebuild(warrior_id, AggregateStream.from_events(events)))
        if state is None:
            return None
        return WarriorView(state.warrior_id, state.name, state.dob, list(state.fight_skills), state.version,
                           events[0].created_at, events[-1].created_at)  # fmt: skip

    async def search(
        self,
        term: str | None,
        limit: int = MAX_RESULTS,
        *,
        recent: bool = True,
        after: tuple[int, float] | None = None,
    ) -> list[WarriorView]:
        """No term: the newest, from PostgreSQL. A term: from the search engine when one is
        configured (PostgreSQL while it is unreachable), from PostgreSQL otherwise; with
        `recent`, a term the worker's vocabulary says can match nothing is answered empty
        at once (the vocabulary may be milliseconds behind: not after a `?position=` wait).
        `after` (position, seconds): the caller waited for the index to apply that
        position; should the engine fail now, PostgreSQL answers only once its read model
        has applied it too (before, it answered from a read model nobody waited for)."""
        limit = min(limit, MAX_RESULTS)
        if term is None or not term.strip():
            return await self._rows(_NEWEST, {"limit": limit})
        if self.search_engine is not None:
            try:
                if not _has_word(term):
                    return []
                documents = await self.search_engine.search(search_index.search_body(term, limit))
                return [WarriorView.from_document(d) for d in documents]
            except (SearchUnavailable, SearchRejected):
                if after is not None:
                    await self.wait_for(*after)
        # Control characters never match a name, and PostgreSQL cannot take NUL at all.
        terms = parse(await self._fold("".join(ch for ch in term if ch.isprintable())))
        if terms.empty or (recent and self.vocabulary is not None and not self.vocabulary.might_match(terms)):
            return []
        with translated_errors():
            async with self.pool.connection() as conn:
                tsqueries = terms.queries(await self._vocabulary(conn, terms))
                # Warriors holding every word as typed first; typos (and, for several words,
                # warriors holding only some of them) only when those do not fill the page.
                found = await _ranked(conn, _SEARCH_ONE_WORD, tsqueries.every_exact, tsqueries, limit)
                if len(found) < limit and (tsqueries.has_typos or len(terms.words) > 1):
                    query = _SEARCH_WORDS if len(terms.words) > 1 else _SEARCH_ONE_WORD
                    found = await _ranked(conn, query, tsqueries.any_word, tsqueries, limit)
                return found

    @staticmethod
    async def _vocabulary(conn: AsyncConnection, terms: SearchTerms) -> dict[str, list[str]]:
        """For each word that may be a typo, the vocabulary's words close to it; for the
        last word if it is a prefix, the words it begins."""
        fuzzy = terms.fuzzy_words
        prefix = terms.prefix
        if not fuzzy and prefix is None:
            return {}
        cursor = await conn.execute(
            _VOCABULARY,
            {"words": [w.text for w in fuzzy], "edits": [w.edits for w in fuzzy], "prefix": prefix},
            prepare=True,
        )
        found: dict[str, list[str]] = {}
        for word, match in await cursor.fetchall():
            found.setdefault(word, []).append(match)
        return found

    async def search_engine_answers(self) -> bool:
        """A search engine is configured and reachable (one round trip)."""
        if self.search_engine is None:
            return False
        try:
            await self.search_engine.ping()
        except (SearchUnavailable, SearchRejected):
            return False
        return True

    async def suggest(self, prefix: str, limit: int = MAX_SUGGESTIONS) -> list[str]:
        if self.search_engine is not None:
            with contextlib.suppress(SearchUnavailable, SearchRejected):
                if not _has_word(prefix):
                    return []
                return await self.search_engine.suggest(search_index.suggest_body(prefix.strip(), limit))
        pattern = _escape_like(await self._fold(prefix.strip())) + "%"
        with translated_errors():
            async with self.pool.connection() as conn:
                cursor = await conn.execute(
                    _SUGGEST, {"prefix": pattern, "limit": min(limit, MAX_SUGGESTIONS)}
                )
                return [row[0] for row in await cursor.fetchall()]

    async def _fold(self, text: str) -> str:
        """Fold `text` like the indexed columns: ASCII here, anything else with the
        database's own `warriors_fold` (unaccent + lower), so a term and a name always fold
        alike (Python's Unicode decomposition differs for letters such as ø, ł or ß)."""
        if (folded := fold_ascii(text)) is not None:
            return folded
        with translated_errors():
            async with self.pool.connection() as conn:
                cursor = await conn.execute("SELECT warriors_fold(%s)", (text,))
                row = await cursor.fetchone()
        return str(row[0]) if row and row[0] is not None else ""

    async def count(self, *, cached: bool = True) -> int:
        """Redis' count when it is there and caught up (and `cached`); PostgreSQL's otherwise."""
        if cached and self.cache is not None:
            with contextlib.suppress(CacheUnavailable):
                counted = await self.cache.count()
                if counted is not None:
                    return counted
        with translated_errors():
            async with self.pool.connection() as conn:
                cursor = await conn.execute("SELECT total FROM warrior_count")
                row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def history(
        self, warrior_id: UUID, after_version: int, limit: int, *, request_metadata: bool
    ) -> list[dict[str, Any]] | None:
        """A page of the warrior's events after `after_version` (None: it never existed).
        Without `request_metadata`, the writers' IP address and user agent are left out."""
        events = await self.store.aggregate_events(warrior_id, after_version, limit)
        if not events and (after_version == 0 or not await self.store.aggregate_events(warrior_id, 0, 1)):
            return None
        return [
            {"version": e.event_version, "event_type": e.event_type, "event_id": str(e.event_id),
             "position": e.position, "created_at": e.created_at.isoformat(),
             "data": plain_data(e.event_type, e.data),
             "metadata": e.metadata if request_metadata else _without_request(e.metadata)}
            for e in events
        ]  # fmt: skip

    async def statistics(self) -> dict[str, Any]:
        """The live count, the materialized view's rows per day, and the daily statistics
        the Dagster asset `daily_warrior_statistics` computed (one entry per computed day)."""
        with translated_errors():
            async with self.pool.connection() as conn:
                view = await conn.execute(
                    "SELECT day, warriors_created, avg_skills FROM warrior_statistics ORDER BY day"
                )
                daily = await view.fetchall()
                computed = await conn.execute(_DAILY_STATISTICS)
                by_day = await computed.fetchall()
        return {
            "total": await self.count(),
            "daily": [
                {"day": day.isoformat(), "warriors_created": created, "avg_skills": _rounded(avg)}
                for day, created, avg in daily
            ],
            "by_day": [
                {
                    "day": day.isoformat(),
                    "warriors_created": created,
                    "avg_skills": _rounded(avg),
                    "skills": skills,
                    "ages": ages,
                }
                for day, created, avg, skills, ages in by_day
            ],
        }

    async def projections(self) -> list[dict[str, Any]]:
        """Each projection's checkpoint, status and live lag (events and seconds behind)."""
        return [status.as_json() for status in await self.statuses()]

    async def statuses(self) -> list[ProjectionStatus]:
        with translated_errors():
            async with self.pool.connection() as conn:
                return await projection_statuses(conn, kafka=self.fed_by_kafka)

    async def parked(self, projection: str, *, discarded: bool) -> list[dict[str, Any]]:
        """The projection's parked events (warriors/projections/parked.py), oldest first."""
        with translated_errors():
            async with self.pool.connection() as conn:
                return [
                    event.as_json() for event in await parked_events(conn, projection, discarded=discarded)
                ]

    async def wait_for(self, position: int, seconds: float, projection: str = READ_MODEL) -> None:
        """Return once `projection` has applied the event at `position`; bounded."""
        deadline = time.monotonic() + seconds
        delay = _FIRST_DELAY
        by_document = self.fed_by_kafka and projection == SEARCH
        woken = self.fed_by_kafka  # fed from Kafka there is no live projector to wake
        while True:
            with translated_errors():
                async with self.pool.connection() as conn:
                    if by_document:  # the index's own document tells
                        cursor = await conn.execute(_EVENT_AT, {"position": position})
                    elif self.fed_by_kafka:  # no global checkpoint: the event's own warrior tells
                        cursor = await conn.execute(_REACHED_BY_AGGREGATE, {"position": position})
                    else:
                        cursor = await conn.execute(
                            _REACHED, {"position": position, "projection": projection}
                        )
                    row = await cursor.fetchone()
                    reached = row is not None and not by_document and row[0]
                    if row is not None and not reached and not woken:
                        # Not there yet: wake the live projectors, on the connection at hand
                        # (creations projected inline send no wake-up of their own, and a
                        # projector between polls would answer within PROJECTOR_IDLE_SECONDS).
                        await conn.execute(_WAKE_PROJECTORS)
                        woken = True
            if row is None:
                raise UnknownPosition(f"no event has position {position}")
            if await self._indexed(*row) if by_document else row[0]:
                return
            if time.monotonic() >= deadline:
                raise ReadModelBehind(f"{projection} has not reached position {position} within {seconds}s")
            await asyncio.sleep(delay)  # polling the checkpoint, bounded by the deadline
            delay = min(delay * 2, 0.05)

    async def _indexed(self, warrior: UUID, version: int, deleted_at: int | None) -> bool:
        """The search index holds `warrior` at `version` or later, or has no document of it
        while the store shows it deleted at or after that version (as the read model's own
        check). Fed from Kafka the index has no checkpoint of its own in the store: before,
        the read model's row was looked at instead, and a search right after a 202 could
        miss the warrior while the index's consumer group was behind."""
        if self.search_engine is None:
            return True  # nothing to wait for: PostgreSQL answers
        try:
            found = await self.search_engine.documents([str(warrior)])
        except SearchUnavailable:
            return False  # not known now: asked again until the deadline
        document = found.get(str(warrior))
        if document is None:
            return deleted_at is not None and deleted_at >= version
        return int(document.get("version", 0)) >= version

    async def _rows(self, query: str, params: dict[str, Any]) -> list[WarriorView]:
        with translated_errors():
            async with self.pool.connection() as conn:
                cursor = await conn.execute(query, params)
                return [WarriorView(*row) for row in await cursor.fetchall()]


_DAILY_STATISTICS = """
SELECT c.day, c.warriors_created, c.avg_skills,
       coalesce((SELECT jsonb_agg(jsonb_build_object('skill', s.skill, 'warriors', s.warriors)
                                  ORDER BY s.warriors DESC, s.skill)
                 FROM daily_skill_popularity s WHERE s.day = c.day), '[]'),
       coalesce((SELECT jsonb_agg(jsonb_build_object('from', a.age_from, 'to', a.age_to,
                                                     'warriors', a.warriors) ORDER BY a.age_from)
                 FROM daily_age_distribution a WHERE a.day = c.day), '[]')
FROM daily_warrior_creations c
ORDER BY c.day
"""


async def _ranked(
    conn: AsyncConnection, query: str, any_word: str, tsqueries: TsQueries, limit: int
) -> list[WarriorView]:
    params = {
        "every_word": tsqueries.every_word,
        "any_word": any_word,
        "exact": tsqueries.exact,
        "limit": limit,
    }
    cursor = await conn.execute(query, params, prepare=True)
    return [WarriorView(*row) for row in await cursor.fetchall()]


def _has_word(text: str) -> bool:
    """A letter or a digit somewhere: a term without any finds nothing."""
    return any(ch.isalnum() for ch in text)


def _rounded(average: float | None) -> float | None:
    return round(average, 3) if average is not None else None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# What a request's metadata says about the person who sent it: shown to operators only.
REQUEST_METADATA = frozenset({"client_ip", "user_agent"})


def _without_request(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key not in REQUEST_METADATA}
