"""Bounded growth of the store's side tables: idempotency keys expire after their window,
and only the latest snapshots of each aggregate are kept. The events themselves are
never deleted (docs/event-store.md, "Retention", says how the store would be
partitioned or archived at scale)."""

from datetime import timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

BATCH = 5000

# Snapshots beyond the newest `keep` of each aggregate (of those given, or of all).
_PRUNE_SNAPSHOTS = """
DELETE FROM event_snapshots s
USING (
    SELECT aggregate_id, version,
           row_number() OVER (PARTITION BY aggregate_id ORDER BY version DESC) AS newest
    FROM event_snapshots
    WHERE %(ids)s::uuid[] IS NULL OR aggregate_id = ANY(%(ids)s::uuid[])
) old
WHERE old.newest > %(keep)s AND s.aggregate_id = old.aggregate_id AND s.version = old.version
"""


async def expire_idempotency_keys(conn: AsyncConnection[Any], older_than: timedelta) -> int:
    """Delete the keys recorded more than `older_than` ago, in batches (each its own
    statement); returns how many went. A retry with an expired key is a new command."""
    total = 0
    while True:
        cursor = await conn.execute("SELECT expire_idempotency_keys(%s, %s)", (older_than, BATCH))
        row = await cursor.fetchone()
        gone = int(row[0]) if row else 0
        total += gone
        if gone < BATCH:
            return total


async def prune_snapshots(
    conn: AsyncConnection[Any], keep: int, aggregate_ids: list[UUID] | None = None
) -> int:
    """Keep the newest `keep` snapshots of each aggregate (of `aggregate_ids`, or of all);
    returns how many older ones were deleted. A load uses the newest, so nothing is lost."""
    if keep < 1:
        raise ValueError("keep at least one snapshot per aggregate")
    cursor = await conn.execute(_PRUNE_SNAPSHOTS, {"ids": aggregate_ids, "keep": keep})
    return cursor.rowcount
