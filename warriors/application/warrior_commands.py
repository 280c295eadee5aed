"""Handling warrior commands: validate, load, decide, append, answer.

The loop around an append is optimistic concurrency: a command without an expected
version (no If-Match) that loses a race is decided again on the fresh state; a command
with one answers a version mismatch. Idempotency keys are checked before deciding (a
retried command returns its first answer) and are written in the same transaction as
the command's events (see `eventstore/appender.py`).
"""

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from uuid_utils.compat import uuid7

from warriors import tracing
from warriors.domain import commands
from warriors.domain.errors import VersionMismatch
from warriors.domain.events import (
    AGGREGATE_TYPE,
    PERSONAL,
    DomainEvent,
    WarriorCreated,
    event_from_data,
    is_erased,
)
from warriors.domain.warrior import ErasedWarrior, State, Warrior, decide, fold
from warriors.eventstore.opening import SNAPSHOT_SCHEMA_VERSION, Keyring, sealed_data
from warriors.eventstore.records import (
    Appended,
    AppendRequest,
    IdempotencyKey,
    KeyTaken,
    NewEvent,
    NewKey,
    Snapshot,
    VersionTaken,
)
from warriors.eventstore.store import AggregateStream, EventStore
from warriors.projections.inline import creation_row
from warriors.security.master_key import master_key
from warriors.security.personal_data import new_data_key

# A date of birth is "not in the future" if it is today or earlier somewhere on Earth:
# the latest time zone (UTC+14) decides, so no valid birthday is refused near midnight.
_LATEST_ZONE = timezone(timedelta(hours=14))
MAX_DECIDE_ATTEMPTS = 20
_BACKOFF_SECONDS = 0.002  # times the attempt number, jittered, between lost races
# The longest User-Agent kept in an event's metadata: enough for any real browser's, and
# a client cannot make every one of its events carry kilobytes of header.
USER_AGENT_MAX_LENGTH = 256

log = logging.getLogger("warriors.commands")


def latest_today() -> date:
    return datetime.now(_LATEST_ZONE).date()


class IdempotencyKeyReused(Exception):
    """The key was first used with another request (method, path or body)."""


class ConcurrencyConflict(Exception):
    """The command kept losing races on a busy aggregate; the client may retry."""


def client_user_agent(raw: str | None) -> str | None:
    """A client's User-Agent as event metadata keeps it: without control characters (nor
    any other character that does not print: line breaks would forge lines in whatever
    shows it), at most USER_AGENT_MAX_LENGTH characters; None if nothing is left."""
    if raw is None or (len(raw) <= USER_AGENT_MAX_LENGTH and raw.isprintable()):
        return raw or None
    return "".join(ch for ch in raw if ch.isprintable())[:USER_AGENT_MAX_LENGTH] or None


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who sent a command and how; recorded as each event's metadata (the client's
    headers bounded and validated by the API: see `client_user_agent`)."""

    correlation_id: str
    causation_id: str
    user_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    idempotency_key: str | None = None

    def as_metadata(self) -> dict[str, str]:
        """The fields that are set (dataclasses.asdict deep-copies: too slow per request)."""
        fields = (
            ("correlation_id", self.correlation_id),
            ("causation_id", self.causation_id),
            ("user_id", self.user_id),
            ("client_ip", self.client_ip),
            ("user_agent", self.user_agent),
            ("idempotency_key", self.idempotency_key),
        )
        return {name: value for name, value in fields if value is not None}


@dataclass(frozen=True, slots=True)
class Accepted:
    warrior_id: UUID
    version: int
    position: int
    replayed: bool = False


def rebuild(warrior_id: UUID, stream: AggregateStream) -> State | None:
    """The aggregate's state: its snapshot (if any) plus the events after it. The stream's
    data must be opened already (`AggregateStream.opened`, `eventstore/opening.py`)."""
    state: State | None = None
    if (snapshot := stream.snapshot) is not None:
        if is_erased(snapshot.state):
            state = ErasedWarrior(warrior_id, snapshot.version)
        else:
            state = Warrior.from_snapshot(warrior_id, snapshot.version, snapshot.state)
    events: list[DomainEvent] = [
        event_from_data(event_type, data) for event_type, _v, _s, data in stream.events
    ]
    return fold(state, warrior_id, events)


def living(state: State | None) -> Warrior | None:
    """The warrior, unless it never existed, was deleted or was erased."""
    return state if isinstance(state, Warrior) and not state.deleted else None


class WarriorCommands:
    def __init__(self, store: EventStore, today: Callable[[], date] = latest_today) -> None:
        self._store = store
        self._today = today

    async def create(
        self, body: dict[str, Any], context: RequestContext, idempotency: IdempotencyKey | None
    ) -> Accepted:
        command = commands.create_warrior(uuid7(), body, self._today())
        return await self._handle(command, context, idempotency, expected_version=None)

    async def change(
        self,
        warrior_id: UUID,
        body: dict[str, Any],
        context: RequestContext,
        idempotency: IdempotencyKey | None,
        expected_version: int | None,
    ) -> Accepted:
        command = commands.change_warrior(warrior_id, body, self._today())
        return await self._handle(command, context, idempotency, expected_version)

    async def replace_skills(
        self,
        warrior_id: UUID,
        body: dict[str, Any],
        context: RequestContext,
        idempotency: IdempotencyKey | None,
        expected_version: int | None,
    ) -> Accepted:
        command = commands.replace_skills(warrior_id, body)
        return await self._handle(command, context, idempotency, expected_version)

    async def delete(
        self,
        warrior_id: UUID,
        context: RequestContext,
        idempotency: IdempotencyKey | None,
        expected_version: int | None,
    ) -> Accepted:
        command = commands.DeleteWarrior(warrior_id)
        return await self._handle(command, context, idempotency, expected_version)

    async def erase(
        self, warrior_id: UUID, context: RequestContext, idempotency: IdempotencyKey | None
    ) -> Accepted:
        """Erase the warrior's personal data (crypto-shredding; docs/event-store.md)."""
        return await self._handle(commands.EraseWarrior(warrior_id), context, idempotency, None)

    async def snapshot(self, warrior_id: UUID) -> Snapshot | None:
        """Save the warrior's current state as a snapshot, its personal fields sealed with
        the warrior's key; None if it never existed or was erased (an erasure deletes
        its snapshots). A warrior from before keys existed (no key row) keeps them open,
        as its version-1 events do: this runs as the projector role, which makes no keys."""
        stream = await self._store.load_stream(warrior_id)
        state = rebuild(warrior_id, stream.opened(warrior_id))
        if not isinstance(state, Warrior):
            return None
        data = state.to_snapshot()
        if stream.key is not None:
            data = sealed_data(Keyring({warrior_id: stream.key}).data_key(warrior_id), warrior_id, data)
        snapshot = Snapshot(warrior_id, state.version, data, SNAPSHOT_SCHEMA_VERSION)
        await self._store.save_snapshot(snapshot, AGGREGATE_TYPE)
        return snapshot

    async def load(self, warrior_id: UUID) -> State | None:
        return (await self._load(warrior_id))[0]

    async def _load(self, warrior_id: UUID) -> tuple[State | None, AggregateStream]:
        stream = await self._store.load_stream(warrior_id)
        return rebuild(warrior_id, stream.opened(warrior_id)), stream

    async def _sealing(
        self, command: commands.Command, stream: AggregateStream | None
    ) -> tuple[bytes, NewKey | None]:
        """The data key to seal the command's personal fields with, and the key to store
        with its events when the warrior is new."""
        master = master_key()
        warrior_id = command.warrior_id
        if stream is None:  # a creation
            data_key = new_data_key()
            return data_key, NewKey(master.wrap(warrior_id, data_key), master.key_id)
        record = stream.key
        if record is None:  # created before keys existed: its first key, made once
            data_key = new_data_key()
            record = await self._store.ensure_key(
                warrior_id, NewKey(master.wrap(warrior_id, data_key), master.key_id)
            )
        return Keyring({warrior_id: record}, master).data_key(warrior_id), None

    async def _handle(
        self,
        command: commands.Command,
        context: RequestContext,
        idempotency: IdempotencyKey | None,
        expected_version: int | None,
    ) -> Accepted:
        """Decide and append, in the command's span when tracing is on."""
        if not tracing.enabled():
            return await self._decide_and_append(command, context, idempotency, expected_version)
        named = {"warriors.command": type(command).__name__, "warriors.warrior_id": str(command.warrior_id)}
        with tracing.span("warriors.command", **named):
            return await self._decide_and_append(command, context, idempotency, expected_version)

    async def _decide_and_append(
        self,
        command: commands.Command,
        context: RequestContext,
        idempotency: IdempotencyKey | None,
        expected_version: int | None,
    ) -> Accepted:
        for attempt in range(MAX_DECIDE_ATTEMPTS):
            if idempotency is not None and (answer := await self._recorded(idempotency)):
                return answer
            state: State | None = None
            stream: AggregateStream | None = None
            if not isinstance(command, commands.CreateWarrior):
                state, stream = await self._load(command.warrior_id)
            events = decide(state, command)
            current = state.version if state else 0
            if expected_version is not None and expected_version != current:
                raise VersionMismatch(command.warrior_id, expected_version, current)
            data = [e.to_data() for e in events]
            new_key = None
            if any(PERSONAL in d for d in data):
                data_key, new_key = await self._sealing(command, stream)
                data = [sealed_data(data_key, command.warrior_id, d) for d in data]
            # A creation's read-model row goes with its event when the store projects inline.
            created = events[0] if len(events) == 1 and isinstance(events[0], WarriorCreated) else None
            request = AppendRequest(
                [
                    self._new_event(command.warrior_id, current + 1 + i, e, d, context)
                    for i, (e, d) in enumerate(zip(events, data, strict=True))
                ],
                idempotency,
                new_key,
                creation_row(command.warrior_id, created)
                if created and self._store.projects_inline
                else None,
            )
            with tracing.span("warriors.append", **{"warriors.events": len(request.events)}):
                if isinstance(command, commands.EraseWarrior):
                    outcome = await self._store.erase(request)
                else:
                    outcome = await self._store.append(request)
            if isinstance(outcome, Appended):
                if log.isEnabledFor(logging.DEBUG):  # the request's correlation id is on the line
                    log.debug("stored %s of warrior %s (version %s, position %s)",
                              ", ".join(type(e).__name__ for e in events), outcome.aggregate_id,
                              outcome.version, outcome.position)  # fmt: skip
                return Accepted(outcome.aggregate_id, outcome.version, outcome.position)
            if isinstance(outcome, VersionTaken) and expected_version is not None:
                raise VersionMismatch(command.warrior_id, expected_version, None)
            # VersionTaken without If-Match: decide again on the fresh state.
            # KeyTaken: the loop's first step returns the recorded answer (or, if the
            # other command with this key failed after all, this one runs).
            assert isinstance(outcome, VersionTaken | KeyTaken)
            # Jittered backoff spreads racers on one hot aggregate so they stop colliding.
            await asyncio.sleep(random.uniform(0, _BACKOFF_SECONDS * (attempt + 1)))
        raise ConcurrencyConflict(f"warrior {command.warrior_id} is too busy; retry the command")

    async def _recorded(self, idempotency: IdempotencyKey) -> Accepted | None:
        answer = await self._store.recorded_answer(idempotency.key)
        if answer is None:
            return None
        if answer.fingerprint != idempotency.fingerprint:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {idempotency.key!r} was already used for a different request"
            )
        return Accepted(answer.aggregate_id, answer.version, answer.position, replayed=True)

    def _new_event(
        self,
        warrior_id: UUID,
        version: int,
        event: DomainEvent,
        data: dict[str, Any],
        context: RequestContext,
    ) -> NewEvent:
        metadata = context.as_metadata()
        metadata["occurred_at"] = datetime.now(UTC).isoformat()
        metadata.update(tracing.current_traceparent())  # the command's span: its events' parent
        return NewEvent(
            event_id=uuid7(),
            aggregate_id=warrior_id,
            aggregate_type=AGGREGATE_TYPE,
            event_type=event.event_type,
            event_version=version,
            schema_version=event.schema_version,
            data=data,
            metadata=metadata,
        )
