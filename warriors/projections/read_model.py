"""The `warriors_read_model` projection: one row per living warrior, and the exact count.

A batch is folded in memory first (the rows it touches are loaded once), then written
with one upsert and one delete, so a replay moves thousands of events per round trip.
Applies are idempotent by aggregate version: an event at or below a row's version is
skipped, and the upsert only overwrites an older version.
"""

from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any
from uuid import UUID

import orjson
from psycopg import AsyncConnection, sql

from warriors.domain.errors import DomainError
from warriors.domain.events import (
    AGGREGATE_TYPE,
    WarriorCreated,
    WarriorDeleted,
    WarriorErased,
    WarriorUpdated,
    event_from_data,
    is_erased,
)
from warriors.eventstore.opening import opened
from warriors.eventstore.records import StoredEvent, StreamPosition
from warriors.projections.base import BlueGreenProjection, PoisonEvent

READ_MODEL = "warriors_read_model"
SHADOW_SUFFIX = "__shadow"
RETIRED_SUFFIX = "__retired"
SWAP_LOCK_TIMEOUT = "200ms"


DELETIONS = "read_model_deletions"
_RECORD_DELETIONS = f"""
INSERT INTO {DELETIONS} (id, version) SELECT * FROM unnest(%s::uuid[], %s::int[])
ON CONFLICT (id) DO UPDATE SET version = greatest({DELETIONS}.version, excluded.version)
"""

_DELETED_AT = """
SELECT aggregate_id, max(event_version) FROM event_store
WHERE aggregate_id = ANY(%s) AND event_type IN ('WarriorDeleted', 'WarriorErased') GROUP BY aggregate_id
"""


@dataclass(slots=True)  # not frozen: built per event in replays, frozen __init__ is slow
class _Row:
    name: str
    dob: date
    fight_skills: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    version: int
    deleted: bool = False


def vocabulary_insert(rows: str) -> str:
    """The statement adding to the search vocabulary the words of the rows a CTE named
    `rows` returned (their `search_vector`): sorted, so that concurrent writers (a
    rebuild's, the live projector's, the API's inline creations) take the words' locks in
    one order and never deadlock."""
    return (
        f"INSERT INTO search_words (word) SELECT DISTINCT word FROM {rows},"
        " unnest(tsvector_to_array(search_vector)) AS word ORDER BY word ON CONFLICT DO NOTHING"
    )


class WarriorsReadModel:
    """`table` is the live read model, or a shadow copy being rebuilt; `keeps_count`
    says whether `warrior_count` follows it (only the live one)."""

    def __init__(
        self,
        name: str = READ_MODEL,
        table: str = READ_MODEL,
        *,
        keeps_count: bool = True,
        redelivery: bool = False,
    ) -> None:
        self.name = name
        self.table = table
        self.keeps_count = keeps_count
        # Fed at least once (from Kafka): an event may come again after its warrior was
        # deleted, when the row (the only record of its version) is gone.
        self.redelivery = redelivery
        ident = sql.Identifier(table)
        self._load = sql.SQL(
            "SELECT id, name, dob, fight_skills, created_at, updated_at, version FROM {} WHERE id = ANY(%s)"
        ).format(ident)
        # The rows, and in the same statement the search vocabulary gains their new words
        # (sorted: concurrent writers, a rebuild's and the live projector's, take the
        # words' locks in one order and never deadlock).
        self._upsert = sql.SQL(
            """WITH written AS (
                INSERT INTO {t} AS t (id, name, dob, fight_skills, created_at, updated_at, version)
                SELECT id, name, dob, fight_skills, created_at, updated_at, version
                FROM jsonb_to_recordset(%s::jsonb) AS r(id uuid, name text, dob date, fight_skills text[],
                     created_at timestamptz, updated_at timestamptz, version int)
                ON CONFLICT (id) DO UPDATE SET
                    name = excluded.name, dob = excluded.dob, fight_skills = excluded.fight_skills,
                    updated_at = excluded.updated_at, version = excluded.version
                WHERE t.version < excluded.version
                RETURNING search_vector
            )
            """
            + vocabulary_insert("written")
        ).format(t=ident)
        self._delete = sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(ident)
        self._words = sql.SQL(
            "SELECT DISTINCT word FROM {}, unnest(tsvector_to_array(search_vector)) AS word"
            " WHERE id = ANY(%s)"
        ).format(ident)
        # A vocabulary word is the lexeme itself: quoted, it is read back as that lexeme.
        self._forget_words = sql.SQL(
            """DELETE FROM search_words w WHERE w.word = ANY(%s::text[])
            AND NOT EXISTS (SELECT 1 FROM {} t WHERE t.search_vector @@ quote_literal(w.word)::tsquery)"""
        ).format(ident)
        self._reset = sql.SQL("TRUNCATE {}").format(ident)
        self._skip = sql.SQL("UPDATE {} SET version = %s WHERE id = %s AND version = %s").format(ident)

    async def apply(self, conn: AsyncConnection[Any], events: list[StoredEvent]) -> None:
        events = [e for e in events if e.aggregate_type == AGGREGATE_TYPE]
        if not events:
            return
        ids = list({e.aggregate_id for e in events})
        cursor = await conn.execute(self._load, (ids,))
        before: dict[UUID, _Row] = {
            row[0]: _Row(row[1], row[2], tuple(row[3]), row[4], row[5], row[6])
            for row in await cursor.fetchall()
        }
        # Already applied (a creation written inline, warriors/projections/inline.py, or a
        # redelivery): neither opened (a key lookup and a decryption) nor folded.
        events = [
            e for e in events if (row := before.get(e.aggregate_id)) is None or e.event_version > row.version
        ]
        if not events:
            return
        passed_deleted: dict[UUID, int] = {}
        events = await opened(conn, events)
        if self.redelivery:
            events, passed_deleted = await self._without_deleted(conn, events, before)
        after = dict(before)
        for event in events:
            after[event.aggregate_id] = _evolve(after.get(event.aggregate_id), event)

        upserts = [
            {"id": aggregate_id, "name": row.name, "dob": row.dob, "fight_skills": row.fight_skills,
             "created_at": row.created_at, "updated_at": row.updated_at, "version": row.version}
            for aggregate_id, row in after.items()
            if not row.deleted and row != before.get(aggregate_id)
        ]  # fmt: skip
        deletes = [
            aggregate_id for aggregate_id, row in after.items() if row.deleted and aggregate_id in before
        ]
        if upserts:
            await conn.execute(self._upsert, (orjson.dumps(upserts).decode(),))
        if deletes:
            erased = [a for a in deletes if a in {e.aggregate_id for e in events if _erasure(e)}]
            words = await self._words_of(conn, erased)
            await conn.execute(self._delete, (deletes,))
            if words:  # an erased name's words leave the vocabulary, unless another row has them
                await conn.execute(self._forget_words, (words,))
        gone = {**passed_deleted, **{a: row.version for a, row in after.items() if row.deleted}}
        if self.keeps_count and gone:  # only the live read model: what `?position=` reads fed from Kafka
            await conn.execute(_RECORD_DELETIONS, (list(gone), list(gone.values())))
        if self.keeps_count:
            born = sum(1 for a, row in after.items() if not row.deleted and a not in before)
            if delta := born - len(deletes):
                await conn.execute("UPDATE warrior_count SET total = total + %s", (delta,))

    async def _words_of(self, conn: AsyncConnection[Any], warrior_ids: list[UUID]) -> list[str]:
        if not warrior_ids:
            return []
        cursor = await conn.execute(self._words, (warrior_ids,))
        return [row[0] for row in await cursor.fetchall()]

    def shadow(self) -> "WarriorsReadModel":
        """The same projection into a shadow table (a blue/green rebuild builds it)."""
        return WarriorsReadModel(
            f"{self.name}{SHADOW_SUFFIX}", f"{self.table}{SHADOW_SUFFIX}", keeps_count=False
        )

    async def create_shadow(self, conn: AsyncConnection[Any], shadow: BlueGreenProjection) -> None:
        """`CREATE TABLE shadow (LIKE live INCLUDING ALL)`: the same columns, defaults,
        generated columns, indexes and constraints (index names differ), then the live
        table's owner and grants, which LIKE does not copy: once swapped in, the services'
        roles keep their rights on it (docs/security.md)."""
        assert isinstance(shadow, WarriorsReadModel)
        for table in (shadow.table, self.table + RETIRED_SUFFIX):
            await _drop_table(conn, table)
        live, new = sql.Identifier(self.table), sql.Identifier(shadow.table)
        await conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(new, live))
        owner, grants = await _owner_and_grants(conn, self.table)
        for grantee, privilege in grants:
            if privilege in _PRIVILEGES:  # a closed set, so it can be spliced into the GRANT
                grant = sql.SQL("GRANT {} ON {} TO {}").format(
                    sql.SQL(privilege), new, sql.Identifier(grantee)
                )
                await conn.execute(grant)
        await conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(new, sql.Identifier(owner)))

    async def swap_in(self, conn: AsyncConnection[Any], shadow: BlueGreenProjection) -> None:
        """The count follows the shadow's rows, then two renames: live -> retired, shadow
        -> live. The renames wait at most SWAP_LOCK_TIMEOUT for readers already on the
        live table, so that new readers never queue behind a long one for longer."""
        assert isinstance(shadow, WarriorsReadModel)
        if self.keeps_count:
            await conn.execute(
                sql.SQL("UPDATE warrior_count SET total = (SELECT count(*) FROM {})").format(
                    sql.Identifier(shadow.table)
                )
            )
        await conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(SWAP_LOCK_TIMEOUT)))
        for old, new in ((self.table, self.table + RETIRED_SUFFIX), (shadow.table, self.table)):
            await conn.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
            )

    async def retire(self, conn: AsyncConnection[Any]) -> None:
        await conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.table + RETIRED_SUFFIX))
        )

    async def drop_shadow(self, conn: AsyncConnection[Any], shadow: BlueGreenProjection) -> None:
        assert isinstance(shadow, WarriorsReadModel)
        await _drop_table(conn, shadow.table)

    async def skip(self, conn: AsyncConnection[Any], event: StoredEvent) -> None:
        """Move the row's version past the parked event, keeping its data: the warrior's
        later events then apply. (A parked WarriorCreated leaves no row; each later event
        of that warrior fails in turn and is parked too.)"""
        await conn.execute(self._skip, (event.event_version, event.aggregate_id, event.event_version - 1))

    async def _without_deleted(
        self, conn: AsyncConnection[Any], events: list[StoredEvent], rows: dict[UUID, "_Row"]
    ) -> tuple[list[StoredEvent], dict[UUID, int]]:
        """Drop the events of warriors without a row that the store says were deleted at
        or after that event's version: already applied, then deleted (a redelivery), or
        deleted later (its row would only come and go). Returns the events kept, and the
        deletions (warrior: version) that dropping stood for: the read model's state for
        those warriors is as after their deletion."""
        missing = list({e.aggregate_id for e in events if e.aggregate_id not in rows})
        if not missing:
            return events, {}
        cursor = await conn.execute(_DELETED_AT, (missing,))
        deleted_at = {aggregate_id: version for aggregate_id, version in await cursor.fetchall()}
        kept = [e for e in events if e.event_version > deleted_at.get(e.aggregate_id, 0)]
        dropped = {e.aggregate_id for e in events} - {e.aggregate_id for e in kept}
        return kept, {a: deleted_at[a] for a in dropped}

    async def intact(self, checkpoint: StreamPosition, *, fresh: bool = False) -> bool:
        return True  # its rows move in the engine's own transaction

    async def caught_up(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def reset(self, conn: AsyncConnection[Any]) -> None:
        await conn.execute(self._reset)
        if self.keeps_count:
            await conn.execute(f"TRUNCATE {DELETIONS}")
        if self.keeps_count:
            await conn.execute("UPDATE warrior_count SET total = 0")


_PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"})
_GRANTS = """
SELECT pg_get_userbyid(c.relowner), pg_get_userbyid(a.grantee), a.privilege_type
FROM pg_class c LEFT JOIN LATERAL aclexplode(c.relacl) a ON a.grantee NOT IN (0, c.relowner)
WHERE c.oid = %s::regclass
"""


async def _owner_and_grants(conn: AsyncConnection[Any], table: str) -> tuple[str, list[tuple[str, str]]]:
    """The table's owner and its (grantee, privilege) grants to roles other than the owner."""
    rows = await (await conn.execute(_GRANTS, (table,))).fetchall()
    return rows[0][0], [(grantee, privilege) for _, grantee, privilege in rows if grantee is not None]


async def _drop_table(conn: AsyncConnection[Any], table: str) -> None:
    await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def _version(row: _Row | None) -> int:
    return 0 if row is None else row.version


def _erasure(event: StoredEvent) -> bool:
    """An opened event that erases its warrior (its erasure, or any event of it after)."""
    return event.event_type == WarriorErased.event_type or is_erased(event.data)


def _evolve(row: _Row | None, event: StoredEvent) -> _Row:
    """The row after `event`; the row itself when the event was already applied."""
    if row is not None and event.event_version <= row.version:
        return row  # a redelivery: already applied
    try:
        domain_event = event_from_data(event.event_type, event.data)
    except (KeyError, TypeError, ValueError) as exc:
        raise PoisonEvent(event, f"unreadable event data: {exc!r}") from exc
    if isinstance(domain_event, WarriorErased):
        # Gone, whatever came before: a deleted warrior erased later has no row, and in a
        # replay every event of an erased warrior reads as this (nothing is written).
        gone = row or _Row("", date.min, (), event.created_at, event.created_at, 0)
        return replace(gone, deleted=True, version=event.event_version, updated_at=event.created_at)
    expected = 1 if row is None else row.version + 1
    if event.event_version != expected:
        raise PoisonEvent(event, f"version {event.event_version} does not follow {expected - 1}")
    if isinstance(domain_event, WarriorCreated):
        if row is not None:
            raise PoisonEvent(event, "WarriorCreated for an existing warrior")
        return _Row(
            domain_event.name,
            domain_event.dob,
            domain_event.fight_skills,
            event.created_at,
            event.created_at,
            1,
        )
    if row is None or row.deleted:
        raise PoisonEvent(event, f"{event.event_type} for a warrior that does not exist")
    if isinstance(domain_event, WarriorUpdated):
        return replace(
            row,
            name=domain_event.name if domain_event.name is not None else row.name,
            dob=domain_event.dob if domain_event.dob is not None else row.dob,
            fight_skills=domain_event.fight_skills
            if domain_event.fight_skills is not None
            else row.fight_skills,
            updated_at=event.created_at,
            version=event.event_version,
        )
    if isinstance(domain_event, WarriorDeleted):
        return replace(row, deleted=True, version=event.event_version, updated_at=event.created_at)
    raise DomainError(f"unhandled event {domain_event!r}")
