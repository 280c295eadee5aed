"""Opening stored events: upcast to the current shape, then open the sealed personal data
with the warrior's key (or redact it, for an erased warrior).

Every reader of events goes through here before the domain sees them: the aggregate
load, each projection (fed by the store or by Kafka), history, the statistics and the
upcaster regression. Keys are looked up once per batch (`warrior_keys`, one query), and
unwrapped keys live only as long as the `Keyring` of that batch: a key destroyed by an
erasure is never used again by a later batch.

The redaction rule: when a warrior's key row says erased (`wrapped_key` null), every one
of its events opens with `personal: null`, version-1 events too, whose plain-text fields
the store still holds (the store is never rewritten): the key row is the redaction
record this code honours. An event with `personal: null` reads as an erasure
(`events.event_from_data`), so a replay from zero never brings an erased warrior back.
"""

from copy import copy
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from psycopg import AsyncConnection

from warriors.domain.events import PERSONAL
from warriors.domain.upcasting import UPCASTERS
from warriors.eventstore.records import StoredEvent
from warriors.security.master_key import master_key
from warriors.security.personal_data import MasterKey, PersonalDataError, seal, unseal

SNAPSHOT_SCHEMA_VERSION: Final = 2  # a snapshot's state: version 2 seals `personal` too
_SNAPSHOT_UPCAST_AS: Final = "WarriorCreated"  # snapshot v1 -> v2 is the same regrouping

_KEYS = "SELECT warrior_id, wrapped_key, master_key_id FROM warrior_keys WHERE warrior_id = ANY(%s)"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A warrior's row in `warrior_keys`: its wrapped data key, or None once erased."""

    wrapped: bytes | None
    master_key_id: str | None

    @property
    def erased(self) -> bool:
        return self.wrapped is None


async def key_records(conn: AsyncConnection[Any], warrior_ids: list[UUID]) -> dict[UUID, KeyRecord]:
    if not warrior_ids:
        return {}
    cursor = await conn.execute(_KEYS, (warrior_ids,))
    return {
        warrior_id: KeyRecord(bytes(wrapped) if wrapped is not None else None, key_id)
        for warrior_id, wrapped, key_id in await cursor.fetchall()
    }


class Keyring:
    """The keys of one batch's warriors (pure: the records were read already)."""

    def __init__(self, records: dict[UUID, KeyRecord], master: MasterKey | None = None) -> None:
        self._records = records
        self._master = master
        self._open: dict[UUID, bytes] = {}

    def erased(self, warrior_id: UUID) -> bool:
        record = self._records.get(warrior_id)
        return record is not None and record.erased

    def data_key(self, warrior_id: UUID) -> bytes:
        if (key := self._open.get(warrior_id)) is not None:
            return key
        record = self._records.get(warrior_id)
        if record is None or record.wrapped is None:
            raise PersonalDataError(f"warrior {warrior_id} has sealed personal data but no key")
        master = self._master or master_key()
        key = self._open[warrior_id] = master.unwrap(warrior_id, record.wrapped, record.master_key_id or "")
        return key

    def open_data(
        self, warrior_id: UUID, event_type: str, schema_version: int, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Stored data in the current shape, with `personal` opened (or null: erased)."""
        return self._open_personal(warrior_id, UPCASTERS.upcast(event_type, schema_version, data))

    def open_event(self, event: StoredEvent) -> StoredEvent:
        data = self.open_data(event.aggregate_id, event.event_type, event.schema_version, event.data)
        opened = copy(event)  # slots dataclass: a shallow copy, then the new data
        opened.data = data
        return opened

    def open_snapshot(self, warrior_id: UUID, schema_version: int, state: dict[str, Any]) -> dict[str, Any]:
        if schema_version < SNAPSHOT_SCHEMA_VERSION:
            state = UPCASTERS.upcast(_SNAPSHOT_UPCAST_AS, schema_version, state)
        return self._open_personal(warrior_id, state)

    def _open_personal(self, warrior_id: UUID, data: dict[str, Any]) -> dict[str, Any]:
        if self.erased(warrior_id):
            return {**data, PERSONAL: None}
        personal = data.get(PERSONAL)
        if isinstance(personal, str):
            return {**data, PERSONAL: unseal(self.data_key(warrior_id), warrior_id, personal)}
        return data


async def keyring_for(conn: AsyncConnection[Any], warrior_ids: list[UUID]) -> Keyring:
    return Keyring(await key_records(conn, warrior_ids))


async def opened(conn: AsyncConnection[Any], events: list[StoredEvent]) -> list[StoredEvent]:
    """`events` with their data opened (one key query for all their warriors)."""
    if not events:
        return events
    keyring = await keyring_for(conn, list({e.aggregate_id for e in events}))
    return [keyring.open_event(e) for e in events]


def sealed_data(data_key: bytes, warrior_id: UUID, data: dict[str, Any]) -> dict[str, Any]:
    """Current-shape data as stored: an open `personal` object sealed with the key."""
    personal = data.get(PERSONAL)
    if not isinstance(personal, dict):
        return data
    return {**data, PERSONAL: seal(data_key, warrior_id, personal)}
