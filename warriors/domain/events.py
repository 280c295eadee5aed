"""The warrior's events and their JSON shapes.

Every event type has a current schema version. Stored events keep the shape they were
written with; `upcasting.py` brings an old shape up to the current one when it is read.
"""

from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, Final

AGGREGATE_TYPE: Final = "Warrior"


@dataclass(frozen=True, slots=True)
class WarriorCreated:
    name: str
    dob: date
    fight_skills: tuple[str, ...]

    event_type: ClassVar[str] = "WarriorCreated"
    schema_version: ClassVar[int] = 1

    def to_data(self) -> dict[str, Any]:
        return {"name": self.name, "dob": self.dob.isoformat(), "fight_skills": list(self.fight_skills)}


@dataclass(frozen=True, slots=True)
class WarriorUpdated:
    """Carries only the fields the command set; a missing field is unchanged."""

    name: str | None = None
    dob: date | None = None
    fight_skills: tuple[str, ...] | None = None

    event_type: ClassVar[str] = "WarriorUpdated"
    schema_version: ClassVar[int] = 1

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.name is not None:
            data["name"] = self.name
        if self.dob is not None:
            data["dob"] = self.dob.isoformat()
        if self.fight_skills is not None:
            data["fight_skills"] = list(self.fight_skills)
        return data


@dataclass(frozen=True, slots=True)
class WarriorDeleted:
    event_type: ClassVar[str] = "WarriorDeleted"
    schema_version: ClassVar[int] = 1

    def to_data(self) -> dict[str, Any]:
        return {}


DomainEvent = WarriorCreated | WarriorUpdated | WarriorDeleted

CURRENT_SCHEMA_VERSIONS: Final[dict[str, int]] = {
    "WarriorCreated": 1,
    "WarriorUpdated": 1,
    "WarriorDeleted": 1,
}


def event_from_data(event_type: str, data: dict[str, Any]) -> DomainEvent:
    """Rebuild a domain event from its current-shape JSON (after upcasting)."""
    if event_type == "WarriorCreated":
        return WarriorCreated(
            name=data["name"],
            dob=date.fromisoformat(data["dob"]),
            fight_skills=tuple(data.get("fight_skills") or ()),
        )
    if event_type == "WarriorUpdated":
        skills = data.get("fight_skills", ...)
        return WarriorUpdated(
            name=data.get("name"),
            dob=date.fromisoformat(data["dob"]) if "dob" in data else None,
            fight_skills=None if skills is ... else tuple(skills or ()),
        )
    if event_type == "WarriorDeleted":
        return WarriorDeleted()
    raise ValueError(f"unknown event type {event_type!r}")
