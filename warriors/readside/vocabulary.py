"""The search vocabulary (`search_words`) held in each HTTP worker, so that a term that can
match nothing is answered empty without a database round trip (issue 24: the stress
test's searches are mostly random letters, each of which cost PostgreSQL two or three
statements to find nothing).

A term can only match a warrior through a vocabulary word: a word of the read model is
a lexeme of its `search_vector`, and every such lexeme is in `search_words` (the
projection writes both in one statement). So a term none of whose words is in the
vocabulary, nor within its allowed edits of a word there (same first letter, as the
database's lookup), nor (the last word) a prefix of one, and that names no synonym, finds
nothing: `might_match` says so, and the search answers `[]`.

Kept fresh by LISTEN: a statement trigger on `search_words` (sql/0018) notifies the words
each statement adds (in notices of under 8,000 bytes each); the worker LISTENs before it
loads the table, so nothing added in between is missed. Words the database forgets stay
here: an extra word only sends a term to the database, never answers one wrongly. A
notice reaches the worker a few milliseconds after the commit; a search without
`?position=` may already be up to SEARCH_CACHE_SECONDS old (the answer cache), and one
with it skips this check. Until the
words are loaded, or while the listening connection is down, every term goes to the
database, as before.

Levenshtein distances by rapidfuzz (C++, the same distance as PostgreSQL's
`levenshtein_less_equal`), rather than a Python loop per candidate.
"""

import asyncio
import bisect
import contextlib
import logging
from collections import defaultdict

import psycopg
from psycopg import sql
from rapidfuzz.distance import Levenshtein

from warriors.readside.search_terms import SearchTerms

log = logging.getLogger(__name__)

CHANNEL = "search_words"
APPLICATION_NAME = "warriors-vocabulary"  # what pg_stat_activity shows for the listener
_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


class Vocabulary:
    """The words of `search_words`, by first letter and length, and sorted (for prefixes)."""

    def __init__(self) -> None:
        self.ready = False
        self._words: set[str] = set()
        self._sorted: list[str] = []
        self._by_start: defaultdict[tuple[str, int], list[str]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self._words)

    def replace(self, words: list[str]) -> None:
        """The whole vocabulary at once: sorted in one go (adding each word with insort is
        quadratic: 5 s for 200,000 words, blocking the worker's event loop)."""
        self._words = {word for word in words if word}
        self._sorted = sorted(self._words)
        self._by_start = defaultdict(list)
        for word in self._sorted:
            self._by_start[(word[0], len(word))].append(word)

    def add(self, words: list[str]) -> None:
        for word in words:
            if word and word not in self._words:
                self._words.add(word)
                bisect.insort(self._sorted, word)
                self._by_start[(word[0], len(word))].append(word)

    def might_match(self, terms: SearchTerms) -> bool:
        """False only if `terms` can match no warrior (see the module's docstring); True
        while the vocabulary is not known."""
        if not self.ready or terms.synonyms:
            return True
        for word in terms.words:
            text = word.text
            if text in self._words or self._typo_of(text, word.edits):
                return True
        prefix = terms.prefix
        if prefix is not None:
            at = bisect.bisect_left(self._sorted, prefix)
            if at < len(self._sorted) and self._sorted[at].startswith(prefix):
                return True
        return False

    def _typo_of(self, text: str, edits: int) -> bool:
        for length in range(max(1, len(text) - edits), len(text) + edits + 1):
            for candidate in self._by_start.get((text[0], length), ()):
                if Levenshtein.distance(text, candidate, score_cutoff=edits) <= edits:
                    return True
        return False


class VocabularyListener:
    """Keeps a `Vocabulary` equal to (or larger than) `search_words`, on a connection of
    its own: LISTEN, load, then apply each notice; on any failure the vocabulary is
    marked not ready (every term goes to the database) and the connection is made again."""

    def __init__(self, database_url: str, vocabulary: Vocabulary) -> None:
        self._url = database_url
        self.vocabulary = vocabulary
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vocabulary-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()
            except Exception as exc:  # any failure: the database answers every term meanwhile
                self.vocabulary.ready = False
                delay = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
                failures += 1
                if failures == 1:
                    log.warning("search vocabulary: %s; searches go to the database until it is back", exc)
                await asyncio.sleep(delay)  # backoff before connecting again
            else:
                failures = 0

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, application_name=APPLICATION_NAME
        ) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            # Notices that arrive while the table is read wait in the connection's backlog:
            # notifies() hands them over first.
            await self._load(conn)
            async for notice in conn.notifies():
                self.vocabulary.add(notice.payload.split("\n"))

    async def _load(self, conn: psycopg.AsyncConnection) -> None:
        cursor = await conn.execute("SELECT word FROM search_words")
        self.vocabulary.replace([word for (word,) in await cursor.fetchall()])
        self.vocabulary.ready = True
        log.info(
            "search vocabulary: %d words loaded; terms matching none answer without a query",
            len(self.vocabulary),
        )
