"""Validation of the warrior's fields, with the design's exact limits.

Each parser takes the raw JSON value (already decoded, any type) and returns the clean
value or raises `_Invalid` with a message; `commands.py` collects those into one
`InvalidCommand` naming every bad field.
"""

import re
import unicodedata
from collections.abc import Sequence
from datetime import date

NAME_MAX_LENGTH = 100
SKILL_MAX_LENGTH = 50
SKILLS_MAX_COUNT = 50

_DATE_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class Invalid(ValueError):
    """A field's value breaks a rule; the message says which."""


# Format characters (Unicode category Cf) draw nothing themselves. In a name or a skill
# they hide text: U+200B (zero width space), U+2060 (word joiner) or U+FEFF make
# "Mu\u200bsashi" look exactly like "Musashi" while comparing different (a look-alike
# warrior, a duplicate skill the duplicate check cannot see), the tag characters
# U+E0000..U+E007F carry whole invisible sentences, and the bidi controls (U+200E/F,
# U+202A..U+202E, U+2066..U+2069, U+061C) reorder what is shown ("ihsasuM" displayed as
# "Musashi"). So every Cf character is refused, with two exceptions where the character
# is something the reader sees rather than something hidden:
# - U+200C ZERO WIDTH NON-JOINER and U+200D ZERO WIDTH JOINER between two letters of a
#   script whose letters join or form conjuncts (the blocks from Arabic to Arabic
#   Extended-A: Arabic, Syriac, N'Ko and their neighbours; the Indic scripts from
#   Devanagari to Sinhala; Mongolian): there they change the shapes drawn and belong to
#   correct spelling (Persian writes many words and names with a ZWNJ inside, Hindi
#   chooses a conjunct's form with a ZWJ), so refusing them would refuse real names;
# - U+200D between two emoji: it draws them as one picture (a family, a rainbow flag, a
#   woman technologist), not the two apart.
# In Latin, Greek, Cyrillic or CJK text the joiners change nothing visible, so there
# (and at either end of the text) they are refused like the others. Flags spelled with
# tag characters (Scotland, Wales) are refused too: tags are the classic carrier of
# hidden text; the country flags (regional indicators, not Cf) remain.
_ZWNJ = "\u200c"
_ZWJ = "\u200d"
JOINING_SCRIPTS = (
    (0x0600, 0x08FF),  # Arabic to Arabic Extended-A
    (0x0900, 0x0DFF),  # Devanagari to Sinhala
    (0x1800, 0x18AF),  # Mongolian
)
# What may follow an emoji inside an emoji sequence before a ZWJ: the emoji
# presentation selector and the skin tones.
EMOJI_TRAILERS = frozenset("\ufe0f\U0001f3fb\U0001f3fc\U0001f3fd\U0001f3fe\U0001f3ff")
# Characters that print as nothing although they are not format characters: text made
# only of them (and of format characters and spaces) is blank. The Hangul fillers, the
# braille blank, the combining grapheme joiner and the variation selectors.
_BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u180b\u180c\u180d\u180f") | frozenset(
    chr(code) for code in [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)]
)


def _in_joining_script(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in JOINING_SCRIPTS)


def _is_emoji(ch: str) -> bool:
    # Emoji are symbols (So); Python's unicodedata has no Extended_Pictographic property.
    return unicodedata.category(ch) == "So"


def _visible_joiner(text: str, index: int) -> bool:
    """Whether the ZWNJ or ZWJ at `index` changes what is drawn (see above)."""
    if index == 0 or index == len(text) - 1:
        return False
    before, after = text[index - 1], text[index + 1]
    if _in_joining_script(before) and _in_joining_script(after):
        return True
    if text[index] != _ZWJ:
        return False
    start = index - 1
    while start > 0 and text[start] in EMOJI_TRAILERS:
        start -= 1
    return _is_emoji(text[start]) and _is_emoji(after)


def _blank_looking(ch: str) -> bool:
    return ch.isspace() or ch in _BLANK_LOOKING or unicodedata.category(ch) == "Cf"


def _hidden_character(text: str) -> str | None:
    """The first character that would hide or disguise text, as a message; None if none."""
    for index, ch in enumerate(text):
        category = unicodedata.category(ch)
        if category == "Cc":
            # NUL cannot be stored by PostgreSQL at all; other control characters in a
            # name or a skill are almost certainly a client bug.
            return "must not contain control characters"
        if category in ("Zl", "Zp"):
            return f"must not contain line or paragraph separators (U+{ord(ch):04X})"
        if category == "Cf" and not (ch in (_ZWNJ, _ZWJ) and _visible_joiner(text, index)):
            return f"must not contain invisible formatting characters (U+{ord(ch):04X})"
    return None


# Precomposed characters that NFC spells as two or three (Unicode's composition exclusions
# with a decomposition of several characters, and four combining marks): U+0958 DEVANAGARI
# LETTER QA is stored as U+0915 U+093C. Refused, naming the spelling to send instead, so
# that normalising never lengthens text: the limits count characters as sent (what an
# OpenAPI `maxLength` counts, so every validator built from the document agrees with the
# service), and what is stored is never longer. tests/unit/test_openapi_rules.py checks
# this list against Python's unicodedata.
EXPANDED_BY_NFC = frozenset(
    chr(code)
    for low, high in (
        (0x0344, 0x0344), (0x0958, 0x095F), (0x09DC, 0x09DD), (0x09DF, 0x09DF), (0x0A33, 0x0A33),
        (0x0A36, 0x0A36), (0x0A59, 0x0A5B), (0x0A5E, 0x0A5E), (0x0B5C, 0x0B5D), (0x0F43, 0x0F43),
        (0x0F4D, 0x0F4D), (0x0F52, 0x0F52), (0x0F57, 0x0F57), (0x0F5C, 0x0F5C), (0x0F69, 0x0F69),
        (0x0F73, 0x0F73), (0x0F75, 0x0F76), (0x0F78, 0x0F78), (0x0F81, 0x0F81), (0x0F93, 0x0F93),
        (0x0F9D, 0x0F9D), (0x0FA2, 0x0FA2), (0x0FA7, 0x0FA7), (0x0FAC, 0x0FAC), (0x0FB9, 0x0FB9),
        (0x2ADC, 0x2ADC), (0xFB1D, 0xFB1D), (0xFB1F, 0xFB1F), (0xFB2A, 0xFB36), (0xFB38, 0xFB3C),
        (0xFB3E, 0xFB3E), (0xFB40, 0xFB41), (0xFB43, 0xFB44), (0xFB46, 0xFB4E), (0x1D15E, 0x1D164),
        (0x1D1BB, 0x1D1C0),
    )
    for code in range(low, high + 1)
)  # fmt: skip


def _expanded_character(text: str) -> str | None:
    for ch in text:
        if ch in EXPANDED_BY_NFC:
            spelled = " ".join(f"U+{ord(part):04X}" for part in unicodedata.normalize("NFC", ch))
            return f"must not contain U+{ord(ch):04X} precomposed: send it as {spelled}"
    return None


def _clean_text(raw: object, what: str, max_length: int) -> str:
    """Trimmed and NFC-normalised (one spelling is stored); refused if blank, longer than
    `max_length` characters as sent (code points: an astral character, a surrogate pair in
    JSON, counts as one), or holding characters that hide or disguise text.

    Every rule is checked on the text as sent, not on its NFC form, so that the
    OpenAPI document's `maxLength` and `pattern` (api/command/openapi.py), which see only
    what is sent, state exactly what is accepted: normalising can reorder combining marks
    next to a joiner, and it never lengthens text that passed `_expanded_character`."""
    if not isinstance(raw, str):
        raise Invalid(f"{what} must be a string")
    if len(raw) > max_length:
        raise Invalid(f"{what} must be at most {max_length} characters (got {len(raw)})")
    # Control, format and separator characters all fail isprintable() (so do spaces other
    # than U+0020, which are allowed): only such text needs a look at each character. The
    # whole text is looked at, its ends too: str.strip() would trim "\n" or U+001F away,
    # which the document, like any client, sees as a control character sent.
    if not raw.isprintable():
        hidden = "must not contain control characters" if raw.isascii() else _hidden_character(raw)
        if hidden is not None:
            raise Invalid(f"{what} {hidden}")
    text = raw.strip()
    if not text:
        raise Invalid(f"{what} must not be blank")
    if text.isascii():  # the common case: NFC already
        return text
    if all(_blank_looking(ch) for ch in text):
        raise Invalid(f"{what} must not be blank (it has only invisible characters)")
    if (expanded := _expanded_character(text)) is not None:
        raise Invalid(f"{what} {expanded}")
    return unicodedata.normalize("NFC", text)


def parse_name(raw: object) -> str:
    """A name: a string of at most 100 characters, trimmed, NFC-normalised, nothing hidden."""
    return _clean_text(raw, "name", NAME_MAX_LENGTH)


def parse_dob(raw: object, today: date) -> date:
    """A date of birth: strictly `YYYY-MM-DD`, a real calendar date, not after `today`."""
    if not isinstance(raw, str):
        raise Invalid("dob must be a string in the form YYYY-MM-DD")
    if not _DATE_SHAPE.fullmatch(raw):
        raise Invalid("dob must be in the form YYYY-MM-DD")
    try:
        value = date.fromisoformat(raw)
    except ValueError:
        raise Invalid(f"dob {raw} is not a calendar date") from None
    if value > today:
        raise Invalid("dob must not be in the future")
    return value


def parse_skills(raw: object) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """Fight skills: null or a list of 0-50 strings, each of 1-50 characters as sent,
    trimmed, NFC-normalised, nothing hidden. A skill equal to an earlier one but for case
    or Unicode normalisation is the same skill and merged into it (the first spelling and
    place are kept): the list is a set, like the document's, which cannot say "unique
    ignoring case" (JSON Schema's `uniqueItems` compares exactly), so refusing such
    repeats would refuse requests the document allows.

    Returns the clean skills and a list of (index suffix, message) for bad items, so
    each bad item is named (`fight_skills[3]`). A wrong container type raises `Invalid`.
    """
    if raw is None:
        return (), []
    if not isinstance(raw, list):
        raise Invalid("fight_skills must be a list of strings or null")
    if len(raw) > SKILLS_MAX_COUNT:
        raise Invalid(f"fight_skills must have at most {SKILLS_MAX_COUNT} items (got {len(raw)})")
    return _clean_skill_items(raw)


def _clean_skill_items(raw: Sequence[object]) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    skills: list[str] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        try:
            skill = _clean_text(item, "a skill", SKILL_MAX_LENGTH)
        except Invalid as exc:
            problems.append((f"[{index}]", str(exc)))
            continue
        # Skills are NFC already; casefold() can undo that (U+01F0 "ǰ" folds to j + U+030C),
        # so the folded form is normalised again: skills equal but for case or for Unicode
        # normalisation are one skill.
        folded = skill.casefold() if skill.isascii() else unicodedata.normalize("NFC", skill.casefold())
        if folded not in seen:
            seen.add(folded)
            skills.append(skill)
    return tuple(skills), problems
