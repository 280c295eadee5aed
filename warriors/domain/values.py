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
_JOINING_SCRIPTS = (
    (0x0600, 0x08FF),  # Arabic to Arabic Extended-A
    (0x0900, 0x0DFF),  # Devanagari to Sinhala
    (0x1800, 0x18AF),  # Mongolian
)
# What may follow an emoji inside an emoji sequence before a ZWJ: the emoji
# presentation selector and the skin tones.
_EMOJI_TRAILERS = frozenset("\ufe0f\U0001f3fb\U0001f3fc\U0001f3fd\U0001f3fe\U0001f3ff")
# Characters that print as nothing although they are not format characters: text made
# only of them (and of format characters and spaces) is blank. The Hangul fillers, the
# braille blank, the combining grapheme joiner and the variation selectors.
_BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u180b\u180c\u180d\u180f") | frozenset(
    chr(code) for code in [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)]
)


def _in_joining_script(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in _JOINING_SCRIPTS)


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
    while start > 0 and text[start] in _EMOJI_TRAILERS:
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


def _clean_text(raw: object, what: str, max_length: int) -> str:
    """Trimmed and NFC-normalised (one spelling is stored, and the limit counts what the
    text is made of, not how a keyboard composed it); refused if blank, too long, or
    holding characters that hide or disguise text."""
    if not isinstance(raw, str):
        raise Invalid(f"{what} must be a string")
    ascii_only = raw.isascii()  # the common case: NFC already, and only controls can hide
    text = raw.strip() if ascii_only else unicodedata.normalize("NFC", raw).strip()
    if not text:
        raise Invalid(f"{what} must not be blank")
    if not ascii_only and all(_blank_looking(ch) for ch in text):
        raise Invalid(f"{what} must not be blank (it has only invisible characters)")
    if len(text) > max_length:
        raise Invalid(f"{what} must be at most {max_length} characters (got {len(text)})")
    # Control, format and separator characters all fail isprintable() (so do spaces other
    # than U+0020, which are allowed): only such text needs a look at each character.
    if text.isprintable():
        hidden = None
    elif ascii_only:
        hidden = "must not contain control characters"
    else:
        hidden = _hidden_character(text)
    if hidden is not None:
        raise Invalid(f"{what} {hidden}")
    return text


def parse_name(raw: object) -> str:
    """A name: a string, trimmed, NFC-normalised, 1-100 characters, nothing hidden."""
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
    """Fight skills: null or a list of 0-50 strings, each trimmed, NFC-normalised, 1-50
    characters, nothing hidden, without duplicates (ignoring case and Unicode
    normalisation). Order is kept.

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
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        try:
            skill = _clean_text(item, "a skill", SKILL_MAX_LENGTH)
        except Invalid as exc:
            problems.append((f"[{index}]", str(exc)))
            continue
        # Skills are NFC already; casefold() can undo that (U+01F0 "ǰ" folds to j + U+030C),
        # so the folded form is normalised again: skills equal but for case or for Unicode
        # normalisation are duplicates.
        folded = skill.casefold() if skill.isascii() else unicodedata.normalize("NFC", skill.casefold())
        if folded in seen:
            problems.append((f"[{index}]", f"duplicates fight_skills[{seen[folded]}] (case-insensitive)"))
            continue
        seen[folded] = index
        skills.append(skill)
    return tuple(skills), problems
