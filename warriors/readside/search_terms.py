"""Turning a user's search term into a safe PostgreSQL full-text query. Pure code.

The term arrives folded by the database's own `warriors_fold()` (the function the
indexed columns use; see `WarriorQueries._fold`). It is split into words (anything else,
such as `%` or quotes, is dropped), and each word that belongs to a synonym group brings
the whole group along. Words match as prefixes, so a partly typed word still finds. The
result only contains quoted lexemes and operators, whatever the input.
"""

import re
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


@dataclass(frozen=True, slots=True)
class SearchTerms:
    tsquery: str  # empty when the term has no words
    name_tsquery: str  # the same, restricted to the name's lexemes (weight A)
    fuzzy: str  # the folded term for trigram matching (bounded length)

    @property
    def empty(self) -> bool:
        return not self.tsquery


def parse(folded: str) -> SearchTerms:
    """Search terms from an already folded term (lower case, accents removed)."""
    words = _WORD.findall(folded)[:MAX_WORDS]
    text = " ".join(words)
    synonyms = [member for group in SYNONYMS if any(re.search(rf"\b{re.escape(m)}\b", text) for m in group)
                for member in group]  # fmt: skip

    def alternatives(weight: str) -> str:
        terms = [f"'{word}':*{weight}" for word in words] + [_phrase(member, weight) for member in synonyms]
        return " | ".join(dict.fromkeys(terms))

    return SearchTerms(alternatives(""), alternatives("A"), text[:MAX_FUZZY_CHARS])


def _phrase(member: str, weight: str) -> str:
    label = f":{weight}" if weight else ""
    parts = [f"'{part}'{label}" for part in member.split()]
    return parts[0] if len(parts) == 1 else "(" + " <-> ".join(parts) + ")"
