"""The `warriors_search` projection: the warriors in the search engine's index, behind the
alias `warriors`.

A batch folds each touched warrior again from all its stored events, so every write is
the whole, latest document, and writes it with its aggregate version as
the external version: the engine refuses an older or repeated write, so redelivery and
late events never regress a document. A deletion is a versioned delete.

Batches are written with `refresh=wait_for`: when the checkpoint moves, the documents are
searchable (`?position=` relies on it). A rebuild writes into a new index generation
without waiting for refreshes, refreshes once, then moves the alias atomically: readers
never see an empty or partial index.
"""

import time
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from warriors.adapters.search_engine import IndexAction, SearchEngine, SearchRejected, SearchUnavailable
from warriors.application.warrior_commands import living, rebuild
from warriors.domain.events import AGGREGATE_TYPE
from warriors.eventstore.opening import keyring_for
from warriors.eventstore.reader import EVENT_COLUMNS, stored_event
from warriors.eventstore.records import START, StoredEvent, StreamPosition
from warriors.eventstore.store import AggregateStream
from warriors.projections.base import BlueGreenProjection, ProjectionTargetUnavailable
from warriors.readside.search_index import ALIAS

SEARCH = "warriors_search"
SHADOW_SUFFIX = "__shadow"
INTACT_CHECK_SECONDS = 5.0

_HISTORIES = f"""
SELECT {EVENT_COLUMNS} FROM event_store
WHERE aggregate_id = ANY(%s) ORDER BY aggregate_id, event_version
"""


class WarriorsSearch:
    def __init__(self, engine: SearchEngine, name: str = SEARCH, index: str = ALIAS, *, refresh: bool = True):
        self.name = name
        self.engine = engine
        self.index = index  # the alias (live), or a new generation (a rebuild's shadow)
        self.refresh = refresh
        self._retired: str | None = None
        self._intact_at = float("-inf")

    async def apply(self, conn: AsyncConnection[Any], events: list[StoredEvent]) -> None:
        touched = {e.aggregate_id for e in events if e.aggregate_type == AGGREGATE_TYPE}
        if not touched:
            return
        # The whole stored history, not only up to this batch: a redelivered old event
        # then writes the warrior's latest state (after the engine has forgotten a delete,
        # an older version alone would be taken and bring a deleted warrior back).
        async with conn.cursor(row_factory=tuple_row) as cursor:
            await cursor.execute(_HISTORIES, (list(touched),))
            histories: dict[UUID, list[StoredEvent]] = {}
            keyring = await keyring_for(conn, list(touched))
            for row in await cursor.fetchall():
                event = keyring.open_event(stored_event(row))
                histories.setdefault(event.aggregate_id, []).append(event)
        await self._write([_action(warrior_id, history) for warrior_id, history in histories.items()])

    async def _write(self, actions: list[IndexAction]) -> None:
        try:
            await self.engine.write(self.index, actions, refresh=self.refresh)
        except SearchUnavailable as exc:
            self._intact_at = float("-inf")  # the alias may be gone: the next `intact` asks
            raise ProjectionTargetUnavailable(str(exc)) from exc
        except SearchRejected as exc:  # the engine's own words; the engine bisects to the event
            raise RuntimeError(str(exc)) from exc

    async def skip(self, conn: AsyncConnection[Any], event: StoredEvent) -> None:
        """A parked event: nothing to write (the document keeps its last good state)."""

    async def reset(self, conn: AsyncConnection[Any]) -> None:
        """Start over in a new, empty generation behind the alias (an in-place replay: the
        index is partial until it catches up; `rebuild` is the way without that)."""
        fresh = await self._unless_unavailable(self.engine.next_generation())
        await self._unless_unavailable(self.engine.create_index(fresh))
        old = await self._unless_unavailable(self.engine.move_alias(fresh))
        if old is not None:
            await self._unless_unavailable(self.engine.delete_index(old))

    async def intact(self, checkpoint: StreamPosition, *, fresh: bool = False) -> bool:
        """The alias must exist; from position 0 it is created if missing. Asked at most
        every INTACT_CHECK_SECONDS (the live projector polls ten times a second), unless
        `fresh`."""
        if self.index != ALIAS:
            return True  # a shadow writes into the index made for it
        if not fresh and time.monotonic() - self._intact_at < INTACT_CHECK_SECONDS:
            return True  # checked a moment ago
        if await self._unless_unavailable(self.engine.alias_target()) is not None:
            self._intact_at = time.monotonic()
            return True
        if checkpoint == START:
            await self._unless_unavailable(self.engine.ensure_alias())
            return True
        return False  # the index went missing: replay into a new one

    async def caught_up(self) -> None:
        pass

    async def close(self) -> None:
        await self.engine.close()

    def shadow(self) -> "WarriorsSearch":
        return WarriorsSearch(self.engine, f"{self.name}{SHADOW_SUFFIX}", index="", refresh=False)

    async def create_shadow(self, conn: AsyncConnection[Any], shadow: BlueGreenProjection) -> None:
        """A new index generation (leftovers of a crashed rebuild, newer than the alias'
        index, are deleted first)."""
        assert isinstance(shadow, WarriorsSearch)
        live = await self._unless_unavailable(self.engine.ensure_alias())
        for leftover in await self._unless_unavailable(self.engine.generations()):
            if leftover != live:
                await self._unless_unavailable(self.engine.delete_index(leftover))
        shadow.index = await self._unless_unavailable(self.engine.next_generation())
        await self._unless_unavailable(self.engine.create_index(shadow.index))

    async def swap_in(self, conn: AsyncConnection[Any], shadow: BlueGreenProjection) -> None:
        assert isinstance(shadow, WarriorsSearch)
        await self._unless_unavailable(self.engine.refresh(shadow.index))
        self._retired = await self._unless_unavailable(self.engine.move_alias(shadow.index))

    async def retire(self, conn: AsyncConnection[Any]) -> None:
        if self._retired is not None:
            await self._unless_unavailable(self.engine.delete_index(self._retired))
            self._retired = None

    async def drop_shadow(self, conn: AsyncConnection[Any], shadow: BlueGreenProjection) -> None:
        assert isinstance(shadow, WarriorsSearch)
        if shadow.index and shadow.index != await self.engine.alias_target():
            await self._unless_unavailable(self.engine.delete_index(shadow.index))

    async def _unless_unavailable(self, work: Any) -> Any:
        """Engine errors in index management wait and retry (an operator may be fixing
        the cluster), rather than failing every projection's loop."""
        try:
            return await work
        except (SearchUnavailable, SearchRejected) as exc:
            raise ProjectionTargetUnavailable(str(exc)) from exc


def _action(warrior_id: UUID, history: list[StoredEvent]) -> IndexAction:
    """`history` opened: a deleted or erased warrior is a versioned delete."""
    warrior = living(rebuild(warrior_id, AggregateStream.from_events(history)))
    version = history[-1].event_version
    if warrior is None:
        return IndexAction(str(warrior_id), version, None)
    return IndexAction(
        str(warrior_id),
        version,
        {
            "id": str(warrior_id), "name": warrior.name, "dob": warrior.dob.isoformat(),
            "fight_skills": list(warrior.fight_skills), "version": version,
            "created_at": history[0].created_at.isoformat(), "updated_at": history[-1].created_at.isoformat(),
        },
    )  # fmt: skip
