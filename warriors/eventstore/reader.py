"""The gap-safe read of the global stream.

Why not `WHERE position > last ORDER BY position`: positions come from a sequence when a
row is inserted, but transactions commit in any order. Writer A takes position 10, writer
B takes 11 and commits first; a reader sees 11, moves its checkpoint to 11, and never
sees 10 when A commits a moment later. `tests/test_gap_safety.py` keeps such a naive
reader and shows it losing events.

The technique chosen here (writers stay fully concurrent, no table lock):
* each row records its writing transaction, `transaction_id = pg_current_xact_id()`;
* a reader only takes rows whose transaction is older than the oldest transaction still
  running, `transaction_id < pg_snapshot_xmin(pg_current_snapshot())`. Every transaction
  below that horizon has ended, so no row with such a transaction id can appear later;
* rows are read in (transaction_id, position) order and the checkpoint is that pair.
  A transaction that commits late has a lower id than some rows already read; it is not
  skipped, because until it ends the horizon stays at or below its id and nothing past it
  is handed out.

Per aggregate, versions still come out in order: a writer appends version N+1 only after
it has read version N committed, and transaction ids are handed out when a transaction
first writes, so the writer of N+1 has the larger id.

Cost: a reader waits for the slowest transaction in flight. Transaction ids are
server-wide, so a long-running transaction anywhere on the PostgreSQL server, in any
database (one that took a transaction id), holds every reader back: keep transactions
short, and give other heavy users (Dagster's own storage, say) a server of their own in
production; `lag_seconds` in projection_offsets makes such a stall visible.
"""

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from warriors.eventstore.records import START, StoredEvent, StreamPosition

EVENT_COLUMNS = """position, transaction_id::text::bigint, event_id, aggregate_id, aggregate_type,
    event_type, event_version, schema_version, event_data, metadata, created_at"""

_READ_AFTER = f"""
SELECT {EVENT_COLUMNS}
FROM event_store
WHERE (transaction_id, position) > (%(transaction_id)s::text::xid8, %(position)s)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, position
LIMIT %(limit)s
"""


def stored_event(row: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(*row)


async def read_after(
    conn: AsyncConnection[Any], after: StreamPosition = START, limit: int = 1000
) -> list[StoredEvent]:
    """Up to `limit` events that follow `after`, never skipping one that commits later."""
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(
            _READ_AFTER,
            {"transaction_id": str(after.transaction_id), "position": after.position, "limit": limit},
        )
        return [stored_event(row) for row in await cursor.fetchall()]
