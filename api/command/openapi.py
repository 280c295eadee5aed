"""OpenAPI documentation of the command bodies, built from the domain's own limits.

Bodies are parsed by the service itself (so that 400 and 422 are told apart and every
field error is named), which is why they are described here rather than by models.
"""

from datetime import date
from typing import Any

from pydantic import BaseModel, Field

from warriors.application.warrior_commands import latest_today
from warriors.domain.values import NAME_MAX_LENGTH, SKILL_MAX_LENGTH, SKILLS_MAX_COUNT

# The text rules of names and skills (warriors/domain/values.py), as a JSON Schema pattern.
# Code point ranges refused anywhere: control characters (Cc), invisible formatting
# characters (Cf) and the line and paragraph separators (Zl, Zp), as Python's unicodedata
# (Unicode 14) classifies them; tests/unit/test_openapi_rules.py checks this against it.
# The server lets U+200C and U+200D (Cf) through between two letters of a joining script
# or two emoji; the document, simpler, refuses them everywhere.
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


def _character_class(ranges: tuple[tuple[int, int], ...]) -> str:
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
_ALLOWED = f"[^{_character_class(REFUSED_CHARACTERS)}]"
_VISIBLE = f"[^{_character_class(REFUSED_CHARACTERS + BLANK_CHARACTERS)}]"
TEXT_PATTERN = f"^{_ALLOWED}*{_VISIBLE}{_ALLOWED}*$"


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
    "Trimmed and NFC-normalised, then 1-{} characters; not blank; no control, invisible formatting"
    " (U+200C/U+200D only inside joining scripts and emoji sequences), line or paragraph"
    " separator characters."
)
_NAME = {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH, "pattern": TEXT_PATTERN,
         "description": _TEXT_RULES.format(NAME_MAX_LENGTH)}  # fmt: skip
# The server's "today" when the document was made: the latest date on Earth (UTC+14).
_DOB = {"type": "string", "format": "date", "pattern": dates_up_to(latest_today()),
        "description": "YYYY-MM-DD, a real date from 0001-01-01, not in the future."}  # fmt: skip
_SKILLS = {
    "type": ["array", "null"],
    "maxItems": SKILLS_MAX_COUNT,
    "uniqueItems": True,
    "items": {"type": "string", "minLength": 1, "maxLength": SKILL_MAX_LENGTH, "pattern": TEXT_PATTERN,
              "description": _TEXT_RULES.format(SKILL_MAX_LENGTH)},
    "description": "No duplicates, ignoring case and Unicode normalisation; null or absent: none.",
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
