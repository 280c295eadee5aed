"""The OpenAPI document's patterns state the rules the server enforces (api/command/openapi.py).

The fuzzing (tests/test_fuzz_api.py) sends what the document allows and expects it
accepted, and what it forbids and expects it refused; these check the patterns against the
server's own parsers directly, character by character and date by date, so that a change
on either side (a new rule, a Python with a newer Unicode) is caught here first.
"""

import random
import re
import sys
from datetime import date, timedelta

import pytest

from api.command.openapi import NOT_BLANK, TEXT_PATTERN, dates_up_to
from warriors.domain.values import Invalid, parse_dob, parse_name

_EVERY_CHARACTER = [chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF]


def _server_accepts_name(text: str) -> bool:
    try:
        parse_name(text)
    except Invalid:
        return False
    return True


def test_text_pattern_agrees_with_the_server_on_every_character() -> None:
    # Alone (is it blank?) and inside Latin text (is it refused?). U+200C/U+200D, which the
    # server lets through only between letters of joining scripts or emoji, are refused by
    # both here, as in Latin text they hide nothing the reader sees.
    pattern = re.compile(TEXT_PATTERN)
    disagreements = [
        f"U+{ord(ch):04X} {where}"
        for ch in _EVERY_CHARACTER
        for where, text in (("alone", ch), ("inside", f"a{ch}b"))
        if bool(pattern.fullmatch(text)) != _server_accepts_name(text)
    ]
    assert not disagreements, disagreements[:20]


def test_text_pattern_is_stricter_where_joiners_are_visible() -> None:
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "I want", with its ZWNJ
    assert _server_accepts_name(persian)
    assert not re.fullmatch(TEXT_PATTERN, persian)


def test_not_blank_is_what_strip_leaves_something_of() -> None:
    pattern = re.compile(NOT_BLANK)
    assert [
        f"U+{ord(ch):04X}" for ch in _EVERY_CHARACTER if bool(pattern.fullmatch(ch)) != bool(ch.strip())
    ] == []
    assert pattern.fullmatch(" \u3000 x \t")
    assert not pattern.fullmatch(" \u3000 \t\n")


@pytest.mark.parametrize(
    "today", [date(2026, 3, 15), date(2026, 1, 1), date(2025, 12, 31), date(2000, 2, 29)]
)
def test_dates_up_to_today_are_the_days_the_server_accepts(today: date) -> None:
    pattern = re.compile(dates_up_to(today))
    # Around today, the ends of the range and of each month, and a random sample.
    around = [today + timedelta(days=n) for n in range(-400, 400)]
    ends = [date(1, 1, 1) + timedelta(days=n) for n in range(40)] + [
        date(9999, 12, 31) - timedelta(days=n) for n in range(40)
    ]
    rng = random.Random(today.toordinal())
    sample = [date.fromordinal(rng.randint(1, date(9999, 12, 31).toordinal())) for _ in range(20_000)]
    for day in around + ends + sample:
        assert bool(pattern.fullmatch(day.isoformat())) == (day <= today), day
        if day <= today:
            assert parse_dob(day.isoformat(), today) == day
        else:
            with pytest.raises(Invalid):
                parse_dob(day.isoformat(), today)
    for shape in [
        "0000-01-01",
        "2000-13-01",
        "2000-00-10",
        "2000-01-00",
        "2000-01-32",
        "20000-01-01",
        "2000-1-01",
    ]:
        assert not pattern.fullmatch(shape), shape
        with pytest.raises(Invalid):
            parse_dob(shape, today)
