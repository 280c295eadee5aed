"""Charts for analysts: a partition of `daily_warrior_statistics`, materialized in-process
against real PostgreSQL, carries three PNG plots in its metadata and writes its tables as
a Hive-partitioned Parquet dataset that pandas reads back equal to the database."""

import base64
import io
import re
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
from PIL import Image

from orchestration.assets.statistics import DAILY_STATISTICS
from orchestration.definitions import ASSETS, CHECKS
from tests.dagster_support import resources as location_resources
from tests.history import Event, copy_events
from warriors.analytics.charts import PNG_SIGNATURE

PLOTS = ("skill_popularity", "age_distribution", "creations_per_day")
TABLES = {
    "daily_warrior_creations": ["warriors_created", "avg_skills"],
    "daily_skill_popularity": ["skill", "warriors"],
    "daily_age_distribution": ["age_from", "age_to", "warriors"],
}
_DTYPES = {"warriors_created": "int64", "avg_skills": "float64", "skill": "str", "warriors": "int64",
           "age_from": "int64", "age_to": "int64"}  # fmt: skip
_DATA_URI = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def resources(url: str, analytics: Path) -> dict[str, Any]:
    return location_resources(url, analytics_dir=str(analytics))


def materialize(url: str, instance: dg.DagsterInstance, analytics: Path, day: str) -> dict[str, Any]:
    """The metadata of the partition's materialization, values unwrapped."""
    result = dg.materialize(
        [*ASSETS, *CHECKS],
        selection=dg.AssetSelection.assets(DAILY_STATISTICS),
        resources=resources(url, analytics),
        instance=instance,
        partition_key=day,
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node(DAILY_STATISTICS.path[-1])
    return {key: value.value for key, value in materialization.metadata.items()}


def created_on(url: str, day: str, warriors: list[tuple[str, list[str]]]) -> None:
    """WarriorCreated events stored at noon (UTC) of `day`: (dob, skills) each."""
    events: list[Event] = [
        (uuid.uuid4(), "WarriorCreated", 1, {"name": f"W{i}", "dob": dob, "fight_skills": skills})
        for i, (dob, skills) in enumerate(warriors)
    ]
    copy_events(url, events, created_at=datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC))


def database_table(url: str, table: str, days: list[str]) -> pd.DataFrame:
    """The daily table's rows of `days`, as pandas reads the dataset: sorted, day a date."""
    columns = TABLES[table]
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT day, {', '.join(columns)} FROM {table} WHERE day = ANY(%s::date[])",
            (days,),
        ).fetchall()
    frame = pd.DataFrame(rows, columns=["day", *columns])
    return _sorted(frame, columns)


def dataset(analytics: Path, table: str) -> pd.DataFrame:
    """The whole Parquet dataset of a table, as an analyst reads it, day restored."""
    frame = pd.read_parquet(analytics / table)
    frame["day"] = pd.to_datetime(frame["day"].astype(str)).dt.date
    return _sorted(frame[["day", *TABLES[table]]], TABLES[table])


def _sorted(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    typed = frame.astype({column: _DTYPES[column] for column in columns})
    return typed.sort_values(["day", columns[0]], ignore_index=True)


def test_a_partition_carries_three_png_plots_and_writes_its_parquet_files(
    fresh_database: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    analytics = tmp_path / "analytics"
    created_on(fresh_database, "2026-02-27", [("1990-01-01", ["Bo"])] * 3)
    created_on(
        fresh_database,
        "2026-03-01",
        [
            ("2000-01-01", ["Katana", "Bo"]),
            ("1970-06-01", ["Katana"]),
            ("1584-03-12", ["Niten Ichi-ryu", "a|b [c]"]),
            ("2010-05-05", []),
        ],
    )
    materialize(fresh_database, instance, analytics, "2026-02-27")

    metadata = materialize(fresh_database, instance, analytics, "2026-03-01")

    assert metadata["warriors_created"] == 4
    for name in PLOTS:
        [encoded] = _DATA_URI.findall(str(metadata[name]))
        png = base64.b64decode(encoded)
        assert png.startswith(PNG_SIGNATURE)
        assert 1_000 < len(png) < 30_000, f"{name}: {len(png)} bytes"
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG"
        assert image.size == (600, 300)
        assert len(image.convert("RGB").getcolors(maxcolors=1024) or []) > 2  # a picture, not a blank
    assert "Katana" in str(metadata["skill_popularity"])
    assert "2026-02-27" in str(metadata["creations_per_day"])  # the recent days, as stored

    assert Path(str(metadata["analytics_dir"])) == analytics
    for table in TABLES:
        path = Path(str(metadata[f"{table}_parquet"]))
        assert path == analytics / table / "day=2026-03-01" / "part-0.parquet"
        assert path.is_file()
        expected = database_table(fresh_database, table, ["2026-03-01"])
        assert metadata[f"{table}_rows"] == len(expected)
        assert dataset(analytics, table).equals(
            database_table(fresh_database, table, ["2026-02-27", "2026-03-01"])
        )
    skills = pd.read_parquet(analytics / "daily_skill_popularity")
    assert set(skills.columns) == {"day", "skill", "warriors"}
    assert len(skills) == 1 + 4  # Bo on the 27th; Katana, Bo, Niten Ichi-ryu, a|b [c] on the 1st


def test_materializing_a_day_again_replaces_its_files(
    fresh_database: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    analytics = tmp_path / "analytics"
    created_on(fresh_database, "2026-03-05", [("2000-01-01", ["Judo"])])
    materialize(fresh_database, instance, analytics, "2026-03-05")
    created_on(fresh_database, "2026-03-05", [("2000-01-01", ["Judo", "Sumo"])] * 2)

    metadata = materialize(fresh_database, instance, analytics, "2026-03-05")

    assert metadata["daily_skill_popularity_rows"] == 2
    partition = analytics / "daily_skill_popularity" / "day=2026-03-05"
    assert [p.name for p in partition.iterdir()] == ["part-0.parquet"]  # no temporary file left
    skills = dataset(analytics, "daily_skill_popularity")
    assert skills[["skill", "warriors"]].to_dict("records") == [
        {"skill": "Judo", "warriors": 3},
        {"skill": "Sumo", "warriors": 2},
    ]
    assert skills.equals(database_table(fresh_database, "daily_skill_popularity", ["2026-03-05"]))


def test_a_day_without_warriors_has_empty_files_that_read_with_the_others(
    fresh_database: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    analytics = tmp_path / "analytics"
    created_on(fresh_database, "2026-03-10", [("1999-09-09", ["Bo"])])
    materialize(fresh_database, instance, analytics, "2026-03-09")  # nobody that day
    materialize(fresh_database, instance, analytics, "2026-03-10")

    metadata = materialize(fresh_database, instance, analytics, "2026-03-09")

    assert metadata["warriors_created"] == 0
    assert metadata["daily_skill_popularity_rows"] == 0
    assert metadata["daily_warrior_creations_rows"] == 1
    for name in PLOTS:
        assert _DATA_URI.search(str(metadata[name]))  # a plot saying so, still an image
    for table in TABLES:
        days = ["2026-03-09", "2026-03-10"]
        assert dataset(analytics, table).equals(database_table(fresh_database, table, days)), table
    creations = dataset(analytics, "daily_warrior_creations")
    assert creations["warriors_created"].tolist() == [0, 1]
    assert creations["avg_skills"].isna().tolist() == [True, False]
    assert date(2026, 3, 9) in creations["day"].tolist()
