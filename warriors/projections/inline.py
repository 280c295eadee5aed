"""Creations projected inline: a new warrior's read-model row is written by the statement
that appends its `WarriorCreated` (as Marten's inline projections are), with its words
added to the search vocabulary and the count moved, all in the append's transaction.

Why (issue 24, docs/benchmarks.md): a creation's Location is followed within
milliseconds; a follow-up that found no row yet folded the warrior from its events (a
load, a decryption, a fold), and the live projector spent a batch per creation (a wake-up,
a key lookup and decryption, an upsert, a count). Now the row exists from the commit on;
the live projector still reads the event and finds the row at its version already, so it
writes nothing and opens nothing for it (`WarriorsReadModel.apply`).

Only creations: a change's row needs the row it changes (its `created_at`, its fields),
which is the projector's to hold in order; deletions and erasures carry the vocabulary's
and the deletions' bookkeeping. Only in PostgreSQL mode (`INLINE_READ_MODEL`, on by
default): with Kafka the read model is the consumers' (docs/event-bus.md), and their
protocol decides what is applied when.

Rebuilds are unchanged: a replay or a shadow table is filled from the store by the engine,
which skips rows already at their version and counts only the rows it inserts; a row
written inline into a table a rebuild then empties is replayed from its event.
"""

from typing import Any
from uuid import UUID

from warriors.domain.events import WarriorCreated
from warriors.projections.read_model import READ_MODEL, vocabulary_insert

# CTEs spliced into the appender's statement after `inserted` (the events it stored):
# a row only for a creation whose event was stored. The vocabulary's words are taken in
# sorted order, as the projector takes them (no deadlock between them); the count row is
# locked last, as the projector locks it.
INLINE_CREATIONS = f"""inline_rows AS (
    INSERT INTO {READ_MODEL} AS t (id, name, dob, fight_skills, created_at, updated_at, version)
    SELECT r.id, r.name, r.dob, r.fight_skills, i.created_at, i.created_at, i.event_version
    FROM jsonb_to_recordset(%(inline)s::jsonb) AS r(id uuid, name text, dob date, fight_skills text[])
    JOIN inserted i ON i.aggregate_id = r.id AND i.event_version = 1
    ON CONFLICT (id) DO NOTHING
    RETURNING search_vector
),
inline_words AS (
    {vocabulary_insert("inline_rows")}
),
inline_count AS (
    UPDATE warrior_count SET total = total + born.n
    FROM (SELECT count(*) AS n FROM inline_rows) AS born WHERE born.n > 0
)"""


def creation_row(warrior_id: UUID, created: WarriorCreated) -> dict[str, Any]:
    """The row `INLINE_CREATIONS` writes for a creation (plain text, as the read model
    holds it; the event itself carries the personal fields sealed)."""
    return {
        "id": str(warrior_id),
        "name": created.name,
        "dob": created.dob.isoformat(),
        "fight_skills": list(created.fight_skills),
    }
