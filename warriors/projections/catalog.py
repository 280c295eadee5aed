"""The projections this platform runs, by name."""

from enum import StrEnum

from warriors.projections.base import TableProjection
from warriors.projections.read_model import READ_MODEL, WarriorsReadModel


class ProjectionName(StrEnum):
    WARRIORS_READ_MODEL = READ_MODEL


def build(name: ProjectionName) -> TableProjection:
    if name is ProjectionName.WARRIORS_READ_MODEL:
        return WarriorsReadModel()
    raise ValueError(f"unknown projection {name}")


def all_projections() -> list[TableProjection]:
    return [build(name) for name in ProjectionName]
