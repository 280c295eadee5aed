"""Domain rules: given events, when a command, then events or an error. Pure code."""

from datetime import date
from typing import Any
from uuid import UUID, uuid4

import pytest

from warriors.domain import commands
from warriors.domain.errors import InvalidCommand, WarriorNotFound
from warriors.domain.events import DomainEvent, WarriorCreated, WarriorDeleted, WarriorUpdated
from warriors.domain.warrior import Warrior, decide, fold

TODAY = date(2026, 11, 26)
WID = UUID("01936d2e-7a1c-7b3e-9f10-4c2b8e1d2a33")
VALID = {"name": "Musashi", "dob": "1584-03-12", "fight_skills": ["Katana"]}


def given(*events: DomainEvent) -> Warrior | None:
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


def test_name_of_100_characters_after_trimming_is_accepted() -> None:
    (event,) = create({**VALID, "name": "  " + "x" * 100 + "  "})
    assert isinstance(event, WarriorCreated)
    assert event.name == "x" * 100


@pytest.mark.parametrize(
    ("skills", "field", "message"),
    [
        (["x" * 51], "fight_skills[0]", "at most 50"),
        (["Katana", "  "], "fight_skills[1]", "blank"),
        (["Katana", "kATANA"], "fight_skills[1]", "duplicates fight_skills[0]"),
        (["Katana", " katana "], "fight_skills[1]", "duplicates"),
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
    refused = fields_refused({"name": "", "dob": "2001-02-29", "fight_skills": ["a", "A"], "rank": 1})
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
    assert state is not None
    assert Warrior.from_snapshot(WID, state.version, state.to_snapshot()) == state


def test_command_ids_are_not_shared() -> None:
    assert commands.create_warrior(uuid4(), VALID, TODAY).warrior_id != WID
