"""Search terms to full-text queries (pure code): only quoted words reach PostgreSQL,
whatever the input, and every term's work is bounded."""

import random
import re

from warriors.readside.search_terms import MAX_WORD_CHARS, MAX_WORDS, allowed_edits, fold_ascii, parse

# A tsquery text of quoted lexemes (letters and digits), operators and parentheses only.
_SAFE = re.compile(r"^(?:'[^\W_]+'|[ &|()<\->])*$")


def test_words_edits_and_the_prefix() -> None:
    terms = parse("miyamoto mu")
    assert [(w.text, w.edits, w.prefix) for w in terms.words] == [("miyamoto", 2, False), ("mu", 0, True)]
    assert terms.prefix == "mu"
    assert parse("a").prefix is None  # one letter stands for itself only
    assert [allowed_edits(w) for w in ("ab", "abc", "abcde", "abcdef")] == [0, 1, 1, 2]


def test_typos_and_completions_join_their_word() -> None:
    terms = parse("musashy ka")
    tsqueries = terms.queries({"musashy": ["musashi"], "ka": ["karate", "katana"]})
    assert tsqueries.every_word == "('musashy' | 'musashi') & ('ka' | 'karate' | 'katana')"
    assert tsqueries.any_word == "'musashy' | 'musashi' | 'ka' | 'karate' | 'katana'"
    assert tsqueries.exact == "'musashy' | 'ka' | 'karate' | 'katana'"  # completions, not typos


def test_synonyms_bring_their_group() -> None:
    assert parse("martial arts").queries({}).exact.endswith("('martial' <-> 'arts') | 'combat' | 'fighting'")
    blade = parse("blade").queries({})
    assert blade.every_word == "('blade' | 'sword' | 'katana')"
    assert blade.any_word == "'blade' | 'sword' | 'katana'"


def test_odd_terms_give_nothing_or_quoted_words() -> None:
    assert parse("%%%").empty
    tsqueries = parse("it's a 'blade' & (kick) | !x:*").queries({"kick": ["k'ick", "kicks"]})
    for text in (tsqueries.every_word, tsqueries.any_word, tsqueries.exact):
        assert _SAFE.fullmatch(text), text
    assert "k'ick" not in tsqueries.any_word  # a vocabulary word that is not a plain word is left out


def test_work_is_bounded() -> None:
    terms = parse(" ".join(["x" * 100] * 50))
    assert len(terms.words) == MAX_WORDS
    assert all(len(w.text) == MAX_WORD_CHARS for w in terms.words)


def test_any_text_gives_a_safe_query() -> None:
    rng = random.Random(10)
    alphabet = "aZ9 _'\"\\&|!():*<->%;-\t\u00e9\u00f8\u0416\u4e00\U0001f600\u200b"
    for _ in range(2000):
        terms = parse("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))).lower())
        if terms.empty:
            continue
        tsqueries = terms.queries({w.text: [w.text + "x"] for w in terms.words})
        for text in (tsqueries.every_word, tsqueries.any_word, tsqueries.exact):
            assert _SAFE.fullmatch(text), text


def test_ascii_folding_is_lower_case_and_other_text_goes_to_the_database() -> None:
    assert fold_ascii("MiYaMoTo 42") == "miyamoto 42"
    assert fold_ascii("José") is None
