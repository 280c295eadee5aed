"""The daily statistics as pictures: small PNG plots for Dagster's UI (pure: no I/O).

Drawn with matplotlib's object-oriented API (a `Figure`, never pyplot) and rendered by
its Agg rasterizer: no GUI backend is ever chosen, no global figure registry holds the
figures, and there is nothing to close. Each plot is 6 x 3 inches at 100 dpi (600 x 300
pixels), reduced to a 64-colour palette (flat bars and text on white lose nothing
visible; the octree keeps a small red marker red) and written as an optimized PNG of
about 3-10 KB, so that a materialization's event stays light.

Labels are user data (skill names): they are drawn as plain text, never as mathtext
(a `$` in a name is a dollar sign), and long ones are shortened.
"""

import base64
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from warriors.analytics.daily import AGE_BAND_YEARS, DailyStatistics

WIDTH_INCHES, HEIGHT_INCHES, DPI = 6.0, 3.0, 100
TOP_SKILLS = 15
RECENT_DAYS = 30  # the creations chart of a day shows the 30 days ending with it
PALETTE_COLOURS = 64
LABEL_CHARACTERS = 28

_BAR = "#4f46e5"
_HIGHLIGHT = "#dc2626"
_MUTED = "#6b7280"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What markdown would read as markup inside a table cell or an image's alt text.
_MARKDOWN_SPECIAL = frozenset("\\`*_[]<>|~&")


def skills_chart(skills: pd.DataFrame, day: date, top: int = TOP_SKILLS) -> bytes:
    """Horizontal bars of the `top` most popular skills (columns skill, warriors; most
    popular first, as DailyStatistics holds them), the most popular at the top."""
    shown = skills.head(top)
    with _figure() as (figure, axes):
        title = f"Skills' popularity on {day.isoformat()}"
        if len(skills) > top:
            title += f" (top {top} of {len(skills)})"
        axes.set_title(title, fontsize=10, parse_math=False)
        if shown.empty:
            _nothing(axes, "no skills this day")
        else:
            positions = np.arange(len(shown))
            axes.barh(positions, shown["warriors"].to_numpy(dtype="int64"), color=_BAR)
            axes.set_yticks(
                positions, labels=[_label(s) for s in shown["skill"]], fontsize=7, parse_math=False
            )
            axes.invert_yaxis()  # the most popular at the top
            axes.set_xlabel("warriors", fontsize=8)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.tick_params(axis="x", labelsize=7)
        return _png(figure)


def ages_chart(ages: pd.DataFrame, day: date) -> bytes:
    """A histogram of the ages on the day, from the age distribution's bands (columns
    age_from, age_to, warriors): one bar per ten-year band, over its whole width."""
    with _figure() as (figure, axes):
        axes.set_title(f"Ages on {day.isoformat()} (bands of {AGE_BAND_YEARS} years)", fontsize=10)
        if ages.empty:
            _nothing(axes, "no warriors created this day")
        else:
            starts = ages["age_from"].to_numpy(dtype="int64")
            axes.bar(
                starts,
                ages["warriors"].to_numpy(dtype="int64"),
                width=AGE_BAND_YEARS,
                align="edge",
                color=_BAR,
                edgecolor="white",
                linewidth=0.8,
            )
            axes.set_xlim(float(starts.min()), float(starts.max() + AGE_BAND_YEARS))
            axes.set_xlabel("age (years)", fontsize=8)
            axes.set_ylabel("warriors", fontsize=8)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
            axes.tick_params(labelsize=7)
        return _png(figure)


def creations_chart(creations: pd.DataFrame, day: date, window_days: int = RECENT_DAYS) -> bytes:
    """Warriors created per day over the `window_days` days ending with `day` (columns day,
    warriors_created): a line through the days present (days not computed yet are
    absent, not zero), `day` itself marked."""
    first = day - timedelta(days=window_days - 1)
    with _figure() as (figure, axes):
        axes.set_title(f"Warriors created per day, {first.isoformat()} to {day.isoformat()}", fontsize=10)
        if creations.empty:
            _nothing(axes, "no day computed yet")
        else:
            # x: days since `first`, labelled with dates every week back from `day`.
            offsets = np.array([(_as_date(d) - first).days for d in creations["day"]], dtype="int64")
            counts = creations["warriors_created"].to_numpy(dtype="int64")
            axes.plot(offsets, counts, color=_BAR, marker="o", markersize=3, linewidth=1.5)
            last = window_days - 1
            if last in offsets:
                [count] = counts[offsets == last]
                axes.plot([last], [count], "o", color=_HIGHLIGHT, markersize=6)
                axes.annotate(
                    f"{int(count):,}",
                    (last, float(count)),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=8,
                    color=_HIGHLIGHT,
                )
            ticks = list(range(last, -1, -7))[::-1]
            axes.set_xticks(ticks, labels=[(first + timedelta(days=t)).strftime("%b %d") for t in ticks])
            axes.set_xlim(-0.5, last + 0.5)
            axes.set_ylim(bottom=0, top=max(1, int(counts.max())) * 1.2)
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
            axes.set_ylabel("warriors created", fontsize=8)
            axes.tick_params(labelsize=7)
            axes.grid(axis="y", color="#e5e7eb", linewidth=0.6)
            axes.set_axisbelow(True)
        return _png(figure)


def daily_markdown(stats: DailyStatistics, recent_creations: pd.DataFrame) -> dict[str, str]:
    """The day's three plots as markdown, each followed by its numbers:
    `skill_popularity` (the top 15), `age_distribution` and `creations_per_day` (the
    stored days of the 30 ending with this one; columns day, warriors_created)."""
    day = stats.day
    ages = pd.DataFrame(
        {
            "age": stats.ages["age_from"].astype(str) + "-" + stats.ages["age_to"].astype(str),
            "warriors": stats.ages["warriors"],
        }
    )
    creations = pd.DataFrame(
        {
            "day": recent_creations["day"].astype(str),
            "warriors created": recent_creations["warriors_created"],
        }
    )
    return {
        "skill_popularity": plot_markdown(
            skills_chart(stats.skills, day), f"Skills' popularity on {day}", stats.skills.head(TOP_SKILLS)
        ),
        "age_distribution": plot_markdown(ages_chart(stats.ages, day), f"Ages on {day}", ages),
        "creations_per_day": plot_markdown(
            creations_chart(recent_creations, day), f"Warriors created per day up to {day}", creations
        ),
    }


def plot_markdown(png: bytes, alt: str, numbers: pd.DataFrame) -> str:
    """Markdown showing `png` inline (a data: URI, which Dagster's UI renders), then
    `numbers` as a table (nothing when it is empty: the plot says so)."""
    text = f"![{_escaped(alt)}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
    if numbers.empty:
        return text
    cells = numbers.astype(str).map(_escaped)
    return f"{text}\n\n{cells.to_markdown(index=False)}"


@contextmanager
def _figure() -> Iterator[tuple[Figure, Axes]]:
    figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    with warnings.catch_warnings():
        # A skill in a script the bundled font lacks (CJK, say) is drawn with boxes; its
        # warning would only repeat on every materialization.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        yield figure, axes


def _png(figure: Figure) -> bytes:
    raw = io.BytesIO()
    figure.savefig(raw, format="rgba", dpi=DPI)  # Agg's pixels, exactly figsize x dpi
    size = (round(WIDTH_INCHES * DPI), round(HEIGHT_INCHES * DPI))
    image = Image.frombytes("RGBA", size, raw.getvalue()).convert("RGB")
    palette = image.quantize(
        colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
    )
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _nothing(axes: Axes, message: str) -> None:
    axes.set_axis_off()
    axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=9, color=_MUTED, transform=axes.transAxes)


def _escaped(text: str) -> str:
    """Text that markdown shows as it is (a skill may be called `[x]|*y*`)."""
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in text)


def _as_date(value: object) -> date:
    """A day as a date (from a date, a datetime, a pandas Timestamp or an ISO string)."""
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _label(text: object) -> str:
    label = str(text)
    return label if len(label) <= LABEL_CHARACTERS else label[: LABEL_CHARACTERS - 1] + "…"
