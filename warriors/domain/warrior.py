"""The Warrior aggregate as two pure functions: `decide` and `evolve`.

`decide(state, command)` returns the events a command produces or raises a domain error;
`evolve(state, event)` folds one event into the state. Loading an aggregate is
`fold(snapshot_or_none, events)`.
"""

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from typing import Any
from uuid import UUID

from warriors.domain.commands import ChangeWarrior, Command, CreateWarrior, DeleteWarrior
from warriors.domain.errors import DomainError, WarriorNotFound
from warriors.domain.events import DomainEvent, WarriorCreated, WarriorDeleted, WarriorUpdated


@dataclass(frozen=True, slots=True)
class Warrior:
    """A warrior's state after `version` events."""

    warrior_id: UUID
    name: str
    dob: date
    fight_skills: tuple[str, ...]
    version: int
    deleted: bool = False

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dob": self.dob.isoformat(),
            "fight_skills": list(self.fight_skills),
            "deleted": self.deleted,
        }

    @classmethod
    def from_snapshot(cls, warrior_id: UUID, version: int, state: dict[str, Any]) -> "Warrior":
        return cls(
            warrior_id=warrior_id,
            name=state["name"],
            dob=date.fromisoformat(state["dob"]),
            fight_skills=tuple(state["fight_skills"]),
            version=version,
            deleted=state["deleted"],
        )


def evolve(state: Warrior | None, warrior_id: UUID, event: DomainEvent) -> Warrior:
    """Apply one event; the result's version is one more than before."""
    if isinstance(event, WarriorCreated):
        if state is not None:
            raise DomainError(f"warrior {warrior_id} was created twice")
        return Warrior(warrior_id, event.name, event.dob, event.fight_skills, version=1)
    if state is None:
        raise DomainError(f"{event.event_type} before WarriorCreated for {warrior_id}")
    if isinstance(event, WarriorUpdated):
        return replace(
            state,
            name=event.name if event.name is not None else state.name,
            dob=event.dob if event.dob is not None else state.dob,
            fight_skills=event.fight_skills if event.fight_skills is not None else state.fight_skills,
            version=state.version + 1,
        )
    if isinstance(event, WarriorDeleted):
        return replace(state, deleted=True, version=state.version + 1)
    raise DomainError(f"unknown event {event!r}")


def fold(state: Warrior | None, warrior_id: UUID, events: Iterable[DomainEvent]) -> Warrior | None:
    for event in events:
        state = evolve(state, warrior_id, event)
    return state


def decide(state: Warrior | None, command: Command) -> list[DomainEvent]:
    """The events `command` produces against `state` (None: never created)."""
    if isinstance(command, CreateWarrior):
        if state is not None:
            raise DomainError(f"warrior {command.warrior_id} already exists")
        return [WarriorCreated(command.name, command.dob, command.fight_skills)]
    if state is None or state.deleted:
        raise WarriorNotFound(command.warrior_id)
    if isinstance(command, ChangeWarrior):
        # The fields the client sent are recorded even when equal to the current ones:
        # the event log keeps the intent, and the answer's version always moves.
        return [WarriorUpdated(command.name, command.dob, command.fight_skills)]
    if isinstance(command, DeleteWarrior):
        return [WarriorDeleted()]
    raise DomainError(f"unknown command {command!r}")
