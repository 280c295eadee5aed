"""One day's warrior statistics, computed with pandas (pure: no I/O).

The input is the warriors created that day, as they were created; the output is three
small tables: creations (count, average number of skills), skill popularity (warriors per
skill) and age distribution (warriors per ten-year band of age on that day).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import pandas as pd

AGE_BAND_YEARS = 10


@dataclass(frozen=True, slots=True)
class CreatedWarrior:
    name: str
    dob: date
    fight_skills: tuple[str, ...]


@dataclass(frozen=True)
class DailyStatistics:
    day: date
    warriors_created: int
    avg_skills: float | None
    skills: pd.DataFrame  # columns: skill, warriors (most popular first)
    ages: pd.DataFrame  # columns: age_from, age_to, warriors (youngest band first)


def compute_daily_statistics(day: date, created: Sequence[CreatedWarrior]) -> DailyStatistics:
    warriors = pd.DataFrame(
        {
            "dob": [w.dob for w in created],
            "fight_skills": [list(w.fight_skills) for w in created],
        }
    )
    skill_counts = warriors["fight_skills"].map(len)
    skills = (
        warriors["fight_skills"]
        .explode()
        .dropna()
        .value_counts()
        .rename_axis("skill")
        .reset_index(name="warriors")
        .sort_values(["warriors", "skill"], ascending=[False, True], ignore_index=True)
    )
    ages = pd.Series([_age_on(day, dob) for dob in warriors["dob"]], dtype="int64")
    bands = (ages // AGE_BAND_YEARS * AGE_BAND_YEARS).value_counts().sort_index()
    age_table = pd.DataFrame(
        {
            "age_from": bands.index.astype("int64"),
            "age_to": bands.index.astype("int64") + AGE_BAND_YEARS - 1,
            "warriors": bands.to_numpy(dtype="int64"),
        }
    )
    return DailyStatistics(
        day=day,
        warriors_created=len(warriors),
        avg_skills=float(skill_counts.mean()) if len(warriors) else None,
        skills=skills.astype({"warriors": "int64"}),
        ages=age_table,
    )


def _age_on(day: date, dob: date) -> int:
    """Whole years from `dob` to `day` (0 for a warrior born that day or later)."""
    return max(day.year - dob.year - ((day.month, day.day) < (dob.month, dob.day)), 0)
