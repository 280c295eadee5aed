"""The daily statistics' plots (matplotlib, pure: no services): real PNGs of the agreed size
that show what they are about, safe with any skill name, and their markdown."""

import base64
import io
import re
import warnings
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from warriors.analytics import charts
from warriors.analytics.daily import CreatedWarrior, DailyStatistics, compute_daily_statistics

DAY = date(2026, 3, 1)
BAR = (0x4F, 0x46, 0xE5)
HIGHLIGHT = (0xDC, 0x26, 0x26)


def pixels(png: bytes) -> np.ndarray:
    """The image as an RGB array, after checking it is a PNG of 600 x 300 pixels."""
    assert png.startswith(charts.PNG_SIGNATURE)
    image = Image.open(io.BytesIO(png))
    image.verify()
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == (600, 300)
    return np.asarray(image.convert("RGB"), dtype="int64")


def close_to(array: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> np.ndarray:
    """Where the pixels are (nearly) this colour."""
    return np.asarray(np.abs(array - np.array(colour)).max(axis=-1) <= tolerance)


def runs(column: np.ndarray) -> int:
    """How many separate stretches of True a column of pixels has (bars crossed)."""
    values = column.astype("int8")
    return int((np.diff(values, prepend=0) == 1).sum())


def sample_stats(skills: int = 40, warriors: int = 300) -> DailyStatistics:
    names = [f"Skill {i}" for i in range(skills)]
    created = [
        CreatedWarrior(
            f"W{i}",
            date(1950 + i % 60, 1 + i % 12, 1),
            tuple(names[(i * 7 + k) % skills] for k in range(1 + i % 4)),
        )
        for i in range(warriors)
    ]
    return compute_daily_statistics(DAY, created)


def test_skills_chart_draws_the_top_15_as_bars() -> None:
    stats = sample_stats()
    assert len(stats.skills) == 40

    image = pixels(charts.skills_chart(stats.skills, DAY))

    bars = close_to(image, BAR)
    assert bars.sum() > 10_000  # a real plot, not a blank or a text
    # A column crossing every bar, just right of the y axis: 15 bars, not 40.
    columns_with_bars = np.flatnonzero(bars.sum(axis=0))
    assert runs(bars[:, columns_with_bars[0] + 3]) == charts.TOP_SKILLS


def test_skills_chart_of_a_few_skills_has_a_bar_each() -> None:
    skills = pd.DataFrame({"skill": ["Katana", "Bo", "Judo"], "warriors": [5, 3, 1]})
    bars = close_to(pixels(charts.skills_chart(skills, DAY)), BAR)
    columns = np.flatnonzero(bars.sum(axis=0))
    assert runs(bars[:, columns[0] + 3]) == 3
    # The most popular bar is the longest: the columns it alone reaches are at its row.
    widths = bars.sum(axis=1)
    assert widths.max() > 4 * widths[widths > 0].min()


def test_ages_chart_is_a_histogram_of_the_bands() -> None:
    ages = pd.DataFrame({"age_from": [20, 30, 50], "age_to": [29, 39, 59], "warriors": [4, 8, 2]})
    bars = close_to(pixels(charts.ages_chart(ages, DAY)), BAR)
    heights = bars.sum(axis=0)
    # Three bands drawn side by side over the x range 20-60: 20-29, 30-39 (twice as high),
    # nothing for 40-49, and 50-59 (a quarter of 30-39).
    tallest = heights.max()
    assert tallest > 150
    assert (heights > 0.9 * tallest).sum() > 50  # the 30-39 band is wide, not a line
    assert ((heights > 0.4 * tallest) & (heights < 0.6 * tallest)).sum() > 50  # 20-29
    assert ((heights > 0.15 * tallest) & (heights < 0.35 * tallest)).sum() > 50  # 50-59


def test_creations_chart_marks_the_day() -> None:
    creations = pd.DataFrame(
        {
            "day": [DAY - timedelta(days=d) for d in (20, 10, 3, 1, 0)],
            "warriors_created": [120, 80, 300, 10, 150],
        }
    )
    image = pixels(charts.creations_chart(creations, DAY))
    assert close_to(image, BAR).sum() > 300  # the line
    assert close_to(image, HIGHLIGHT).sum() > 20  # the day's marker and its count

    earlier = creations[creations.day < DAY]  # the day not computed: nothing marked
    assert close_to(pixels(charts.creations_chart(earlier, DAY)), HIGHLIGHT).sum() == 0


def test_creations_chart_takes_timestamps_and_strings_as_days() -> None:
    for days in (pd.to_datetime([DAY]), [DAY.isoformat()]):
        creations = pd.DataFrame({"day": days, "warriors_created": [7]})
        assert close_to(pixels(charts.creations_chart(creations, DAY)), HIGHLIGHT).sum() > 20


def test_empty_day_draws_a_message_not_a_plot() -> None:
    stats = compute_daily_statistics(DAY, [])
    empty_creations = pd.DataFrame({"day": [], "warriors_created": []})
    for png in (
        charts.skills_chart(stats.skills, DAY),
        charts.ages_chart(stats.ages, DAY),
        charts.creations_chart(empty_creations, DAY),
    ):
        image = pixels(png)
        assert close_to(image, BAR).sum() == 0
        assert (image.max(axis=-1) < 200).sum() > 100  # some text is drawn


@pytest.mark.parametrize(
    "skill",
    ["a$b", "$x^2$", "$\\frac{", "[x](y)|*z*", "忍術", "\\n", "A" * 50, "<img src=x onerror=alert(1)>"],
)
def test_any_skill_name_draws_as_plain_text_without_warnings(skill: str) -> None:
    skills = pd.DataFrame({"skill": [skill, "Bo"], "warriors": [2, 1]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels(charts.skills_chart(skills, DAY))


def test_plots_are_small_and_the_same_for_the_same_day() -> None:
    stats = sample_stats()
    first = charts.skills_chart(stats.skills, DAY)
    assert first == charts.skills_chart(stats.skills, DAY)
    assert len(first) < 30_000
    assert len(charts.ages_chart(stats.ages, DAY)) < 30_000


def test_daily_markdown_holds_the_three_plots_inline_with_their_numbers() -> None:
    stats = sample_stats()
    creations = pd.DataFrame({"day": [DAY - timedelta(days=1), DAY], "warriors_created": [42, 300]})

    markdown = charts.daily_markdown(stats, creations)

    assert set(markdown) == {"skill_popularity", "age_distribution", "creations_per_day"}
    for text in markdown.values():
        [encoded] = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
        pixels(base64.b64decode(encoded))
    skill_rows = [line for line in markdown["skill_popularity"].splitlines() if "Skill " in line]
    assert len(skill_rows) == charts.TOP_SKILLS
    assert "| 2026-03-01 |" in markdown["creations_per_day"].replace("  ", " ")


def test_markdown_escapes_user_text() -> None:
    png = charts.skills_chart(pd.DataFrame({"skill": ["Bo"], "warriors": [1]}), DAY)
    numbers = pd.DataFrame({"skill": ["[x](javascript:y)|*z*"], "warriors": [1]})

    text = charts.plot_markdown(png, "Skills [top]", numbers)

    assert text.startswith("![Skills \\[top\\]](data:image/png;base64,")
    assert "\\[x\\](javascript:y)\\|\\*z\\*" in text
    assert charts.plot_markdown(png, "alt", numbers.head(0)).endswith(")")  # no table
