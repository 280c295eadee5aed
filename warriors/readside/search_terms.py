"""Turning a user's search term into safe PostgreSQL full-text queries. Pure code.

The term arrives folded like the indexed columns (lower case, accents removed; see
`fold_ascii` and `WarriorQueries._fold`). It is split into words (anything else, such as
`%` or quotes, is dropped); at most MAX_WORDS words of at most MAX_WORD_CHARS letters are
kept, which bounds the work of any term however long or odd. Each word:

* matches itself;
* may be a typo: words of the read model's vocabulary (`search_words`) within a few edits
  (Levenshtein; like the search engines' "AUTO" fuzziness: none up to 2 letters, 1 up to
  5, 2 beyond) that start with the same letter match too. The caller looks them up
  (`fuzzy_words`) and hands them to `queries`;
* if it is the last word, with at least 2 letters, it is still being typed: it also
  matches the vocabulary's words it begins, the first MAX_COMPLETIONS of them (only the
  last one, as the engines' `bool_prefix` does: a prefix of every word of a random string
  would expand to half the vocabulary);
* if it belongs to a synonym group (the seed's three), brings the whole group along.

The results only contain quoted lexemes and operators, whatever the input.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# The seed's synonym groups.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("martial arts", "combat", "fighting"),
    ("sword", "blade", "katana"),
    ("kick", "strike", "punch"),
)
MAX_WORDS = 8
MAX_WORD_CHARS = 40
MIN_PREFIX_CHARS = 2
MAX_COMPLETIONS = 20  # vocabulary words a last word's prefix stands for
MAX_TYPOS = 10  # vocabulary words a word's typos stand for
_WORD = re.compile(r"[^\W_]+")  # letters and digits; PostgreSQL splits words at "_" too


def fold_ascii(term: str) -> str | None:
    """The folding of an ASCII term (lower case: `unaccent` changes no ASCII letter); None
    for any other term, which the database folds (its rules for ø, ł or ß differ from
    Python's Unicode decomposition)."""
    return term.lower() if term.isascii() else None


def allowed_edits(word: str) -> int:
    """How many letters a typo of `word` may get wrong."""
    return 0 if len(word) <= 2 else 1 if len(word) <= 5 else 2


@dataclass(frozen=True, slots=True)
class TermWord:
    text: str
    edits: int  # letters a typo may get wrong (0: exact only)
    prefix: bool  # the last word, being typed: also matches the words it begins


@dataclass(frozen=True, slots=True)
class TsQueries:
    """`to_tsquery('simple', ...)` texts. Exact means the words as typed, with the words a
    prefix begins and the synonyms, without typos."""

    every_exact: str  # every word, exactly
    every_word: str  # every word, each also as its typos
    any_word: str  # any word or its typos
    exact: str  # any word exactly (for ranking exact matches above typos)
    has_typos: bool  # typos add something to the exact queries


@dataclass(frozen=True, slots=True)
class SearchTerms:
    words: tuple[TermWord, ...]
    synonyms: tuple[str, ...]  # every member of the synonym groups the term names

    @property
    def empty(self) -> bool:
        return not self.words

    @property
    def fuzzy_words(self) -> list[TermWord]:
        """The words whose typos are worth a look in the vocabulary."""
        return [word for word in self.words if word.edits]

    @property
    def prefix(self) -> str | None:
        """The last word, when it is long enough to stand for the words it begins."""
        return self.words[-1].text if self.words and self.words[-1].prefix else None

    def queries(self, vocabulary: Mapping[str, Sequence[str]]) -> TsQueries:
        """`vocabulary`: for a word's text, the vocabulary's words within its allowed
        edits and, for the prefix, the words it begins."""
        exact: list[list[str]] = []
        fuzzy: list[list[str]] = []
        for word in self.words:
            found = [w for w in vocabulary.get(word.text, ()) if _WORD.fullmatch(w)]
            completions = [w for w in found if word.prefix and w.startswith(word.text)]
            group = next((g for g in SYNONYMS if word.text in g), ())
            exact.append(_distinct(_lexeme(w) for w in (word.text, *completions, *group)))
            fuzzy.append(_distinct([*exact[-1], *(_lexeme(w) for w in found)]))
        synonyms = [_lexeme(member) for member in self.synonyms]
        return TsQueries(
            every_exact=_every(exact),
            every_word=_every(fuzzy),
            any_word=" | ".join(_distinct([*(a for word in fuzzy for a in word), *synonyms])),
            exact=" | ".join(_distinct([*(a for word in exact for a in word), *synonyms])),
            has_typos=fuzzy != exact,
        )


def parse(folded: str) -> SearchTerms:
    """Search terms from an already folded term (lower case, accents removed)."""
    texts = [word[:MAX_WORD_CHARS] for word in _WORD.findall(folded)[:MAX_WORDS]]
    last = len(texts) - 1
    words = tuple(
        TermWord(text, allowed_edits(text), i == last and len(text) >= MIN_PREFIX_CHARS)
        for i, text in enumerate(texts)
    )
    joined = " ".join(texts)
    synonyms = tuple(
        member for group in SYNONYMS if any(re.search(rf"\b{re.escape(m)}\b", joined) for m in group)
        for member in group
    )  # fmt: skip
    return SearchTerms(words, synonyms)


def _distinct(lexemes: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(lexemes))


def _every(per_word: list[list[str]]) -> str:
    return " & ".join(f"({' | '.join(alternatives)})" for alternatives in per_word)


def _lexeme(text: str) -> str:
    """A quoted lexeme, or a phrase of them (`martial arts`); `text` holds only letters,
    digits and spaces, so the quotes cannot be broken out of."""
    parts = [f"'{part}'" for part in text.split()]
    return parts[0] if len(parts) == 1 else "(" + " <-> ".join(parts) + ")"
