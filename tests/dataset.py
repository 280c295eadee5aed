"""Realistic warriors for tests and benchmarks, drawn with a seeded generator from the
load generator's own word lists (`bench/loadgen/words.json`): a few hundred first names
and surnames from many languages (accents included), a long tail of rare surnames, and
about fifty fight skills."""

import json
import random
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from tests.history import Event

WORDS_FILE = Path(__file__).resolve().parent.parent / "bench" / "loadgen" / "words.json"


@cache
def words() -> dict[str, list[str]]:
    """`first_names`, `common_surnames`, `rare_surnames`, `skills`."""
    loaded: dict[str, list[str]] = json.loads(WORDS_FILE.read_text(encoding="utf-8"))
    return loaded


def warrior(rng: random.Random) -> dict[str, Any]:
    """A WarriorCreated's data: a first name and one or two surnames (one in a hundred from
    the rare tail), a date of birth, 0-6 skills."""
    w = words()
    surnames = w["rare_surnames"] if rng.random() < 0.01 else w["common_surnames"]
    name = f"{rng.choice(w['first_names'])} {rng.choice(surnames)}"
    if rng.random() < 0.3:
        name += f" {rng.choice(w['common_surnames'])}"
    dob = f"{rng.randint(1900, 2010)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return {"name": name, "dob": dob, "fight_skills": rng.sample(w["skills"], rng.randint(0, 6))}


def created_events(count: int, seed: int = 1) -> Iterator[Event]:
    """`count` WarriorCreated events of new warriors."""
    rng = random.Random(seed)
    for _ in range(count):
        yield uuid.uuid4(), "WarriorCreated", 1, warrior(rng)
