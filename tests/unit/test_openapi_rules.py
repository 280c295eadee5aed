"""The OpenAPI document's patterns state the rules the server enforces (api/command/openapi.py).

The fuzzing (tests/test_fuzz_api.py) sends what the document allows and expects it
accepted, and what it forbids and expects it refused; these check the patterns against the
server's own parsers directly, character by character and date by date, so that a change
on either side (a new rule, a Python with a newer Unicode) is caught here first.
"""

import random
import re
import sys
import unicodedata
from datetime import date, timedelta
from uuid import uuid4

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.command.openapi import CREATE_BODY, NOT_BLANK, TEXT_PATTERN, dates_up_to, refresh_dates
from tests.text_rule_examples import TEXT_CASES, TextCase
from warriors.application.warrior_commands import latest_today
from warriors.domain.commands import create_warrior
from warriors.domain.errors import InvalidCommand
from warriors.domain.values import EXPANDED_BY_NFC, Invalid, parse_dob, parse_name

_CREATE_SCHEMA = CREATE_BODY["requestBody"]["content"]["application/json"]["schema"]
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


def _document_accepts(name: str, skills: list[str]) -> bool:
    body = {"name": name, "dob": "1990-01-01", "fight_skills": skills}
    return jsonschema.Draft202012Validator(_CREATE_SCHEMA).is_valid(body)


def _service_accepts(name: str, skills: list[str]) -> bool:
    try:
        create_warrior(uuid4(), {"name": name, "dob": "1990-01-01", "fight_skills": skills}, date(2026, 1, 1))
    except InvalidCommand:
        return False
    return True


@pytest.mark.parametrize("case", TEXT_CASES, ids=[case.why for case in TEXT_CASES])
def test_pinned_text_cases(case: TextCase) -> None:
    assert _document_accepts(case.name, case.skills) == case.accepted
    assert _service_accepts(case.name, case.skills) == case.accepted


def test_the_documented_dob_pattern_moves_with_the_day() -> None:
    tomorrow = latest_today() + timedelta(days=1)
    dob = _CREATE_SCHEMA["properties"]["dob"]
    try:
        assert refresh_dates(tomorrow)
        assert not refresh_dates(tomorrow)  # same day: nothing to rebuild
        assert re.fullmatch(dob["pattern"], tomorrow.isoformat())
    finally:
        refresh_dates()
    assert not re.fullmatch(dob["pattern"], tomorrow.isoformat())


def test_the_expanded_characters_are_those_nfc_lengthens() -> None:
    assert {ch for ch in _EVERY_CHARACTER if len(unicodedata.normalize("NFC", ch)) > 1} == EXPANDED_BY_NFC


# Characters where the rules have edges: joiners, letters and marks of joining scripts,
# emoji and their trailers, blanks, white space, precomposed and combining characters,
# astral ones, refused ones.
_EDGES = st.sampled_from(
    "\u200c\u200d\u0628\u0645\u064e\u0301\u0915\u093c\u0958\u06de\u0bf3\u180b\u1820"
    "\U0001f469\U0001f4bb\U0001f3fd\ufe0f\u2800\u3164 \u3000\u2028\u200bxe\u00e9\U00013000\u0344\x85"
)
_TEXTS = st.text(st.one_of(_EDGES, st.characters(codec="utf-8")), max_size=12) | st.builds(
    lambda head, body: head + body,
    st.text(_EDGES, max_size=3),
    st.text(st.just("k"), min_size=96, max_size=101),
)


@settings(derandomize=True, max_examples=3000, deadline=None)  # the same cases on every run
@given(name=_TEXTS)
def test_the_document_and_the_service_agree_on_any_name(name: str) -> None:
    assert _document_accepts(name, []) == _service_accepts(name, [])


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(skills=st.lists(_TEXTS, max_size=4))
def test_the_document_and_the_service_agree_on_any_skills(skills: list[str]) -> None:
    assert _document_accepts("Musashi", skills) == _service_accepts("Musashi", skills)


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
