"""The search contract, on the PostgreSQL read model (with and without the worker's
in-memory vocabulary) and on a real OpenSearch node (each with a database of its own)."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tests.support import fresh_search_engine, listening_vocabulary
from warriors.eventstore.appender import GroupCommitAppender
from warriors.eventstore.store import EventStore
from warriors.projections.engine import ProjectionEngine
from warriors.projections.read_model import WarriorsReadModel
from warriors.projections.search import WarriorsSearch
from warriors.readside.queries import WarriorQueries
from warriors.readside.search_terms import fold_ascii
from warriors.servers.opensearch_server import OpenSearchServer

WARRIORS = [
    ("José Aldo", ["Muay Thai"]),
    ("Miyamoto Musashi", ["Katana", "Calligraphy"]),
    ("Bruce Lee", ["Jeet Kune Do", "Kick"]),
    ("Kick Master", ["Wrestling"]),  # "kick" in the name: ranks above a skill match
    ("Chuck Norris", ["Combat"]),
    ("Ip Man", ["Wing Chun", "Fighting"]),
    ("Bjørn Ironside", ["Axe"]),  # ø folds to o in unaccent, not in Unicode decomposition
    ("Иван Грозный", ["Sabre"]),  # lower() must fold every script, not only ASCII
] + [(f"Filler {i:03d}", ["Boxing"]) for i in range(60)]


def insert_events(url: str) -> None:
    """The warriors as WarriorCreated events, one minute apart (the fillers newest)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with psycopg.connect(url) as conn:
        for i, (name, skills) in enumerate(WARRIORS):
            data = {"name": name, "dob": "1980-01-01", "fight_skills": skills}
            conn.execute(
                "INSERT INTO event_store (event_id, aggregate_id, aggregate_type, event_type, event_version,"
                " event_data, metadata, created_at)"
                " VALUES (%s, %s, 'Warrior', 'WarriorCreated', 1, %s, '{}', %s)",
                (uuid.uuid4(), uuid.uuid4(), orjson.dumps(data).decode(), start + timedelta(minutes=i)),
            )


@asynccontextmanager
async def projected_warriors(
    url: str,
) -> AsyncIterator[tuple[AsyncConnectionPool[AsyncConnection], ProjectionEngine, EventStore]]:
    """WARRIORS in the store of `url` and in its read model: a pool, the read model's
    projection engine (caught up) and the store."""
    insert_events(url)
    async with AsyncConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True}) as pool:
        engine = ProjectionEngine(pool, WarriorsReadModel())
        await engine.register()
        assert await engine.catch_up() == len(WARRIORS)
        yield pool, engine, EventStore(pool, GroupCommitAppender(pool))


@pytest.fixture(params=["postgresql", "postgresql-vocabulary", "opensearch"])
async def queries(
    request: pytest.FixtureRequest, fresh_database: str, opensearch: OpenSearchServer
) -> AsyncIterator[WarriorQueries]:
    """The same contract on both: PostgreSQL's search, and the search engine's."""
    async with projected_warriors(fresh_database) as (pool, _, store):
        if request.param == "postgresql":
            yield WarriorQueries(pool, store)
            return
        if request.param == "postgresql-vocabulary":  # terms matching no word answered in memory
            async with listening_vocabulary(fresh_database) as vocabulary:
                yield WarriorQueries(pool, store, vocabulary=vocabulary)
            return
        async with fresh_search_engine(opensearch) as search:
            indexing = ProjectionEngine(pool, WarriorsSearch(search))
            await indexing.register()
            assert await indexing.catch_up() == len(WARRIORS)
            yield WarriorQueries(pool, store, search_engine=search)


async def names(queries: WarriorQueries, term: str | None) -> list[str]:
    return [w.name for w in await queries.search(term)]


async def test_case_insensitive_and_accent_folding(queries: WarriorQueries) -> None:
    assert (await names(queries, "jose"))[0] == "José Aldo"
    assert (await names(queries, "JOSÉ"))[0] == "José Aldo"
    assert (await names(queries, "bRuCe"))[0] == "Bruce Lee"


async def test_folding_matches_the_database_for_every_letter(queries: WarriorQueries) -> None:
    assert (await names(queries, "bjorn"))[0] == "Bjørn Ironside"
    assert (await names(queries, "BJØRN"))[0] == "Bjørn Ironside"
    assert (await names(queries, "иван"))[0] == "Иван Грозный"
    assert await queries.suggest("bjø") == ["Bjørn Ironside"]
    assert await queries.suggest("ИВ") == ["Иван Грозный"]


async def test_fuzzy(queries: WarriorQueries) -> None:
    assert (await names(queries, "musashy"))[0] == "Miyamoto Musashi"
    assert "Chuck Norris" in await names(queries, "norriss")


async def test_synonyms(queries: WarriorQueries) -> None:
    assert "Miyamoto Musashi" in await names(queries, "blade")  # sword, blade, katana
    assert "Bruce Lee" in await names(queries, "punch")  # kick, strike, punch
    found = await names(queries, "martial arts")  # martial arts, combat, fighting
    assert {"Chuck Norris", "Ip Man"} <= set(found)


async def test_name_weighs_more_than_skills(queries: WarriorQueries) -> None:
    found = await names(queries, "kick")
    assert found.index("Kick Master") < found.index("Bruce Lee")


async def test_at_most_50_and_no_duplicates(queries: WarriorQueries) -> None:
    found = await queries.search("boxing")
    assert len(found) == 50
    assert len({w.id for w in found}) == 50


async def test_no_term_gives_the_50_newest(queries: WarriorQueries) -> None:
    newest = await names(queries, None)
    assert newest == [name for name, _ in reversed(WARRIORS)][:50]
    assert await names(queries, "   ") == newest


@pytest.mark.parametrize(
    "term", ["%", "'", '"', "''; DROP TABLE warriors_read_model; --", "x" * 1000, "!", ":*"]
)
async def test_odd_terms_are_safe(queries: WarriorQueries, term: str) -> None:
    assert len(await queries.search(term)) <= 50


async def test_suggest_prefix_case_insensitive(queries: WarriorQueries) -> None:
    assert await queries.suggest("mIy") == ["Miyamoto Musashi"]
    assert len(await queries.suggest("filler")) == 10
    assert await queries.suggest("jos") == ["José Aldo"]
    assert await queries.suggest("%") == []


async def test_ascii_terms_fold_here_as_the_database_folds_them(queries: WarriorQueries) -> None:
    """The query service folds ASCII terms itself (no round trip); the result must be what
    the indexed columns' `warriors_fold` gives, for every printable ASCII character."""
    text = "".join(chr(c) for c in range(32, 127))
    async with queries.pool.connection() as conn:
        cursor = await conn.execute("SELECT warriors_fold(%s)", (text,))
        row = await cursor.fetchone()
    assert row is not None
    assert fold_ascii(text) == row[0]


async def test_concurrent_gets_are_grouped_and_each_gets_its_own_row(queries: WarriorQueries) -> None:
    import asyncio

    newest = await queries.search(None)
    unknown = [uuid.uuid4() for _ in range(5)]
    wanted = [w.id for w in newest] + unknown
    found = await asyncio.gather(*(queries.warrior(wid) for wid in wanted))
    assert [w.id if w else None for w in found] == [w.id for w in newest] + [None] * 5
    assert [w.name for w in found if w] == [w.name for w in newest]
    assert max(queries._lookup.batch_sizes) > 1  # some round trips served several requests
