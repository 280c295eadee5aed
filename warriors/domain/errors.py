"""Errors the domain raises. The API layer maps each to an HTTP answer."""

from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: `field` is a JSON path such as `fight_skills[2]`."""

    field: str
    message: str


class DomainError(Exception):
    """Base of every error the domain decides on."""


class InvalidCommand(DomainError):
    """The command's input breaks one or more rules; `errors` names each bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


class WarriorNotFound(DomainError):
    """The warrior does not exist, or was deleted."""

    def __init__(self, warrior_id: UUID) -> None:
        super().__init__(f"warrior {warrior_id} does not exist")
        self.warrior_id = warrior_id


class VersionMismatch(DomainError):
    """The client's expected version (If-Match) is not the warrior's current version."""

    def __init__(self, warrior_id: UUID, expected: int, actual: int | None) -> None:
        where = f"is at version {actual}" if actual is not None else f"has moved past version {expected}"
        super().__init__(f"warrior {warrior_id} {where}; the request expected version {expected}")
        self.warrior_id = warrior_id
        self.expected = expected
        self.actual = actual
