"""Commands on a warrior, and building them from decoded JSON bodies.

Builders collect every bad field before refusing, so a client learns all of its mistakes
from one answer. Unknown fields are refused too: a typo such as `fight_skill` would
otherwise be silently ignored.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final
from uuid import UUID

from warriors.domain.errors import FieldError, InvalidCommand
from warriors.domain.values import Invalid, parse_dob, parse_name, parse_skills

FIELDS: Final = ("name", "dob", "fight_skills")


@dataclass(frozen=True, slots=True)
class CreateWarrior:
    warrior_id: UUID
    name: str
    dob: date
    fight_skills: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChangeWarrior:
    """Change any of name, dob and fight_skills; a field left as None is unchanged."""

    warrior_id: UUID
    name: str | None = None
    dob: date | None = None
    fight_skills: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class DeleteWarrior:
    warrior_id: UUID


@dataclass(frozen=True, slots=True)
class EraseWarrior:
    """Forget the warrior's personal data for good (crypto-shredding): its key is destroyed."""

    warrior_id: UUID


Command = CreateWarrior | ChangeWarrior | DeleteWarrior | EraseWarrior


class _Collector:
    """Parses fields one by one and remembers every failure."""

    def __init__(self, body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        self.body = body
        self.errors: list[FieldError] = [
            FieldError(key, "is not a known field") for key in body if key not in allowed
        ]

    def take(self, field: str, parse: Callable[[object], Any], *, required: bool) -> Any:
        if field not in self.body:
            if required:
                self.errors.append(FieldError(field, "is required"))
            return None
        try:
            return parse(self.body[field])
        except Invalid as exc:
            self.errors.append(FieldError(field, str(exc)))
            return None

    def take_skills(self, *, required: bool) -> tuple[str, ...] | None:
        if "fight_skills" not in self.body:
            if required:
                self.errors.append(FieldError("fight_skills", "is required"))
            return None
        try:
            skills, problems = parse_skills(self.body["fight_skills"])
        except Invalid as exc:
            self.errors.append(FieldError("fight_skills", str(exc)))
            return None
        self.errors.extend(FieldError(f"fight_skills{where}", msg) for where, msg in problems)
        return skills

    def done(self) -> None:
        if self.errors:
            raise InvalidCommand(self.errors)


def create_warrior(warrior_id: UUID, body: Mapping[str, Any], today: date) -> CreateWarrior:
    """`POST` body: name and dob required; fight_skills absent or null means none."""
    fields = _Collector(body, FIELDS)
    name = fields.take("name", parse_name, required=True)
    dob = fields.take("dob", lambda raw: parse_dob(raw, today), required=True)
    skills = fields.take_skills(required=False)
    fields.done()
    return CreateWarrior(warrior_id, name, dob, skills or ())


def change_warrior(warrior_id: UUID, body: Mapping[str, Any], today: date) -> ChangeWarrior:
    """`PATCH` body: any of name, dob, fight_skills (null clears the skills); not none."""
    fields = _Collector(body, FIELDS)
    if not any(key in body for key in FIELDS):
        fields.errors.append(FieldError("body", "must contain at least one of name, dob, fight_skills"))
    name = fields.take("name", parse_name, required=False)
    dob = fields.take("dob", lambda raw: parse_dob(raw, today), required=False)
    skills = fields.take_skills(required=False)
    fields.done()
    return ChangeWarrior(warrior_id, name=name, dob=dob, fight_skills=skills)


def replace_skills(warrior_id: UUID, body: Mapping[str, Any]) -> ChangeWarrior:
    """`PUT .../skills` body: `{"fight_skills": [...]}` (null clears them)."""
    fields = _Collector(body, ("fight_skills",))
    skills = fields.take_skills(required=True)
    fields.done()
    return ChangeWarrior(warrior_id, fight_skills=skills)
