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

from warriors.domain.commands import ChangeWarrior, Command, CreateWarrior, DeleteWarrior, EraseWarrior
from warriors.domain.errors import DomainError, WarriorNotFound
from warriors.domain.events import (
    PERSONAL,
    DomainEvent,
    WarriorCreated,
    WarriorDeleted,
    WarriorErased,
    WarriorUpdated,
)


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
        """The state as a snapshot holds it (schema version 2: `personal` sealed when saved)."""
        return {
            PERSONAL: {"name": self.name, "dob": self.dob.isoformat()},
            "fight_skills": list(self.fight_skills),
            "deleted": self.deleted,
        }

    @classmethod
    def from_snapshot(cls, warrior_id: UUID, version: int, state: dict[str, Any]) -> "Warrior":
        """From an opened snapshot state (see `eventstore/opening.py`)."""
        personal = state[PERSONAL]
        return cls(
            warrior_id=warrior_id,
            name=personal["name"],
            dob=date.fromisoformat(personal["dob"]),
            fight_skills=tuple(state["fight_skills"]),
            version=version,
            deleted=state["deleted"],
        )


@dataclass(frozen=True, slots=True)
class ErasedWarrior:
    """A warrior whose personal data was erased: gone for every reader and command."""

    warrior_id: UUID
    version: int

    @property
    def deleted(self) -> bool:
        return True


State = Warrior | ErasedWarrior


def evolve(state: State | None, warrior_id: UUID, event: DomainEvent) -> State:
    """Apply one event; the result's version is one more than before."""
    version = state.version + 1 if state is not None else 1
    if isinstance(event, WarriorErased) or isinstance(state, ErasedWarrior):
        # Every event of an erased warrior reads as an erasure (its data is gone).
        return ErasedWarrior(warrior_id, version)
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
            version=version,
        )
    if isinstance(event, WarriorDeleted):
        return replace(state, deleted=True, version=version)
    raise DomainError(f"unknown event {event!r}")


def fold(state: State | None, warrior_id: UUID, events: Iterable[DomainEvent]) -> State | None:
    for event in events:
        state = evolve(state, warrior_id, event)
    return state


def decide(state: State | None, command: Command) -> list[DomainEvent]:
    """The events `command` produces against `state` (None: never created)."""
    if isinstance(command, CreateWarrior):
        if state is not None:
            raise DomainError(f"warrior {command.warrior_id} already exists")
        return [WarriorCreated(command.name, command.dob, command.fight_skills)]
    if isinstance(command, EraseWarrior):
        # A deleted warrior's events still hold its personal data: it can be erased too.
        if not isinstance(state, Warrior):
            raise WarriorNotFound(command.warrior_id)
        return [WarriorErased()]
    if not isinstance(state, Warrior) or state.deleted:
        raise WarriorNotFound(command.warrior_id)
    if isinstance(command, ChangeWarrior):
        # The fields the client sent are recorded even when equal to the current ones:
        # the event log keeps the intent, and the answer's version always moves.
        return [WarriorUpdated(command.name, command.dob, command.fight_skills)]
    if isinstance(command, DeleteWarrior):
        return [WarriorDeleted()]
    raise DomainError(f"unknown command {command!r}")
