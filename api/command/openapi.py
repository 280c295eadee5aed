"""OpenAPI documentation of the command bodies, built from the domain's own limits.

Bodies are parsed by the service itself (so that 400 and 422 are told apart and every
field error is named), which is why they are described here rather than by models.
"""

import sys
import unicodedata
from collections.abc import Iterable
from datetime import date
from typing import Any

from pydantic import BaseModel, Field

from warriors.application.warrior_commands import latest_today
from warriors.domain.values import (
    EMOJI_TRAILERS,
    EXPANDED_BY_NFC,
    JOINING_SCRIPTS,
    NAME_MAX_LENGTH,
    SKILL_MAX_LENGTH,
    SKILLS_MAX_COUNT,
)

Ranges = tuple[tuple[int, int], ...]

# The text rules of names and skills (warriors/domain/values.py), as a JSON Schema pattern.
# Code point ranges refused anywhere: control characters (Cc), invisible formatting
# characters (Cf) and the line and paragraph separators (Zl, Zp), as Python's unicodedata
# (Unicode 14) classifies them; tests/unit/test_openapi_rules.py checks this against it.
# U+200C and U+200D (Cf) are among them; TEXT_PATTERN lets them through where the server
# does (between two letters of a joining script, or two emoji).
REFUSED_CHARACTERS = (
    (0x00, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD),
    (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E), (0x200B, 0x200F),
    (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)  # fmt: skip
# Allowed but blank: white space (what str.strip() removes, less the control characters
# already refused) and the characters that print as nothing (Hangul fillers, braille
# blank, combining grapheme joiner, variation selectors). Text must have one character
# that is neither refused nor blank.
BLANK_CHARACTERS = (
    (0x20, 0x20), (0xA0, 0xA0), (0x34F, 0x34F), (0x115F, 0x1160), (0x1680, 0x1680),
    (0x180B, 0x180D), (0x180F, 0x180F), (0x2000, 0x200A), (0x202F, 0x202F), (0x205F, 0x205F),
    (0x2800, 0x2800), (0x3000, 0x3000), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)  # fmt: skip


def _ranges_of(codes: Iterable[int]) -> Ranges:
    """Sorted code points as inclusive ranges."""
    ranges: list[tuple[int, int]] = []
    for code in sorted(codes):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return tuple(ranges)


def _minus(ranges: Ranges, *removed: Ranges) -> Ranges:
    """`ranges` without the code points of `removed`."""
    gone = {code for part in removed for low, high in part for code in range(low, high + 1)}
    return _ranges_of(code for low, high in ranges for code in range(low, high + 1) if code not in gone)


def _character_class(ranges: Ranges) -> str:
    # \uXXXX in the Basic Multilingual Plane; the characters themselves above it, where
    # ECMA 262 (without the u flag) and Python's re spell escapes differently.
    def one(code: int) -> str:
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    return "".join(one(low) if low == high else f"{one(low)}-{one(high)}" for low, high in ranges)


# What str.strip() removes: text that is only these is blank.
WHITE_SPACE = (
    (0x09, 0x0D), (0x1C, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
    (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
)  # fmt: skip
NOT_BLANK = rf"^[\s\S]*[^{_character_class(WHITE_SPACE)}][\s\S]*$"

# The pattern of names and skills, as the server checks them (warriors/domain/values.py):
# text made of tokens, each one allowed character, or a character followed by a joiner
# where the server lets the joiner through:
# - a letter of a joining script, then U+200C or U+200D, then another such letter;
# - an emoji (a symbol, category So), its presentation selector or skin tones, then
#   U+200D, then another emoji.
# The lookahead checks the letter or emoji after the joiner without taking it, so that it
# starts the next token. Each position has at most one way to go on, so a refused text
# fails in linear time. At least one token starts with a visible character: text of
# spaces, fillers and joiners only is blank.
_REFUSED = REFUSED_CHARACTERS + _ranges_of(map(ord, EXPANDED_BY_NFC))
_SYMBOLS = _ranges_of(code for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) == "So")
_JOINER_BEFORE = "[\\u200c\\u200d]"
_TRAILERS = f"[{_character_class(_ranges_of(map(ord, EMOJI_TRAILERS)))}]"


def _token(blank: Ranges) -> str:
    """A token (see above) whose first character is none of `blank`."""
    allowed = f"[^{_character_class(_REFUSED + blank)}]"
    letter = f"[{_character_class(_minus(JOINING_SCRIPTS, _REFUSED, blank))}]"
    emoji = f"[{_character_class(_minus(_SYMBOLS, _REFUSED, blank))}]"
    next_letter = f"[{_character_class(_minus(JOINING_SCRIPTS, _REFUSED))}]"
    next_emoji = f"[{_character_class(_minus(_SYMBOLS, _REFUSED))}]"
    return (
        f"(?:{letter}{_JOINER_BEFORE}(?={next_letter})|{emoji}{_TRAILERS}*\\u200d(?={next_emoji})|{allowed})"
    )


# The end is `(?![\s\S])` (nothing follows), not `$`: Python's `$` (jsonschema, hypothesis)
# also matches before a final newline, so "Musashi\n" would have matched.
END = r"(?![\s\S])"
TEXT_PATTERN = f"^{_token(())}*{_token(BLANK_CHARACTERS)}{_token(())}*{END}"


def _digit_span(low: int, high: int, rest: int) -> str:
    """A digit from `low` to `high`, then any `rest` digits."""
    first = str(low) if low == high else f"[{low}-{high}]"
    return first + ("" if rest == 0 else "[0-9]" if rest == 1 else f"[0-9]{{{rest}}}")


def _digits_between(low: str, high: str) -> str:
    """A pattern for the digit strings of the same length from `low` to `high`."""
    if not low:
        return ""
    if low[0] == high[0]:
        return low[0] + _digits_between(low[1:], high[1:])
    rest = len(low) - 1
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return _digit_span(int(low[0]), int(high[0]), rest)
    parts = [low[0] + _digits_between(low[1:], "9" * rest)]
    if int(high[0]) - int(low[0]) > 1:
        parts.append(_digit_span(int(low[0]) + 1, int(high[0]) - 1, rest))
    parts.append(high[0] + _digits_between("0" * rest, high[1:]))
    return "(?:" + "|".join(parts) + ")"


def dates_up_to(last: date) -> str:
    """A pattern for `YYYY-MM-DD` from 0001-01-01 to `last`, months 01-12 and days 01-31
    (`format: date` says which days a month has)."""
    month, day = "(?:0[1-9]|1[0-2])", "(?:0[1-9]|[12][0-9]|3[01])"
    year = f"{last.year:04d}"
    spans = []
    if last.year > 1:
        spans.append(f"{_digits_between('0001', f'{last.year - 1:04d}')}-{month}-{day}")
    if last.month > 1:
        spans.append(f"{year}-{_digits_between('01', f'{last.month - 1:02d}')}-{day}")
    spans.append(f"{year}-{last.month:02d}-{_digits_between('01', f'{last.day:02d}')}")
    return "^(?:" + "|".join(spans) + ")$"


_TEXT_RULES = (
    "At most {} characters as sent (an astral character counts as one), stored trimmed and"
    " NFC-normalised; not blank; no control, invisible formatting (U+200C/U+200D only between"
    " two letters of a joining script, U+200D also between two emoji), line or paragraph"
    " separator characters, nor the precomposed characters NFC would spell as several"
    " (U+0958: send U+0915 U+093C)."
)
_NAME = {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH, "pattern": TEXT_PATTERN,
         "description": _TEXT_RULES.format(NAME_MAX_LENGTH)}  # fmt: skip
# The server's "today" when the document was made: the latest date on Earth (UTC+14).
_DOB = {"type": "string", "format": "date", "pattern": dates_up_to(latest_today()),
        "description": "YYYY-MM-DD, a real date from 0001-01-01, not in the future."}  # fmt: skip


def refresh_dates(today: date | None = None) -> bool:
    """Make the `dob` pattern end at `today` (default: the latest date on Earth now); True
    if it moved. A service up since yesterday would otherwise document yesterday's last
    day, and refuse in its document a date it accepts."""
    pattern = dates_up_to(today or latest_today())
    if _DOB["pattern"] == pattern:
        return False
    _DOB["pattern"] = pattern
    return True


_SKILLS = {
    "type": ["array", "null"],
    "maxItems": SKILLS_MAX_COUNT,
    "items": {"type": "string", "minLength": 1, "maxLength": SKILL_MAX_LENGTH, "pattern": TEXT_PATTERN,
              "description": _TEXT_RULES.format(SKILL_MAX_LENGTH)},
    "description": "A set: a skill equal to an earlier one but for case or Unicode normalisation is"
    " merged into it (the first spelling is kept); null or absent: none.",
}  # fmt: skip


def json_body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


CREATE_BODY = json_body(
    {"type": "object", "required": ["name", "dob"], "additionalProperties": False,
     "properties": {"name": _NAME, "dob": _DOB, "fight_skills": _SKILLS}},
    {"name": "Miyamoto Musashi", "dob": "1584-03-12", "fight_skills": ["Katana", "Niten Ichi-ryu"]},
)  # fmt: skip
CHANGE_BODY = json_body(
    {"type": "object", "minProperties": 1, "additionalProperties": False,
     "properties": {"name": _NAME, "dob": _DOB, "fight_skills": _SKILLS}},
    {"name": "Musashi"},
)  # fmt: skip
SKILLS_BODY = json_body(
    {"type": "object", "required": ["fight_skills"], "additionalProperties": False,
     "properties": {"fight_skills": _SKILLS}},
    {"fight_skills": ["Katana", "Calligraphy"]},
)  # fmt: skip


class AcceptedBody(BaseModel):
    """A command was stored; read models follow (see the Location header)."""

    id: str = Field(examples=["01936d2e-7a1c-7b3e-9f10-4c2b8e1d2a33"])
    version: int = Field(description="The warrior's version after this command.", examples=[1])
    position: int = Field(description="The event's position in the global stream.", examples=[42])
