"""The worker's search vocabulary (warriors/readside/vocabulary.py): which terms it may
answer empty without the database. Pure code; its soundness against PostgreSQL's own
search is tests/test_search_vocabulary.py."""

from warriors.readside.search_terms import parse
from warriors.readside.vocabulary import Vocabulary

WORDS = ["musashi", "miyamoto", "katana", "bruce", "lee", "kick", "jeet", "kune", "do"]


def loaded(words: list[str] = WORDS) -> Vocabulary:
    vocabulary = Vocabulary()
    vocabulary.replace(words)
    vocabulary.ready = True
    return vocabulary


def test_a_word_of_the_vocabulary_may_match() -> None:
    assert loaded().might_match(parse("musashi"))
    assert loaded().might_match(parse("xqzv lee"))  # any word is enough


def test_typos_within_the_allowed_edits_and_the_same_first_letter_may_match() -> None:
    vocabulary = loaded()
    assert vocabulary.might_match(parse("musashy"))  # 1 edit of 7 letters (2 allowed)
    assert vocabulary.might_match(parse("mussshy"))  # 2 edits
    assert not vocabulary.might_match(parse("mxssshy"))  # 3 edits
    assert not vocabulary.might_match(parse("nusashi"))  # another first letter: the database's rule
    assert vocabulary.might_match(parse("brace"))  # 1 edit of 5 letters
    assert not vocabulary.might_match(parse("bracx"))  # 2 edits of 5 letters (1 allowed)
    assert not vocabulary.might_match(parse("le x"))  # 2 letters: no typos, and "x" is too short a prefix


def test_the_last_word_may_begin_a_word() -> None:
    vocabulary = loaded()
    assert vocabulary.might_match(parse("zzz miya"))
    assert not vocabulary.might_match(parse("miya zzz"))  # only the last word is a prefix
    vocabulary.add(["zzzebra"])
    assert vocabulary.might_match(parse("miya zzz"))


def test_synonyms_always_go_to_the_database() -> None:
    assert loaded([]).might_match(parse("blade"))  # finds a Katana warrior through its group


def test_random_letters_match_nothing() -> None:
    vocabulary = loaded()
    for term in ["xqzvbkwl", "qqqqq", "zxcvbnmasdfghjkl", "wq", "pt rk"]:
        assert not vocabulary.might_match(parse(term)), term


def test_until_loaded_every_term_may_match() -> None:
    vocabulary = Vocabulary()
    assert vocabulary.might_match(parse("xqzvbkwl"))
    vocabulary.replace(WORDS)
    assert vocabulary.might_match(parse("xqzvbkwl"))  # replaced, not yet marked ready
