"""Upcasters: bring a stored event's data from an old schema version to the current one.

Stored events are never rewritten. When an event's shape changes, bump its version in
`events.CURRENT_SCHEMA_VERSIONS` and register a function from the old shape to the next:

    @UPCASTERS.register("WarriorCreated", from_version=1)
    def _created_v1_to_v2(data): return {**data, "nickname": None}

Reading applies the chain v1 -> v2 -> ... up to the current version.
"""

from collections.abc import Callable
from typing import Any

from warriors.domain.events import CURRENT_SCHEMA_VERSIONS, PERSONAL

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UpcasterRegistry:
    def __init__(self, current_versions: dict[str, int]) -> None:
        self._current = current_versions
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        def add(step: Upcaster) -> Upcaster:
            self._steps[(event_type, from_version)] = step
            return step

        return add

    def upcast(self, event_type: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
        """`data` in the current shape of `event_type`; raises if a step is missing."""
        current = self._current.get(event_type)
        if current is None:
            raise ValueError(f"unknown event type {event_type!r}")
        if schema_version > current:
            raise ValueError(
                f"{event_type} schema version {schema_version} is newer than this code ({current})"
            )
        while schema_version < current:
            step = self._steps.get((event_type, schema_version))
            if step is None:
                raise ValueError(f"no upcaster for {event_type} from schema version {schema_version}")
            data = step(data)
            schema_version += 1
        return data


UPCASTERS = UpcasterRegistry(CURRENT_SCHEMA_VERSIONS)
_PERSONAL_FIELDS = ("name", "dob")


@UPCASTERS.register("WarriorCreated", from_version=1)
@UPCASTERS.register("WarriorUpdated", from_version=1)
def _personal_fields_grouped(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept name and dob in plain text at the top level; version 2 groups them
    under `personal` (an open object here: only version 2 writes seal it). An erased
    warrior's version-1 events are redacted after this step, when they are opened."""
    upcast = {k: v for k, v in data.items() if k not in _PERSONAL_FIELDS}
    if personal := {k: data[k] for k in _PERSONAL_FIELDS if k in data}:
        upcast[PERSONAL] = personal
    return upcast
