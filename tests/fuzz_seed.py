"""The seed of the API's fuzzing (tests/test_fuzz_api.py).

`make test` fuzzes with PINNED_SEED, the same on every run, so that a build is never
refused by a seed that happened to find an old bug; a maintainer moves it on purpose (after
a `make fuzz` campaign). `make fuzz` passes FUZZ_SEED=random (a fresh seed, which the test
prints with the command that replays it) unless FUZZ_SEED names one. The seed in use is
also in pytest's header, so every CI log shows it.
"""

import os

# The seed of issue 23's failure (a name of 101 characters as sent accepted), kept because
# it found one; it passes since the limits count what is sent.
PINNED_SEED = 54583605510112734629726528714013372317


def fuzz_seed() -> int | None:
    """FUZZ_SEED (a number, or `random` for a fresh one: None), else PINNED_SEED."""
    wanted = os.environ.get("FUZZ_SEED", "").strip()
    if wanted == "random":
        return None
    return int(wanted) if wanted else PINNED_SEED


def header() -> str:
    seed = fuzz_seed()
    if seed is None:
        return "fuzzing: a fresh seed (FUZZ_SEED=random), printed by tests/test_fuzz_api.py"
    origin = "pinned in tests/fuzz_seed.py" if seed == PINNED_SEED else "from FUZZ_SEED"
    return f"fuzzing: FUZZ_SEED={seed} ({origin})"
