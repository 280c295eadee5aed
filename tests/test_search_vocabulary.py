"""The worker's in-memory search vocabulary against the real PostgreSQL search
(warriors/readside/vocabulary.py): a term it answers empty is one the database finds
nothing for (soundness, over a seeded spread of terms), it learns new words by LISTEN
within moments of their commit, also past a notice's size (several notices), and after its
connection is killed it reconnects and reads the table again, missing nothing."""

import random
import string
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import psycopg
import pytest

from tests.support import listening_vocabulary, until
from tests.test_search import WARRIORS, projected_warriors
from warriors.projections.engine import ProjectionEngine
from warriors.readside.queries import WarriorQueries
from warriors.readside.search_terms import parse
from warriors.readside.vocabulary import APPLICATION_NAME, Vocabulary


@dataclass
class Searches:
    url: str
    engine: ProjectionEngine
    vocabulary: Vocabulary
    fast: WarriorQueries  # with the vocabulary
    plain: WarriorQueries  # every term to the database


@pytest.fixture
async def searches(fresh_database: str) -> AsyncIterator[Searches]:
    async with (
        projected_warriors(fresh_database) as (pool, engine, store),
        listening_vocabulary(fresh_database) as vocabulary,
    ):
        fast = WarriorQueries(pool, store, vocabulary=vocabulary)
        yield Searches(fresh_database, engine, vocabulary, fast, WarriorQueries(pool, store))


def add_warriors(url: str, names: list[str]) -> None:
    with psycopg.connect(url) as conn:
        for name in names:
            data = {"name": name, "dob": "1980-01-01", "fight_skills": ["Sambo"]}
            conn.execute(
                "INSERT INTO event_store (event_id, aggregate_id, aggregate_type, event_type, event_version,"
                " event_data, metadata) VALUES (%s, %s, 'Warrior', 'WarriorCreated', 1, %s, '{}')",
                (uuid.uuid4(), uuid.uuid4(), orjson.dumps(data).decode()),
            )


def spread_of_terms(seed: int, count: int) -> list[str]:
    """Random letters (the stress test's searches), real words and prefixes of them, typos
    of them (letters dropped, swapped, replaced, added), several words, other scripts."""
    rng = random.Random(seed)
    words = sorted({w for name, skills in WARRIORS for w in " ".join([name, *skills]).split()})
    terms = []
    for _ in range(count):
        word = rng.choice(words)
        kind = rng.randrange(6)
        if kind == 0:
            term = "".join(rng.choices(string.ascii_letters, k=rng.randint(1, 50)))
        elif kind == 1:
            term = word[: rng.randint(1, len(word))]
        elif kind == 2:
            at = rng.randrange(len(word))
            typo = rng.choice([word[:at] + word[at + 1 :], word[:at] + rng.choice("aeiouxz") + word[at + 1 :],
                               word[:at] + rng.choice("aeiouxz") + word[at:]])  # fmt: skip
            term = typo.upper() if rng.random() < 0.2 else typo
        elif kind == 3:
            term = f"{rng.choice(words)} {''.join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9)))}"
        elif kind == 4:
            term = "".join(rng.choices("абвгдежзийклмнопрстуфхцчшщыэюяøłßéü", k=rng.randint(1, 12)))
        else:
            term = word
        terms.append(term)
    return terms


async def test_a_term_it_answers_empty_is_one_the_database_finds_nothing_for(searches: Searches) -> None:
    answered_in_memory = 0
    for term in spread_of_terms(seed=20261207, count=1200):
        fast = [w.id for w in await searches.fast.search(term)]
        plain = [w.id for w in await searches.plain.search(term)]
        assert fast == plain, term
        answered_in_memory += not searches.vocabulary.might_match(parse(term.lower()))
    # The point of it: most random-letter terms (a sixth of the spread) never reach the database.
    assert answered_in_memory > 150


async def test_new_words_are_learned_by_listening(searches: Searches) -> None:
    assert not searches.vocabulary.might_match(parse("zyxwvut"))
    add_warriors(searches.url, ["Zyxwvut Qponmlk"])
    assert await searches.engine.catch_up() == 1
    await until(lambda: searches.vocabulary.might_match(parse("zyxwvut")), within=10, what="the new word")
    assert [w.name for w in await searches.fast.search("qponmlk")] == ["Zyxwvut Qponmlk"]


async def test_words_past_a_notice_size_arrive_in_several(searches: Searches) -> None:
    names = [f"Warrior{n:04d}abcdefghijkl Surname{n:04d}mnopqrstuv" for n in range(400)]  # ~20 KB of words
    add_warriors(searches.url, names)
    assert await searches.engine.catch_up() == len(names)
    await until(lambda: len(searches.vocabulary) >= 800, within=10, what="every new word")
    assert searches.vocabulary.might_match(parse("surname0399mnopqrstuv"))


async def test_a_killed_listening_connection_is_made_again_missing_nothing(searches: Searches) -> None:
    with psycopg.connect(searches.url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (APPLICATION_NAME,),
        ).fetchone()
    assert killed == (1,)
    # A word committed while the listener is down (or before it noticed) is not lost.
    add_warriors(searches.url, ["Downtime Xylophonist"])
    assert await searches.engine.catch_up() == 1
    await until(
        lambda: searches.vocabulary.ready and searches.vocabulary.might_match(parse("xylophonist")),
        within=15, what="the listener back, with the word added while it was down",
    )  # fmt: skip
