"""Where the statistics come from and go: the day's WarriorCreated events in, the daily
tables and the statistics materialized view out (and the recent days back, for a chart)."""

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd
from psycopg import AsyncConnection

from warriors.analytics.daily import CreatedWarrior, DailyStatistics
from warriors.domain.events import WarriorCreated, event_from_data
from warriors.eventstore.opening import keyring_for

_CREATED_ON = """
SELECT aggregate_id, schema_version, event_data FROM event_store
WHERE event_type = %(type)s AND created_at >= %(start)s AND created_at < %(end)s
ORDER BY position
"""


async def warriors_created_on(conn: AsyncConnection[Any], day: date) -> list[CreatedWarrior]:
    """The warriors whose WarriorCreated event was stored on `day` (UTC), as created;
    erased warriors left out (their date of birth is gone: a backfill of the day after an
    erasure no longer counts them)."""
    start = datetime.combine(day, time(), UTC)
    cursor = await conn.execute(
        _CREATED_ON,
        {"type": WarriorCreated.event_type, "start": start, "end": start + timedelta(days=1)},
    )
    rows = await cursor.fetchall()
    keyring = await keyring_for(conn, list({row[0] for row in rows}))
    created = []
    for warrior_id, schema_version, data in rows:
        opened = keyring.open_data(warrior_id, WarriorCreated.event_type, schema_version, data)
        event = event_from_data(WarriorCreated.event_type, opened)
        if isinstance(event, WarriorCreated):  # an erased warrior is no longer counted
            created.append(CreatedWarrior(event.name, event.dob, event.fight_skills))
    return created


async def save_daily_statistics(conn: AsyncConnection[Any], stats: DailyStatistics) -> None:
    """Replace the day's rows in the three daily tables, in one transaction."""
    async with conn.transaction():
        for table in ("daily_warrior_creations", "daily_skill_popularity", "daily_age_distribution"):
            await conn.execute(f"DELETE FROM {table} WHERE day = %s", (stats.day,))
        await conn.execute(
            "INSERT INTO daily_warrior_creations (day, warriors_created, avg_skills) VALUES (%s, %s, %s)",
            (stats.day, stats.warriors_created, stats.avg_skills),
        )
        skills = stats.skills.to_dict("records")
        ages = stats.ages.to_dict("records")
        async with conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO daily_skill_popularity (day, skill, warriors) VALUES (%s, %s, %s)",
                [(stats.day, s["skill"], int(s["warriors"])) for s in skills],
            )
            await cursor.executemany(
                "INSERT INTO daily_age_distribution (day, age_from, age_to, warriors)"
                " VALUES (%s, %s, %s, %s)",
                [(stats.day, int(a["age_from"]), int(a["age_to"]), int(a["warriors"])) for a in ages],
            )


async def creations_up_to(conn: AsyncConnection[Any], last: date, days: int) -> pd.DataFrame:
    """The stored daily creations of the `days` days ending with `last` (the days computed so
    far; a day not computed yet is absent): columns day, warriors_created, oldest first."""
    cursor = await conn.execute(
        "SELECT day, warriors_created FROM daily_warrior_creations WHERE day > %s AND day <= %s ORDER BY day",
        (last - timedelta(days=days), last),
    )
    rows = await cursor.fetchall()
    return pd.DataFrame(
        {"day": [day for day, _ in rows], "warriors_created": [int(n) for _, n in rows]}
    ).astype({"warriors_created": "int64"})


async def refresh_statistics_view(conn: AsyncConnection[Any]) -> int:
    """REFRESH MATERIALIZED VIEW CONCURRENTLY warrior_statistics (readers never wait);
    returns the number of days it holds."""
    await conn.execute("SELECT refresh_warrior_statistics()")
    cursor = await conn.execute("SELECT count(*) FROM warrior_statistics")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0
