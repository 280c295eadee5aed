"""Turning a user's search term into a safe PostgreSQL full-text query. Pure code.

The term is folded the way the read model's columns are (lower case, accents removed),
split into words (anything else, such as `%` or quotes, is dropped), and each word that
belongs to a synonym group brings the whole group along. Words match as prefixes, so a
partly typed word still finds. The result only contains quoted lexemes and operators,
whatever the input.
"""

import re
import unicodedata
from dataclasses import dataclass

# The seed's synonym groups.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("martial arts", "combat", "fighting"),
    ("sword", "blade", "katana"),
    ("kick", "strike", "punch"),
)
MAX_WORDS = 12
MAX_FUZZY_CHARS = 100
_WORD = re.compile(r"[^\W_]+")  # letters and digits; PostgreSQL splits words at "_" too


def fold(text: str) -> str:
    """Lower case without accents: what `warriors_fold()` does in the database."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


@dataclass(frozen=True, slots=True)
class SearchTerms:
    tsquery: str  # empty when the term has no words
    fuzzy: str  # the folded term for trigram matching (bounded length)

    @property
    def empty(self) -> bool:
        return not self.tsquery


def parse(term: str) -> SearchTerms:
    folded = fold(term)
    words = _WORD.findall(folded)[:MAX_WORDS]
    alternatives: list[str] = [f"'{word}':*" for word in words]
    text = " ".join(words)
    for group in SYNONYMS:
        if any(re.search(rf"\b{re.escape(member)}\b", text) for member in group):
            alternatives += [_phrase(member) for member in group]
    unique = list(dict.fromkeys(alternatives))
    return SearchTerms(" | ".join(unique), " ".join(words)[:MAX_FUZZY_CHARS])


def _phrase(member: str) -> str:
    parts = member.split()
    return f"'{parts[0]}'" if len(parts) == 1 else "(" + " <-> ".join(f"'{p}'" for p in parts) + ")"
