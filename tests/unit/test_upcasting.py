"""Upcasters bring old event shapes to the current one when read."""

import pytest

from warriors.domain.upcasting import UpcasterRegistry


def test_chain_of_upcasters_runs_in_order() -> None:
    registry = UpcasterRegistry({"WarriorCreated": 3})

    @registry.register("WarriorCreated", from_version=1)
    def v1_to_v2(data: dict[str, object]) -> dict[str, object]:
        renamed = {key: value for key, value in data.items() if key != "skills"}
        return {**renamed, "fight_skills": data.get("skills", [])}

    @registry.register("WarriorCreated", from_version=2)
    def v2_to_v3(data: dict[str, object]) -> dict[str, object]:
        return {**data, "nickname": None}

    old = {"name": "Musashi", "dob": "1584-03-12", "skills": ["Katana"]}
    assert registry.upcast("WarriorCreated", 1, old) == {
        "name": "Musashi", "dob": "1584-03-12", "fight_skills": ["Katana"], "nickname": None,
    }  # fmt: skip
    current = {"name": "X", "dob": "2000-01-01", "fight_skills": [], "nickname": "x"}
    assert registry.upcast("WarriorCreated", 3, current) is current


def test_missing_step_and_future_versions_are_refused() -> None:
    registry = UpcasterRegistry({"WarriorCreated": 2})
    with pytest.raises(ValueError, match="no upcaster"):
        registry.upcast("WarriorCreated", 1, {})
    with pytest.raises(ValueError, match="newer"):
        registry.upcast("WarriorCreated", 3, {})
    with pytest.raises(ValueError, match="unknown"):
        registry.upcast("Nope", 1, {})
