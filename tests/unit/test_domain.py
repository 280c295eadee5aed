"""Domain rules: given events, when a command, then events or an error. Pure code."""

import unicodedata
from datetime import date
from typing import Any
from uuid import UUID, uuid4

import pytest

from warriors.domain import commands
from warriors.domain.errors import InvalidCommand, WarriorNotFound
from warriors.domain.events import DomainEvent, WarriorCreated, WarriorDeleted, WarriorUpdated
from warriors.domain.warrior import State, Warrior, decide, fold

TODAY = date(2026, 11, 26)
WID = UUID("01936d2e-7a1c-7b3e-9f10-4c2b8e1d2a33")
VALID = {"name": "Musashi", "dob": "1584-03-12", "fight_skills": ["Katana"]}


def given(*events: DomainEvent) -> State | None:
    return fold(None, WID, events)


def create(body: dict[str, Any]) -> list[DomainEvent]:
    return decide(None, commands.create_warrior(WID, body, TODAY))


def fields_refused(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidCommand) as refused:
        commands.create_warrior(WID, body, TODAY)
    return {e.field: e.message for e in refused.value.errors}


def test_create_records_trimmed_fields_in_the_order_given() -> None:
    events = create(
        {"name": "  Musashi ", "dob": "1584-03-12", "fight_skills": [" Katana ", "bo", "Archery"]}
    )
    assert events == [WarriorCreated("Musashi", date(1584, 3, 12), ("Katana", "bo", "Archery"))]


@pytest.mark.parametrize(
    ("dob", "message"),
    [
        ("2001-02-29", "not a calendar date"),
        ("1990-13-01", "not a calendar date"),
        ("1990-1-1", "YYYY-MM-DD"),
        ("null", "YYYY-MM-DD"),
        ("10", "YYYY-MM-DD"),
        ("2026-11-27", "future"),
        ("", "YYYY-MM-DD"),
        ("1990-01-01T00:00:00", "YYYY-MM-DD"),
        ("１９９０-01-01", "YYYY-MM-DD"),  # full-width digits are not ASCII digits
        (19900101, "string"),
        (None, "string"),
    ],
)
def test_dob_must_be_a_strict_real_past_date(dob: object, message: str) -> None:
    assert message in fields_refused({**VALID, "dob": dob})["dob"]


def test_dob_today_and_leap_day_are_accepted() -> None:
    assert create({**VALID, "dob": TODAY.isoformat()})
    assert create({**VALID, "dob": "2000-02-29"})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x" * 101, "at most 100"),
        ("   ", "blank"),
        ("", "blank"),
        (42, "string"),
        (None, "string"),
        (["Musashi"], "string"),
        ("Mu\x00sashi", "control"),
    ],
)
def test_name_rules(name: object, message: str) -> None:
    assert message in fields_refused({**VALID, "name": name})["name"]


def test_name_limit_counts_characters_as_sent() -> None:
    (event,) = create({**VALID, "name": " " + "x" * 98 + " "})
    assert isinstance(event, WarriorCreated)
    assert event.name == "x" * 98
    # What an OpenAPI maxLength counts: the spaces trimmed away count too (tests/test_fuzz_api.py).
    assert fields_refused({**VALID, "name": " " + "x" * 100}) == {
        "name": "name must be at most 100 characters (got 101)"
    }


@pytest.mark.parametrize(
    ("skills", "field", "message"),
    [
        (["x" * 51], "fight_skills[0]", "at most 50"),
        (["Katana", "  "], "fight_skills[1]", "blank"),
        ("Katana", "fight_skills", "list"),
        ({"a": 1}, "fight_skills", "list"),
        ([1], "fight_skills[0]", "string"),
        ([f"s{i}" for i in range(51)], "fight_skills", "at most 50 items"),
    ],
)
def test_skill_rules(skills: object, field: str, message: str) -> None:
    assert message in fields_refused({**VALID, "fight_skills": skills})[field]


@pytest.mark.parametrize("body", [{"name": "Musashi", "dob": "1584-03-12", "fight_skills": None},
                                  {"name": "Musashi", "dob": "1584-03-12"}])  # fmt: skip
def test_null_or_absent_skills_mean_none(body: dict[str, Any]) -> None:
    (event,) = create(body)
    assert isinstance(event, WarriorCreated)
    assert event.fight_skills == ()


def test_fifty_skills_of_fifty_characters_are_accepted() -> None:
    skills = [f"{i:02d}" + "x" * 48 for i in range(50)]
    (event,) = create({**VALID, "fight_skills": skills})
    assert isinstance(event, WarriorCreated)
    assert list(event.fight_skills) == skills


def test_every_bad_field_is_named_at_once() -> None:
    refused = fields_refused({"name": "", "dob": "2001-02-29", "fight_skills": ["a", " "], "rank": 1})
    assert set(refused) == {"name", "dob", "fight_skills[1]", "rank"}


def test_missing_required_fields_are_named() -> None:
    assert set(fields_refused({})) == {"name", "dob"}


def test_change_needs_at_least_one_field() -> None:
    with pytest.raises(InvalidCommand) as refused:
        commands.change_warrior(WID, {}, TODAY)
    assert refused.value.errors[0].field == "body"


def test_change_records_only_the_fields_sent() -> None:
    state = given(WarriorCreated("Musashi", date(1584, 3, 12), ("Katana",)))
    events = decide(state, commands.change_warrior(WID, {"name": " Miyamoto "}, TODAY))
    assert events == [WarriorUpdated(name="Miyamoto")]
    after = fold(state, WID, events)
    assert after == Warrior(WID, "Miyamoto", date(1584, 3, 12), ("Katana",), version=2)


def test_change_with_null_skills_clears_them() -> None:
    state = given(WarriorCreated("Musashi", date(1584, 3, 12), ("Katana",)))
    events = decide(state, commands.change_warrior(WID, {"fight_skills": None}, TODAY))
    assert fold(state, WID, events) == Warrior(WID, "Musashi", date(1584, 3, 12), (), version=2)


def test_replace_skills_requires_the_field() -> None:
    with pytest.raises(InvalidCommand):
        commands.replace_skills(WID, {})
    assert commands.replace_skills(WID, {"fight_skills": ["Bo"]}).fight_skills == ("Bo",)


@pytest.mark.parametrize(
    "command",
    [
        commands.ChangeWarrior(WID, name="X"),
        commands.DeleteWarrior(WID),
    ],
)
def test_unknown_or_deleted_warrior_is_not_found(command: commands.Command) -> None:
    with pytest.raises(WarriorNotFound):
        decide(None, command)
    deleted = given(WarriorCreated("Musashi", date(1584, 3, 12), ()), WarriorDeleted())
    with pytest.raises(WarriorNotFound):
        decide(deleted, command)


def test_delete_then_state_is_deleted() -> None:
    state = given(WarriorCreated("Musashi", date(1584, 3, 12), ()))
    events = decide(state, commands.DeleteWarrior(WID))
    assert events == [WarriorDeleted()]
    after = fold(state, WID, events)
    assert after is not None
    assert after.deleted
    assert after.version == 2


def test_snapshot_round_trip() -> None:
    state = given(WarriorCreated("José", date(1990, 1, 1), ("Capoeira",)), WarriorUpdated(name="Zé"))
    assert isinstance(state, Warrior)
    assert Warrior.from_snapshot(WID, state.version, state.to_snapshot()) == state


def test_command_ids_are_not_shared() -> None:
    assert commands.create_warrior(uuid4(), VALID, TODAY).warrior_id != WID


# Hostile input (docs/security.md): names and skills are stored NFC, and nothing in them
# may hide or disguise text.


def test_names_and_skills_are_stored_nfc() -> None:
    (event,) = create({**VALID, "name": " Jose\u0301 Zoe\u0308 ", "fight_skills": ["Cafe\u0301 fight"]})
    assert isinstance(event, WarriorCreated)
    assert event.name == "Jos\u00e9 Zo\u00eb"
    assert event.fight_skills == ("Caf\u00e9 fight",)
    changed = {"name": "Rene\u0301", "fight_skills": ["A\u030angstro\u0308m"]}
    change = commands.change_warrior(WID, changed, TODAY)
    assert isinstance(change, commands.ChangeWarrior)
    assert change.name == "Ren\u00e9"
    assert change.fight_skills == ("\u00c5ngstr\u00f6m",)
    assert commands.replace_skills(WID, {"fight_skills": ["Cafe\u0301"]}).fight_skills == ("Caf\u00e9",)


def test_the_length_limits_count_characters_as_sent_not_after_nfc() -> None:
    (event,) = create({**VALID, "name": "e\u0301" * 50, "fight_skills": ["o\u0308" * 25]})
    assert isinstance(event, WarriorCreated)
    assert event.name == "\u00e9" * 50
    refused = fields_refused({**VALID, "name": "e\u0301" * 51, "fight_skills": ["o\u0308" * 26]})
    assert refused["name"] == "name must be at most 100 characters (got 102)"
    assert refused["fight_skills[0]"] == "a skill must be at most 50 characters (got 52)"
    # An astral character (a surrogate pair in JSON) is one character.
    (event,) = create({**VALID, "name": "\U00013000" * 100})
    assert isinstance(event, WarriorCreated)


def test_precomposed_characters_that_nfc_lengthens_are_refused_with_their_spelling() -> None:
    assert fields_refused({**VALID, "name": "\u0958" * 100}) == {
        "name": "name must not contain U+0958 precomposed: send it as U+0915 U+093C"
    }
    (event,) = create({**VALID, "name": "\u0915\u093c" * 50})
    assert isinstance(event, WarriorCreated)
    assert event.name == "\u0915\u093c" * 50  # what NFC makes of U+0958: never longer than sent


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Mu\u200bsashi", "name must not contain invisible formatting characters (U+200B)"),
        ("Mu\u200csashi", "(U+200C)"),  # joiners change nothing in Latin letters
        ("Mu\u200dsashi", "(U+200D)"),
        ("\u200eMusashi", "(U+200E)"),  # not whitespace: not trimmed away either
        ("Musashi\u200f", "(U+200F)"),
        ("\u202eihsasuM", "(U+202E)"),  # shown as "Musashi"
        ("Mu\u202asashi", "(U+202A)"),
        ("Mu\u2066sashi\u2069", "(U+2066)"),
        ("Mu\u2060sashi", "(U+2060)"),
        ("Mu\u2064sashi", "(U+2064)"),
        ("\ufeffMusashi", "(U+FEFF)"),
        ("Mu\u00adsashi", "(U+00AD)"),
        ("Musashi\U000e0068\U000e0069", "(U+E0068)"),  # tag characters: hidden "hi"
        ("\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", "(U+E0067)"),
        ("\u0645\u06cc\u200b\u062e\u0648\u0627\u0647\u0645", "(U+200B)"),  # only joiners pass there
        ("\U0001f468\u200d", "(U+200D)"),  # a joiner with nothing to join
        ("a\u200d\U0001f468", "(U+200D)"),
        ("Mu\u2028sashi", "name must not contain line or paragraph separators (U+2028)"),
        ("Mu\u2029sashi", "(U+2029)"),
        ("Mu\u0085sashi", "name must not contain control characters"),
        ("Mu\x1bsashi", "name must not contain control characters"),
        ("\u200b", "name must not contain invisible formatting characters (U+200B)"),
        ("\u3164", "name must not be blank (it has only invisible characters)"),  # Hangul filler
        ("\u2800 \uffa0", "name must not be blank (it has only invisible characters)"),
        ("\u3000\u2029 ", "name must not contain line or paragraph separators (U+2029)"),  # even at an end
        ("Musashi\n", "name must not contain control characters"),  # what str.strip() would trim
        ("\u3000\u00a0 ", "name must not be blank"),  # only (Unicode) white space: trimmed away
    ],
)
def test_text_that_hides_characters_is_refused(name: str, message: str) -> None:
    refused = fields_refused({**VALID, "name": name, "fight_skills": [name]})
    assert message in refused["name"]
    assert message.replace("name", "a skill") in refused["fight_skills[0]"]


@pytest.mark.parametrize(
    "name",
    [
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a family: one emoji
        "Tomoe \U0001f3f3\ufe0f\u200d\U0001f308",  # rainbow flag (emoji, VS16, ZWJ, emoji)
        "\U0001f469\U0001f3fd\u200d\U0001f4bb",  # woman technologist, skin tone
        "\U0001f3c3\u200d\u2642\ufe0f",  # man running
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian, with its ZWNJ
        "\u0915\u094d\u200d\u0937",  # Devanagari: a ZWJ chooses the conjunct's form
        "\U0001f1ef\U0001f1f5 Musashi",  # a country flag: regional indicators
        "Tomoe \U0001f5e1\ufe0f",
    ],
)
def test_joiners_that_change_what_is_drawn_are_kept(name: str) -> None:
    (event,) = create({**VALID, "name": name, "fight_skills": [name]})
    assert isinstance(event, WarriorCreated)
    assert event.name == name
    assert event.fight_skills == (name,)


@pytest.mark.parametrize(
    "skills",
    [
        ["Caf\u00e9", "CAFE\u0301"],  # normalisation and case
        ["Cafe\u0301", "caf\u00e9"],
        ["Stra\u00dfe", "STRASSE"],  # full case folding
        ["\u0390", "\u03aa\u0301"],  # equal only once the case-folded forms are NFC again
    ],
)
def test_skills_equal_but_for_normalisation_or_case_are_merged_into_the_first(skills: list[str]) -> None:
    (event,) = create({**VALID, "fight_skills": [*skills, "Katana", " katana "]})
    assert isinstance(event, WarriorCreated)
    assert event.fight_skills == (unicodedata.normalize("NFC", skills[0]), "Katana")
