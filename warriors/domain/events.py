"""The warrior's events and their JSON shapes.

Every event type has a current schema version. Stored events keep the shape they were
written with; `upcasting.py` brings an old shape up to the current one when it is read.

Version 2 of WarriorCreated and WarriorUpdated groups the personal fields (name, date of
birth) under `personal`. In the store and on the bus that member is sealed (a string:
encrypted with the warrior's own key, `warriors/security/personal_data.py`); readers open
it into an object before the domain sees the event (`warriors/eventstore/opening.py`).
An event whose `personal` is null belongs to an erased warrior: its personal data is gone
for good, and it reads as an erasure.
"""

from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, Final

AGGREGATE_TYPE: Final = "Warrior"
PERSONAL: Final = "personal"  # the member that holds (sealed or open) personal fields


@dataclass(frozen=True, slots=True)
class WarriorCreated:
    name: str
    dob: date
    fight_skills: tuple[str, ...]

    event_type: ClassVar[str] = "WarriorCreated"
    schema_version: ClassVar[int] = 2

    def to_data(self) -> dict[str, Any]:
        return {
            PERSONAL: {"name": self.name, "dob": self.dob.isoformat()},
            "fight_skills": list(self.fight_skills),
        }


@dataclass(frozen=True, slots=True)
class WarriorUpdated:
    """Carries only the fields the command set; a missing field is unchanged."""

    name: str | None = None
    dob: date | None = None
    fight_skills: tuple[str, ...] | None = None

    event_type: ClassVar[str] = "WarriorUpdated"
    schema_version: ClassVar[int] = 2

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        personal: dict[str, Any] = {}
        if self.name is not None:
            personal["name"] = self.name
        if self.dob is not None:
            personal["dob"] = self.dob.isoformat()
        if personal:
            data[PERSONAL] = personal
        if self.fight_skills is not None:
            data["fight_skills"] = list(self.fight_skills)
        return data


@dataclass(frozen=True, slots=True)
class WarriorDeleted:
    event_type: ClassVar[str] = "WarriorDeleted"
    schema_version: ClassVar[int] = 1

    def to_data(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class WarriorErased:
    """The warrior's personal data was erased (its key destroyed): the warrior is gone,
    and every earlier event of it reads as this one."""

    event_type: ClassVar[str] = "WarriorErased"
    schema_version: ClassVar[int] = 1

    def to_data(self) -> dict[str, Any]:
        return {}


DomainEvent = WarriorCreated | WarriorUpdated | WarriorDeleted | WarriorErased

CURRENT_SCHEMA_VERSIONS: Final[dict[str, int]] = {
    "WarriorCreated": 2,
    "WarriorUpdated": 2,
    "WarriorDeleted": 1,
    "WarriorErased": 1,
}
# The event types whose current shape carries personal fields (sealed when stored).
WITH_PERSONAL_DATA: Final = frozenset({"WarriorCreated", "WarriorUpdated"})


def is_erased(data: dict[str, Any]) -> bool:
    """Opened data of an erased warrior's event (its personal data is gone)."""
    return PERSONAL in data and data[PERSONAL] is None


def event_from_data(event_type: str, data: dict[str, Any]) -> DomainEvent:
    """Rebuild a domain event from its current, opened shape (after upcasting and
    opening: `personal` is an object, or null for an erased warrior)."""
    if event_type == "WarriorErased" or is_erased(data):
        return WarriorErased()
    if event_type == "WarriorCreated":
        personal = data[PERSONAL]
        return WarriorCreated(
            name=personal["name"],
            dob=date.fromisoformat(personal["dob"]),
            fight_skills=tuple(data.get("fight_skills") or ()),
        )
    if event_type == "WarriorUpdated":
        personal = data.get(PERSONAL) or {}
        skills = data.get("fight_skills", ...)
        return WarriorUpdated(
            name=personal.get("name"),
            dob=date.fromisoformat(personal["dob"]) if "dob" in personal else None,
            fight_skills=None if skills is ... else tuple(skills or ()),
        )
    if event_type == "WarriorDeleted":
        return WarriorDeleted()
    raise ValueError(f"unknown event type {event_type!r}")


def plain_data(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Opened data as the API shows it (history): personal fields at the top level, as
    version 1 had them; an erased warrior's event says `"personal_data": "erased"`."""
    if is_erased(data):
        return {**{k: v for k, v in data.items() if k != PERSONAL}, "personal_data": "erased"}
    personal = data.get(PERSONAL)
    if not isinstance(personal, dict):
        return data
    return {**personal, **{k: v for k, v in data.items() if k != PERSONAL}}
