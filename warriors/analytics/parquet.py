"""The daily statistics as a Parquet dataset that pandas, DuckDB or a notebook reads directly.

One file per table and day, laid out Hive-style under the analytics folder
(`ANALYTICS_DIR`, default `DATA_DIR/analytics`):

    daily_warrior_creations/day=2026-11-26/part-0.parquet   warriors_created, avg_skills
    daily_skill_popularity/day=2026-11-26/part-0.parquet    skill, warriors
    daily_age_distribution/day=2026-11-26/part-0.parquet    age_from, age_to, warriors

The day is in the folder's name only (Hive partitioning: `pandas.read_parquet(folder)` and
DuckDB's `hive_partitioning` restore it as a column). Each file is written to a hidden
temporary file in the same folder, synced, then renamed over the old one: a reader sees
the old file or the new one, never half of one, and writing a day again replaces it.
Every file carries its table's full schema, even with no rows (a day without warriors).
"""

import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from warriors.analytics.daily import DailyStatistics

CREATIONS = "daily_warrior_creations"
SKILL_POPULARITY = "daily_skill_popularity"
AGE_DISTRIBUTION = "daily_age_distribution"
TABLES = (CREATIONS, SKILL_POPULARITY, AGE_DISTRIBUTION)
PART = "part-0.parquet"

# Explicit column types, so that a file with no rows has the same schema as the others.
_DTYPES: dict[str, dict[str, str]] = {
    CREATIONS: {"warriors_created": "int64", "avg_skills": "float64"},
    SKILL_POPULARITY: {"skill": "str", "warriors": "int64"},
    AGE_DISTRIBUTION: {"age_from": "int64", "age_to": "int64", "warriors": "int64"},
}


@dataclass(frozen=True, slots=True)
class ParquetPart:
    table: str
    path: Path
    rows: int


def partition_path(root: Path, table: str, day: date) -> Path:
    """`root/table/day=YYYY-MM-DD/part-0.parquet`."""
    return root / table / f"day={day.isoformat()}" / PART


def daily_tables(stats: DailyStatistics) -> dict[str, pd.DataFrame]:
    """The day's rows of each table, as they go into the dataset (without the day)."""
    frames = {
        CREATIONS: pd.DataFrame(
            {"warriors_created": [stats.warriors_created], "avg_skills": [stats.avg_skills]}
        ),
        SKILL_POPULARITY: stats.skills[["skill", "warriors"]],
        AGE_DISTRIBUTION: stats.ages[["age_from", "age_to", "warriors"]],
    }
    return {table: frame.astype(_DTYPES[table]).reset_index(drop=True) for table, frame in frames.items()}


def write_daily_parquet(root: Path, stats: DailyStatistics) -> list[ParquetPart]:
    """Write (or replace) the day's file of each table under `root`."""
    parts = []
    for table, frame in daily_tables(stats).items():
        path = partition_path(root, table, stats.day)
        _write_atomically(frame, path)
        parts.append(ParquetPart(table, path, len(frame)))
    return parts


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden (a leading dot) and not ending in .parquet: pyarrow's dataset discovery and
    # DuckDB's `*/*.parquet` both pass over a temporary file left by a crash.
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            frame.to_parquet(file, engine="pyarrow", index=False)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600: readable like any other output
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX: fsync the folder)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
