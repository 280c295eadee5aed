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


def _has_control_characters(text: str) -> bool:
    # NUL cannot be stored by PostgreSQL at all; other control characters in a name or a
    # skill are almost certainly a client bug, so all of them are refused.
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def _clean_text(raw: object, what: str, max_length: int) -> str:
    if not isinstance(raw, str):
        raise Invalid(f"{what} must be a string")
    text = raw.strip()
    if not text:
        raise Invalid(f"{what} must not be blank")
    if len(text) > max_length:
        raise Invalid(f"{what} must be at most {max_length} characters (got {len(text)})")
    if _has_control_characters(text):
        raise Invalid(f"{what} must not contain control characters")
    return text


def parse_name(raw: object) -> str:
    """A name: a string, trimmed, 1-100 characters."""
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
    """Fight skills: null or a list of 0-50 strings, each trimmed, 1-50 characters,
    without case-insensitive duplicates. Order is kept.

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
        folded = skill.casefold()
        if folded in seen:
            problems.append((f"[{index}]", f"duplicates fight_skills[{seen[folded]}] (case-insensitive)"))
            continue
        seen[folded] = index
        skills.append(skill)
    return tuple(skills), problems
