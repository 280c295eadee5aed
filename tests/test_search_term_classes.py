"""Search on 20,000 realistic warriors (tests/dataset.py), one test per class of term the
load profile sends (a common word, a rare word, a typo, random letters), on PostgreSQL
and on a real OpenSearch node: the answers are right, not only fast (bench/ measures
that). Each answer is checked against what the term means, not against a recorded list."""

import unicodedata
import uuid
from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from tests.conftest import database_of_its_own
from tests.dataset import created_events
from tests.history import Event, copy_events
from tests.support import fresh_search_engine
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.store import EventStore
from warriors.projections.engine import ProjectionEngine
from warriors.projections.read_model import WarriorsReadModel
from warriors.projections.search import WarriorsSearch
from warriors.readside.queries import WarriorQueries, WarriorView
from warriors.servers.opensearch_server import OpenSearchServer

WARRIORS = 20_000
# Known warriors among the generated ones; their surnames are in no word list.
KNOWN = [
    ("Tomoe Zanzibarova", ["Naginata", "Archery"]),
    ("Kick Quillfeather", ["Wrestling"]),  # "kick" in a name ranks above the many Kick skills
    ("Miyamoto Musashi Oyelaranski", ["Katana", "Niten Ichi-ryu"]),
]


def _fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))


def _words(warrior: WarriorView) -> set[str]:
    return set(_fold(" ".join([warrior.name, *warrior.fight_skills])).replace("-", " ").split())


def _within(word: str, term: str, edits: int) -> bool:
    """`word` is at most `edits` single-letter edits from `term` (Levenshtein)."""
    previous = list(range(len(term) + 1))
    for i, a in enumerate(word, 1):
        current = [i]
        for j, b in enumerate(term, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1] <= edits


@pytest.fixture(scope="module", params=["postgresql", "opensearch"])
async def queries(
    request: pytest.FixtureRequest, postgres: str, opensearch: OpenSearchServer
) -> AsyncIterator[WarriorQueries]:
    with database_of_its_own(postgres) as url:
        known: list[Event] = [
            (uuid.uuid4(), "WarriorCreated", 1, {"name": name, "dob": "1584-03-12", "fight_skills": skills})
            for name, skills in KNOWN
        ]
        half = WARRIORS // 2
        copy_events(url, [*created_events(half, seed=3), *known, *created_events(half, seed=4)])
        async with AsyncConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True}) as pool:
            engine = ProjectionEngine(pool, WarriorsReadModel(), 5000)
            await engine.register()
            assert await engine.catch_up() == WARRIORS + len(KNOWN)
            store = EventStore(pool, GroupCommitAppender(pool))
            if request.param == "postgresql":
                yield WarriorQueries(pool, store)
                return
            async with fresh_search_engine(opensearch) as search:
                indexing = ProjectionEngine(pool, WarriorsSearch(search, refresh=False), 5000)
                await indexing.register()
                assert await indexing.catch_up() == WARRIORS + len(KNOWN)
                await search.refresh()
                yield WarriorQueries(pool, store, search_engine=search)


async def test_a_common_word_fills_the_page_with_warriors_holding_it(queries: WarriorQueries) -> None:
    for term in ("judo", "Silva", "WANG"):
        found = await queries.search(term)
        assert len(found) == 50, term
        assert all(any(x.startswith(_fold(term)) for x in _words(w)) for w in found)
        assert len({w.id for w in found}) == 50


async def test_a_rare_word_finds_its_warrior_first(queries: WarriorQueries) -> None:
    assert [w.name for w in await queries.search("zanzibarova")] == ["Tomoe Zanzibarova"]
    assert (await queries.search("Oyelaranski musashi"))[0].name == "Miyamoto Musashi Oyelaranski"
    assert (await queries.search("quillfeather"))[0].name == "Kick Quillfeather"


async def test_a_typo_finds_the_word_it_misspells(queries: WarriorQueries) -> None:
    assert (await queries.search("zanzibarowa"))[0].name == "Tomoe Zanzibarova"  # one letter wrong
    assert (await queries.search("zanibarova"))[0].name == "Tomoe Zanzibarova"  # one letter missing
    found = await queries.search("jdo")  # judo, one letter missing
    assert len(found) == 50
    assert all(any(_within(word, "jdo", 1) for word in _words(w)) for w in found)
    assert any("Judo" in w.fight_skills for w in found)
    katana = await queries.search("katanna")  # one letter too many
    assert len(katana) == 50
    assert all("Katana" in w.fight_skills for w in katana)


async def test_random_letters_answer_quickly_with_nothing_or_close_words(queries: WarriorQueries) -> None:
    for term in ("xQzT pLmK wErT yUiO aSdF gHjK zXcV bNmQ", "Ab Cd Ef Gh Ij Kl Mn Op Qr St Uv Wx", "q" * 50):
        found = await queries.search(term)
        assert len(found) <= 50
        letters = [word for word in _fold(term).split()]
        for warrior in found:  # every answer shares a word (or a close one) with the term
            assert any(_within(x, t, 2) or x.startswith(t) for x in _words(warrior) for t in letters), warrior


async def test_synonyms_and_weights_hold_on_a_large_set(queries: WarriorQueries) -> None:
    found = await queries.search("blade")  # sword, blade, katana
    assert len(found) == 50
    assert all(_words(w) & {"sword", "blade", "katana"} for w in found)
    kick = await queries.search("kick")  # kick, strike, punch: the name first, then the skills
    assert kick[0].name == "Kick Quillfeather"
    assert all(any(x.startswith(("kick", "strike", "punch")) for x in _words(w)) for w in kick)
