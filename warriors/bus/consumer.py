"""A projection fed from Kafka: one consumer group per projection (`warriors-<name>`).

Each batch of messages is applied in a PostgreSQL transaction, then the offsets are
committed: after the effect, so a crash redelivers rather than loses, and the projection's
idempotent applies make a redelivery harmless. Per-aggregate order holds because one
warrior's events share a partition, which one group member reads at a time.

A message that cannot be applied is retried a bounded number of times; then it goes to
`warrior-events.dlq` with the error in its headers, is recorded with the projection's
parked events (its status shows it), and the rest of the stream goes on.

Each held partition's progress (its committed offset and end, and the store's order up
to which its events are applied) is written to `bus_consumer_lag` after every batch and
while idle at the end of the topic (see `_record_lag`); the projections' status counts
the group's lag from it.

A sink rebuilt from the event store (a lost sink, a group that never committed, records
gone from the topic) is recorded in `sink_rebuilds`: 'rebuilding' from the moment it is
asked for until its replay of the store finished, then 'complete'. One member (whichever
takes the rebuild's lock first) replays; the others apply nothing meanwhile (their
partitions paused, the consumer still polled), never call the sink caught up, and take the
rebuild over if its owner dies (see `_intact`, `_await_rebuild`).
"""

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from psycopg import AsyncConnection, InterfaceError, OperationalError
from psycopg_pool import AsyncConnectionPool

from warriors import tracing
from warriors.adapters.kafka_bus import DLQ_TOPIC, TOPIC, BusProducer, BusUnavailable, OutgoingMessage
from warriors.adapters.redis_cache import CacheUnavailable, RedisReadModels
from warriors.bus import envelope
from warriors.eventstore.reader import read_after
from warriors.eventstore.records import START, StoredEvent, StreamPosition
from warriors.logs import log_applied
from warriors.metrics import EVENTS_APPLIED
from warriors.projections.base import Projection, ProjectionTargetUnavailable
from warriors.projections.engine import lock_projection, read_checkpoint
from warriors.projections.sink_rebuilds import REQUEST_REBUILD
from warriors.projections.status import RELAY, consumer_group, unconsumed_events

log = logging.getLogger("warriors.bus.consumer")
_APPLY_SPAN = "warriors.projection.apply"

# The held partitions' progress, in one statement: their offsets, and the store's order up
# to which their events are applied (sql/0016), which only moves forward (the later of the
# recorded and the new): whichever member applied them, they are in the sink.
_RECORD_LAG = """
INSERT INTO bus_consumer_lag AS l
    (group_id, partition, committed, end_offset, updated_at, applied_transaction_id, applied_position)
SELECT %(group)s, p.partition, p.committed, p.end_offset, now(), p.transaction_id::text::xid8, p.position
FROM unnest(%(partitions)s::int[], %(committed)s::bigint[], %(ends)s::bigint[],
            %(transaction_ids)s::bigint[], %(positions)s::bigint[])
    AS p(partition, committed, end_offset, transaction_id, position)
ON CONFLICT (group_id, partition) DO UPDATE
SET committed = excluded.committed, end_offset = excluded.end_offset, updated_at = now(),
    (applied_transaction_id, applied_position) = (
        SELECT a.transaction_id, a.position
        FROM (VALUES (excluded.applied_transaction_id, excluded.applied_position),
                     (l.applied_transaction_id, l.applied_position)) AS a(transaction_id, position)
        ORDER BY a.transaction_id DESC, a.position DESC LIMIT 1)
"""
# Every partition of the topic has a row from the moment any member of the group knows
# the partition: a partition whose member never recorded it (killed before its first
# batch, or a partition just added) would otherwise say nothing, and the status, counting
# from the least advanced row, would call its messages applied. A row nobody has written
# yet says nothing applied (the store's start). Never overwrites a row.
_PLACEHOLDERS = """
INSERT INTO bus_consumer_lag AS l (group_id, partition, committed, end_offset, updated_at)
SELECT %(group)s, p, 0, 0, now() FROM generate_series(0, %(count)s - 1) AS p
ON CONFLICT (group_id, partition) DO NOTHING
"""
_PARK = """
INSERT INTO projection_parked_events (projection_name, event_id, position, error)
VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING
"""


# Its state, and whether anyone holds its lock (the owner's session is alive). Advisory
# locks belong to one database: the lock of the same projection in another database (a
# test's, another deployment's on the same server) says nothing.
_REBUILD_STATE = """
SELECT r.generation, r.state, r.replayed_transaction_id::text::bigint, r.replayed_position,
       EXISTS (SELECT 1 FROM pg_locks l
               WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND ((l.classid::int8 << 32) | l.objid::int8) = hashtextextended(%(key)s, 0)),
       coalesce(r.finished_at > now() - make_interval(secs => %(recent)s), false), r.topic_ends
FROM sink_rebuilds r WHERE r.projection_name = %(name)s
"""
_TRY_OWN = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
# The owner's session: a host or a network gone is noticed by the server within about 25 s
# (the default is the system's, two hours), and the rebuild's lock goes with the session.
# Ignored on a Unix socket (same host: a dead process closes it at once).
_KEEPALIVES = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
_DISOWN = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"
_OWNED = """
UPDATE sink_rebuilds SET owner = %(owner)s, started_at = now(), topic_ends = %(ends)s, updated_at = now()
WHERE projection_name = %(name)s AND generation = %(generation)s
"""
_RESTARTED = """
UPDATE sink_rebuilds SET replayed_transaction_id = '0', replayed_position = 0, updated_at = now()
WHERE projection_name = %(name)s AND generation = %(generation)s
"""
_REPLAYED = """
UPDATE sink_rebuilds SET replayed_transaction_id = %(transaction_id)s::text::xid8,
    replayed_position = %(position)s, updated_at = now()
WHERE projection_name = %(name)s AND generation = %(generation)s
"""
_COMPLETE = """
UPDATE sink_rebuilds SET state = 'complete', owner = NULL, finished_at = now(), updated_at = now()
WHERE projection_name = %(name)s AND generation = %(generation)s AND state = 'rebuilding'
"""

# The database or the target away for now (see the engine's _is_transient): the batch is tried again.
TRANSIENT = (OperationalError, InterfaceError, OSError, ProjectionTargetUnavailable)
# Events per batch when a sink is built from the event store.
REPLAY_BATCH = 1000
# Before parking an event that failed alone, it is tried again after 0.2 s, then 0.4 s.
RETRY_PAUSE_SECONDS = 0.2
_PAST_START = StreamPosition(0, 1)  # "not from the beginning", for `Projection.intact`
# How often a member asks whether a rebuild is under way, and whether its owner is alive
# (before a batch and while idle; at once after asking for one).
REBUILD_CHECK_SECONDS = 1.0
# While a member replays the store it keeps polling the consumer (partitions paused) this often.
# A rebuild finished less than this ago covers a group found never to have committed.
RECENT_REBUILD_SECONDS = 600
REPLAY_POLL_SECONDS = 0.2
# After a batch, the partitions' ends are asked of the broker at most this often (see _record_lag).
PROGRESS_CHECK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RebuildState:
    """A sink's row of `sink_rebuilds`."""

    generation: int
    rebuilding: bool  # asked for and not finished: the sink may be partial
    replayed: StreamPosition  # how far the rebuild's replay of the store got
    owned: bool  # someone holds its lock (a member replaying it)
    finished_recently: bool = False  # complete, less than RECENT_REBUILD_SECONDS ago
    # The topic's end offsets (by partition) read before the replay: what it covers
    # (sql/0017); None: not known.
    topic_ends: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """A held partition's row of `bus_consumer_lag` (see `_record_lag`)."""

    partition: int
    committed: int  # the offset read next: everything before it is applied
    end: int
    applied: StreamPosition  # the store's order up to which its events are applied


def _columns(rows: list[PartitionProgress]) -> dict[str, list[int]]:
    """`_RECORD_LAG`'s arrays: one statement for every partition."""
    return {
        "partitions": [r.partition for r in rows],
        "committed": [r.committed for r in rows],
        "ends": [r.end for r in rows],
        "transaction_ids": [r.applied.transaction_id for r in rows],
        "positions": [r.applied.position for r in rows],
    }


class _SinkLost(Exception):
    """The sink lost its data while it was being rebuilt: the rebuild starts over."""


class ProjectionConsumer:
    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection],
        projection: Projection,
        bootstrap_servers: str,
        dead_letters: BusProducer,
        *,
        batch_size: int = 500,
        attempts: int = 3,
        session_timeout_ms: int = 45_000,
        max_poll_interval_ms: int = 300_000,
        group_instance_id: str | None = None,
    ) -> None:
        self.pool = pool
        self.projection = projection
        self.group = consumer_group(projection.name)
        self.dead_letters = dead_letters
        self.batch_size = batch_size
        self.attempts = attempts
        # Set on assignment (a group that never committed) or a gap in a partition: a rebuild is asked for.
        self._needs_store_replay = False
        self._needs_reason = ""
        self._expected: dict[int, int | None] = {}  # partition -> the offset its next message should have
        self._unknown: set[int] = set()  # partitions whose committed offset the assignment could not read
        # partition never committed -> the offset its first message may have at most (_first_bound)
        self._first_at_most: dict[int, int] = {}
        # partition -> the store's order up to which this member applied its events (a
        # partition holds its events in the relay's order, which is the store's)
        self._applied: dict[int, StreamPosition] = {}
        self._progress_checked = float("-inf")  # monotonic time the ends were last asked of the broker
        self._partitions_placed = 0  # the topic's partitions this member made sure have rows (_PLACEHOLDERS)
        self._recorded_fresh = False  # the last record asked the broker for the ends (see _caught_up)
        self._rebuild: RebuildState | None = None  # as last read (None: not read yet, or no row)
        self._rebuild_checked = float("-inf")  # monotonic time it was read
        self._replaying = False  # this member is replaying the store (its partitions paused)
        self._paused: set[tuple[str, int]] = set()
        self._held: list[Message] = []  # messages polled during a replay, applied after it
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._rebuild_key = f"rebuild:{projection.name}"
        static = (
            {}
            if group_instance_id is None
            else {"group.instance.id": f"{group_instance_id}-{projection.name}"}
        )
        self.consumer = Consumer(
            {
                **static,  # a restart with the same id takes its partitions back at once
                "bootstrap.servers": bootstrap_servers,
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                # A member unheard for this long (killed, hung) loses its partitions to the others.
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": min(3000, session_timeout_ms // 3),
                # Between two polls; a replay of the store keeps polling (`_polling_paused`).
                # librdkafka refuses one below the session time-out.
                "max.poll.interval.ms": max(max_poll_interval_ms, session_timeout_ms),
            }
        )

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer.subscribe(
            [TOPIC], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )
        log.info("consumer group %s reading %s for %s", self.group, TOPIC, self.projection.name)
        try:
            while not stop.is_set():
                if self._held:  # polled while this member replayed the store
                    messages, self._held = self._held, []
                else:
                    messages = await asyncio.to_thread(self._next_messages)
                batch = [m for m in messages if not _skippable(m)]
                await self._check_gaps(batch)
                if batch:
                    await self._process(batch, stop)
                elif not messages:
                    await self._idle(stop)
        finally:
            await asyncio.to_thread(self.consumer.close)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A group that never committed builds its sink from the event store first (see
        `_intact`), then reads the topic (from its earliest record: the overlap is harmless).
        Cooperative rebalancing calls this with only the partitions added, often none: no
        partitions say nothing about the group (taken as "none committed", every rebalance
        made each member rebuild its sink from the whole store)."""
        if not partitions:  # a cooperative rebalance that gave this member nothing new
            return
        log.info("consumer %s: partitions %s assigned", self.group, sorted(tp.partition for tp in partitions))
        try:
            self._learn_committed(consumer, partitions)
        except KafkaException as exc:
            # Raised out of this callback, it escapes the consume() of the worker thread
            # in a form nothing catches (seen under load: "Failed to get committed offsets:
            # Local: Timed out"), the thread dies and the await on it never returns. Asked
            # again before the first message of these partitions is applied (`_check_gaps`).
            log.warning("consumer %s: the committed offsets of partitions %s not read: %s",
                        self.group, sorted(tp.partition for tp in partitions), exc)  # fmt: skip
            for tp in partitions:
                self._expected.pop(tp.partition, None)
                self._unknown.add(tp.partition)

    def _learn_committed(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Where each partition's next message should be: the group's committed offset
        (None: never committed). A group that never committed builds its sink from the
        store first unless a rebuild covers it (`_not_covered`)."""
        committed = consumer.committed(partitions, 10.0)
        if all(tp.offset < 0 for tp in committed) and (reason := self._not_covered(consumer, partitions)):
            self._needs_store_replay, self._needs_reason = True, reason
        for tp in committed:
            self._expected[tp.partition] = tp.offset if tp.offset >= 0 else None
            self._unknown.discard(tp.partition)
            self._first_at_most.pop(tp.partition, None)
            if tp.offset < 0 and (bound := self._first_bound(tp.partition)) is not None:
                self._first_at_most[tp.partition] = bound

    def _first_bound(self, partition: int) -> int | None:
        """A partition the group never committed is read from its earliest record; the
        first one may be no further on than the last finished rebuild's end of it (what
        the rebuild covered: `topic_ends`), or than 0 when no end is known. Records deleted
        after the assignment and before the first read (retention, a delete-records) were
        otherwise passed over unseen: nothing noticed the jump (CI, the fault test's seed
        917749). None: a rebuild under way covers whatever is gone (it reads the store to
        its head, after now)."""
        state = self._rebuild
        if self._replaying or (state is not None and state.rebuilding) or self._needs_store_replay:
            return None
        ends = None if state is None else state.topic_ends
        return ends[partition] if ends is not None and partition < len(ends) else 0

    async def _check_gaps(self, batch: list[Message]) -> None:
        """Before a batch is applied: its partitions' committed offsets read if their
        assignment could not read them (else a jump past records retention trimmed would go
        unseen), then its gaps noticed. Still unreadable: the sink is built from the store,
        which covers whatever the topic lost."""
        touched = {p for m in batch if (p := m.partition()) is not None}
        unknown = [TopicPartition(TOPIC, p) for p in sorted(touched & self._unknown)]
        if unknown:
            try:
                await asyncio.to_thread(self._learn_committed, self.consumer, unknown)
            except KafkaException as exc:
                self._unknown -= {tp.partition for tp in unknown}
                self._needs_store_replay = True
                self._needs_reason = f"the committed offsets of partitions {[tp.partition for tp in unknown]}"
                self._needs_reason += f" not known ({exc})"
        self._notice_gaps(batch)

    def _not_covered(self, consumer: Consumer, partitions: list[TopicPartition]) -> str | None:
        """Why a group that never committed must build its sink from the store, or None
        when a rebuild covers it. One under way does (this member's own replay, which keeps
        polling, so rebalances happen during it; or another member's): it reads the store to
        its head, after now. So does one that finished a moment ago (a member's first
        rebuild often finishes before it has joined its group), as long as the records
        published since it read the store are all still on the topic: the group reads
        each partition from its earliest record."""
        state = self._rebuild
        if self._replaying or (state is not None and state.rebuilding):
            return None
        if state is None or not state.finished_recently:
            return "a consumer group that never committed"
        if not self._still_on_the_topic(consumer, partitions, state.topic_ends):
            return "records deleted from a topic never read"  # by retention, or a delete-records
        return None

    def _still_on_the_topic(
        self, consumer: Consumer, partitions: list[TopicPartition], ends: tuple[int, ...] | None
    ) -> bool:
        """Every record from a finished rebuild's `ends` on is still on the topic: each
        partition starts at or before its end then. False when not known (no ends on
        record, a partition the rebuild did not see, the broker not answering)."""
        if ends is None or any(tp.partition >= len(ends) for tp in partitions):
            return False
        try:
            starts = [(consumer.get_watermark_offsets(tp, 10.0, False)[0], tp.partition) for tp in partitions]
        except KafkaException:
            return False
        return all(start <= ends[partition] for start, partition in starts)

    def _topic_ends(self) -> list[int] | None:
        """Each partition's end offset, by partition number, as the broker has it now;
        None when the broker does not answer (the rebuild goes on without it)."""
        try:
            topic = self.consumer.list_topics(TOPIC, timeout=5.0).topics[TOPIC]
            if topic.error is not None or not topic.partitions:
                return None
            return [
                int(self.consumer.get_watermark_offsets(TopicPartition(TOPIC, p), 5.0, False)[1])
                for p in range(len(topic.partitions))
            ]
        except KafkaException as exc:
            log.warning("consumer %s: the topic's ends not read before the rebuild: %s", self.group, exc)
            return None

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            log.info("consumer %s: partitions %s revoked",
                     self.group, sorted(tp.partition for tp in partitions))  # fmt: skip
        self._unpause(consumer, partitions)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("consumer %s: partitions %s lost (this member was thrown out of the group)",
                    self.group, sorted(tp.partition for tp in partitions))  # fmt: skip
        self._unpause(consumer, partitions)

    def _unpause(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions leaving this member are resumed first (librdkafka may keep a partition
        paused across a revocation: assigned here again later, it would never be read), and
        their held messages dropped."""
        leaving = {(tp.topic, tp.partition) for tp in partitions}
        # Messages held during a replay from partitions now leaving: read again by whoever
        # gets them (from the committed offset), and, should they come back here, from it too.
        # In place: the replay's poller (`_polling_paused`) extends this same list.
        self._held[:] = [m for m in self._held if (m.topic(), m.partition()) not in leaving]
        paused = [tp for tp in partitions if (tp.topic, tp.partition) in self._paused]
        self._paused -= leaving
        if paused:
            try:
                consumer.resume(paused)
            except KafkaException as exc:
                log.warning("consumer %s: resuming %s: %s", self.group, paused, exc)

    def _notice_gaps(self, batch: list[Message]) -> None:
        """Offsets are contiguous (an idempotent producer, no transactions): a message
        further on than the partition's next one means records this group had not read
        are gone from the topic (retention deleted them). They are not gone from the
        store: the sink is built from it before this batch."""
        for message in batch:
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:
                continue
            expected = self._expected.get(partition)
            bound = self._first_at_most.pop(partition, None)
            if expected is None and bound is not None and offset > bound:
                self._rebuild_for(partition, f"never committed, starts at offset {offset}, after {bound}")
            if expected is not None and offset > expected:
                self._rebuild_for(partition, f"jumped from offset {expected} to {offset}")
            elif expected is not None and offset < expected:
                # Within an assignment offsets only grow (a reassignment starts again from
                # the committed offset, which sets `expected`): back means the topic was
                # recreated or its log truncated, and what this group had not read of the
                # old log is gone.
                self._rebuild_for(partition, f"went back from offset {expected} to {offset}", back=True)
            self._expected[partition] = offset + 1

    def _rebuild_for(self, partition: int, what: str, *, back: bool = False) -> None:
        """Records this group had not read are gone from the topic (not from the store): the
        sink is built from the store before the batch."""
        cause = "a recreated topic or a truncated log" if back else "records gone from the topic"
        log.warning("consumer %s: partition %d %s (%s); the sink is rebuilt from the event store",
                    self.group, partition, what, cause)  # fmt: skip
        reason = "the topic's offsets went back" if back else "records gone from the topic"
        self._needs_store_replay, self._needs_reason = True, reason

    def _at_end(self) -> bool:
        """Every partition this member holds is read to its end (cached watermarks)."""
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        for tp in self.consumer.position(assigned):
            # No position yet (nothing fetched since the assignment): where it will read
            # from, its committed offset.
            at = tp.offset if tp.offset >= 0 else (self._expected.get(tp.partition) or 0)
            if self._end_offset(tp.topic, tp.partition) > at:
                return False
        return True

    def _end_offset(self, topic: str, partition: int, *, fresh: bool = False) -> int:
        """The partition's end: the consumer's cached watermark (no round trip), or the
        broker's answer when `fresh` or when none is cached yet (librdkafka answers -1001
        for a partition no fetch has answered for, e.g. just assigned: taken as the end, a
        new member would count as caught up before reading anything)."""
        end = -1
        if not fresh:
            _, end = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), 1.0, True)
        if end < 0:
            _, end = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), 5.0, False)
        return int(end)

    async def _idle(self, stop: asyncio.Event) -> None:
        """No message for a while: a sink that must be built from the store is built now
        (a new group on a quiet topic, a cache flushed while nothing is written, a rebuild
        whose owner died), and at the end of the topic its partitions' lag is recorded
        again (their progress: see `_record_lag`) and, unless its sink is being rebuilt,
        the projection is told it is still caught up (the cache renews its readiness, which
        lapses when nobody renews it)."""
        try:
            if not await self._intact(stop):
                return
            if await asyncio.to_thread(self._at_end) and await self._record_lag(fresh=True) == 0:
                await self._caught_up()
        except (*TRANSIENT, KafkaException) as exc:
            log.warning("consumer %s: %r", self.group, exc)

    async def _caught_up(self) -> None:
        """This member's partitions read to their ends, as just recorded from the broker:
        the sink is caught up, unless a rebuild is under way or was left unfinished (then it
        is partial, whatever the topic says), or the group is behind on partitions other
        members hold (a dead member's stop moving; this member's own say nothing of them,
        and renewing the cache's readiness from them kept a cache missing the dead member's
        messages ready). Called only after a record that asked the broker for the ends
        (while idle, and after batches at most once a second), so that the group's rows are
        current, and so at most about once a second under load."""
        if self._rebuild is None or self._rebuild.rebuilding:
            return
        async with self.pool.connection() as conn:
            if await unconsumed_events(conn, self.projection.name) > 0:
                return
        await self.projection.caught_up()

    def _next_messages(self) -> list[Message]:
        """Wait (up to half a second) for one message, then take whatever else has
        arrived, without waiting to fill a batch: latency stays low, and batches grow
        with the load by themselves."""
        first = self.consumer.consume(1, 0.5)
        if not first:
            return []
        return first + self.consumer.consume(self.batch_size - 1, 0)

    async def _process(self, batch: list[Message], stop: asyncio.Event) -> None:
        readable: list[tuple[Message, StoredEvent]] = []
        for message in batch:
            try:
                readable.append((message, envelope.decode(message.value())))
            except envelope.Unreadable as exc:
                await self._dead_letter(message, str(exc))
        while True:
            try:
                if not await self._intact(stop):
                    return  # stopping in the middle of a replay: this batch comes again
                started_ns = time.time_ns()
                await self._apply(readable)
                tracing.record_applied(
                    _APPLY_SPAN, self.projection.name, [e for _, e in readable], started_ns
                )
                break
            except TRANSIENT as exc:  # the same batch again, unless stopping (it is redelivered)
                if stop.is_set():
                    return
                log.warning("consumer %s: %r; retrying the batch in 1s", self.group, exc)
                await asyncio.sleep(1.0)  # a pause before the retry, not a synchronisation
        # After the effect; asynchronous: a commit lost to a crash only means a redelivery,
        # which the applies make harmless. The batch's own offsets, not the consumer's
        # position: messages polled during a replay of the store wait in `_held`, applied
        # next, and committed with this batch they would be lost to a crash meanwhile.
        if offsets := self._after(batch):
            self.consumer.commit(offsets=offsets, asynchronous=True)
        for message, event in readable:
            partition = message.partition()
            if partition is not None:
                self._applied[partition] = max(self._applied.get(partition, START), event.stream_position)
        EVENTS_APPLIED.labels(self.projection.name).inc(len(readable))
        if log.isEnabledFor(logging.DEBUG):
            log_applied(log, self.projection.name, [event for _, event in readable])
        try:
            if await self._record_lag() == 0 and self._recorded_fresh:
                await self._caught_up()
        except (*TRANSIENT, KafkaException) as exc:  # only a gauge: the next batch records it again
            log.warning("consumer %s: lag not recorded: %r", self.group, exc)

    def _after(self, batch: list[Message]) -> list[TopicPartition]:
        """The offsets to commit once `batch` is applied: after its last message in each
        partition this member still holds."""
        held = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        after: dict[tuple[str, int], int] = {}
        for message in batch:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is not None and partition is not None and offset is not None:
                after[topic, partition] = max(after.get((topic, partition), 0), offset + 1)
        return [TopicPartition(t, p, o) for (t, p), o in after.items() if (t, p) in held]

    async def _intact(self, stop: asyncio.Event) -> bool:
        """Before a batch and while idle: the sink holds everything before it, or a rebuild
        from the event store is recorded as under way (`sink_rebuilds`), so that nothing
        reports it caught up meanwhile. A sink that lost its data (a flushed cache, a lost
        index alias), a group that never committed (a new projection, a new group) and
        records gone from the topic ask for a rebuild, whichever member notices; a sink
        never built from the store by this code (no row yet) too.

        The rebuild is carried out by the member that takes its lock first (`_take_over`):
        the whole store, with the gap-safe reader, whatever partitions it holds; the others
        wait for it (`_await_rebuild`). Never from the topic's beginning: retention may have dropped
        it, and a member only reads its own partitions. Events applied twice across the
        overlap are harmless (the applies' version guards). A rebuild left unfinished (its
        owner died: nobody holds its lock) is taken over by whichever member sees it.
        False: stopping in the middle of a replay."""
        lost = not await self.projection.intact(_PAST_START)
        if lost or self._needs_store_replay:
            reason = f"{self.projection.name} lost its data" if lost else self._needs_reason
            await self._request_rebuild(reason)
            self._needs_store_replay = False
        state = await self._rebuild_state()
        if state is None:
            await self._request_rebuild(f"{self.projection.name} has no rebuild on record")
            state = await self._rebuild_state()
        if state is not None and state.rebuilding and not state.owned:
            return await self._take_over(stop) and self._bounded_unread()
        if state is not None and state.rebuilding:
            return await self._await_rebuild(stop) and self._bounded_unread()
        return True

    def _bounded_unread(self) -> bool:
        """A rebuild just finished (this member's or another's): each partition never
        committed and not read yet gets the bound its first message must keep, the
        rebuild's end of it (`_first_bound`). Assigned while the rebuild was under way it
        had none ("the rebuild reads the store to its head, after now"), but records can be
        deleted after the replay read the store and before the first fetch: passed over
        unseen, their events were missing from the sink for good (CI, the fault test's seed
        917749: two deletions never reached the cache, whose group was assigned during its
        own rebuild while the topic's records were being deleted). True, for `_intact`."""
        for partition, expected in list(self._expected.items()):
            unread = expected is None and partition not in self._first_at_most
            if unread and (bound := self._first_bound(partition)) is not None:
                self._first_at_most[partition] = bound
        return True

    async def _await_rebuild(self, stop: asyncio.Event) -> bool:
        """Another member replays the store into the sink: this one applies nothing until
        that replay is over (its partitions paused, the consumer still polled), then goes
        on; it takes the rebuild over if its owner dies. Applying meanwhile, a batch could
        hold a warrior's version after one the topic lost and the replay had not reached
        yet: refused for the gap, retried, then parked, and a valid event was lost to the
        sink (issue 25, item 2). False: stopping."""
        async with self._polling_paused():
            while not stop.is_set():
                await asyncio.sleep(REBUILD_CHECK_SECONDS)  # the rebuild's row, read at its pace
                self._rebuild_checked = float("-inf")
                state = await self._rebuild_state()
                if state is None or not state.rebuilding:
                    return True
                if not state.owned:
                    break  # its owner died: taken over below, once polling is this member's again
            else:
                return False
        return await self._take_over(stop)

    async def _request_rebuild(self, reason: str) -> None:
        """Record that the sink must be rebuilt (a new generation), unless a rebuild is
        under way already: it reads the store to its head, after now, so it covers this."""
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(REQUEST_REBUILD, {"name": self.projection.name, "reason": reason})
            ).fetchone()
        if row is not None:
            log.warning("consumer %s: %s; rebuilding it from the event store (rebuild %d)",
                        self.group, reason, row[0])  # fmt: skip
            await self._mark_rebuilding(row[0])
        self._rebuild_checked = float("-inf")  # read it again now

    async def _rebuild_state(self) -> RebuildState | None:
        """The sink's rebuild, read at most every REBUILD_CHECK_SECONDS."""
        now = time.monotonic()
        if now - self._rebuild_checked < REBUILD_CHECK_SECONDS and self._rebuild is not None:
            return self._rebuild
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    _REBUILD_STATE,
                    {
                        "name": self.projection.name,
                        "key": self._rebuild_key,
                        "recent": RECENT_REBUILD_SECONDS,
                    },
                )
            ).fetchone()
        self._rebuild = None if row is None else RebuildState(
            row[0], row[1] == "rebuilding", StreamPosition(row[2], row[3]), bool(row[4]), bool(row[5]),
            None if row[6] is None else tuple(row[6]),
        )  # fmt: skip
        self._rebuild_checked = now
        return self._rebuild

    async def _take_over(self, stop: asyncio.Event) -> bool:
        """Own the sink's rebuild and carry it out, unless another member took its lock a
        moment ago. The owner holds a session-level advisory lock for the whole replay, on
        the connection the replay runs on.

        Why a lock and not a lease (a heartbeat with an expiry): PostgreSQL drops the lock
        the moment the owner's session ends, so a SIGKILLed or crashed owner is seen at once
        by every member (a host or network lost: once the server's TCP keepalives, set
        short on this session, find the connection dead), with no clock and no expiry to
        tune. A lease would have to outlast the slowest batch (a search engine answering in
        10 s, a lock held by a blue/green swap) and would then leave a dead owner's partial
        sink unnoticed for as long, or lapse under a live but slow owner and have two
        members replay. The replay's own statements run on the session that holds the
        lock: if the owner loses its session, it loses the lock and cannot write another
        batch's progress either. A hung owner keeps its lock, as it keeps its partitions:
        its rebuild shows as a growing lag in the projections' status
        (`sink_rebuilds.replayed_*` stops moving)."""
        async with self.pool.connection() as conn:
            owned = await (await conn.execute(_TRY_OWN, (self._rebuild_key,))).fetchone()
            if not owned or not owned[0]:
                self._rebuild_checked = float("-inf")
                return True
            try:
                await conn.execute(_KEEPALIVES)
                async with self._polling_paused():
                    return await self._rebuild_owned(conn, stop)
            finally:
                self._rebuild_checked = float("-inf")
                try:
                    await conn.execute(_DISOWN, (self._rebuild_key,))
                except Exception:  # the session is gone, and its lock with it; else it goes now
                    await conn.close()

    async def _rebuild_owned(self, conn: AsyncConnection[Any], stop: asyncio.Event) -> bool:
        """Holding the rebuild's lock: replay the store into the sink and mark it complete.
        The sink is reset first only if it lost its data; otherwise (a group that never
        committed, a gap, an owner that died) the replay goes into it as it is, from where
        the rebuild got (`replayed_*`: the sink holds every event up to there as long as its
        epoch or alias stands, since a reset moves it back to the start before touching the
        sink)."""
        name = self.projection.name
        while True:
            self._rebuild_checked = float("-inf")
            state = await self._rebuild_state()
            if state is None or not state.rebuilding:
                return True  # finished by another member a moment ago
            generation, start = state.generation, state.replayed
            # Asked of the sink itself, not a moment-old answer: resuming into a sink that
            # lost its data left out every event before the resume point, for good (CI, the
            # fault test's seed 917749: an alias deleted just after a member last looked).
            lost = not await self.projection.intact(_PAST_START, fresh=True)
            ends = await asyncio.to_thread(self._topic_ends)  # before the replay reads the store
            await conn.execute(
                _OWNED, {"owner": self._owner, "name": name, "generation": generation, "ends": ends}
            )
            if lost:
                start = START
                await conn.execute(_RESTARTED, {"name": name, "generation": generation})  # first: see above
                async with conn.transaction():
                    await lock_projection(conn, name)
                    await self.projection.reset(conn)
            # Marked partial before an epoch opens (the cache cannot be ready meanwhile).
            await self._mark_rebuilding(generation)
            # From the start: the cache opens its epoch, the index gets its alias. Under the
            # projection's lock, as every reset: two members creating the alias at once would
            # each add an index behind it, and then every write fails ("no write index").
            # Resuming: only into the sink found intact above; if it lost its data since,
            # opening a new epoch (alias) here would make an empty sink look whole from the
            # resume point on, so the rebuild starts over instead (and resets it).
            async with conn.transaction():
                await lock_projection(conn, name)
                whole = await self.projection.intact(START if start == START else _PAST_START, fresh=True)
            if not whole:
                self._starting_over("before its rebuild resumed")
                continue
            log.info("consumer %s: rebuild %d of %s from the event store, from position %d",
                     self.group, generation, name, start.position)  # fmt: skip
            try:
                total = await self._replay_store(conn, generation, start, stop)
            except _SinkLost:
                self._starting_over("during its rebuild")
                continue
            if total is None:
                return False  # stopping: the rebuild stays unfinished, for another member
            if not await self._finish_marked(generation):
                self._starting_over("during its rebuild")
                continue
            await conn.execute(_COMPLETE, {"name": name, "generation": generation})
            self._rebuild = RebuildState(
                generation, False, state.replayed, False, True, None if ends is None else tuple(ends)
            )
            log.info("consumer %s: %s built from the event store (%d events); on with the topic",
                     self.group, name, total)  # fmt: skip
            return True

    def _starting_over(self, when: str) -> None:
        name = self.projection.name
        log.warning("consumer %s: %s lost its data %s; starting it over", self.group, name, when)

    async def _mark_rebuilding(self, generation: int) -> None:
        """The sink's own mark, where its readers look (the Redis cache: not ready while it stands)."""
        models = getattr(self.projection, "models", None)
        if isinstance(models, RedisReadModels):
            await self._sink(models.begin_rebuild(generation))

    async def _finish_marked(self, generation: int) -> bool:
        """The replay is over: False when the sink lost its data meanwhile (after the last
        batch's look), and the rebuild must start over."""
        models = getattr(self.projection, "models", None)
        if isinstance(models, RedisReadModels):
            return bool(await self._sink(models.finish_rebuild(generation)))
        return await self.projection.intact(_PAST_START, fresh=True)

    async def _sink(self, work: Any) -> Any:
        try:
            return await work
        except CacheUnavailable as exc:
            raise ProjectionTargetUnavailable(str(exc)) from exc

    async def _replay_store(
        self, conn: AsyncConnection[Any], generation: int, position: StreamPosition, stop: asyncio.Event
    ) -> int | None:
        """Every stored event after `position` into the sink, in batches under the
        projection's lock (as the consumers' batches), each recording how far the rebuild
        got in its own transaction; an event that fails alone is parked, as from the topic.
        None: stopped midway. Raises _SinkLost when the sink lost its data meanwhile."""
        total = 0
        while True:
            if stop.is_set():
                return None
            if not await self.projection.intact(_PAST_START, fresh=True):
                raise _SinkLost()
            async with conn.transaction():
                await lock_projection(conn, self.projection.name)
                events = await read_after(conn, position, REPLAY_BATCH)
                if events:
                    started_ns = time.time_ns()
                    await self._apply_from_store(conn, events)
                    tracing.record_applied(_APPLY_SPAN, self.projection.name, events, started_ns)
                    end = events[-1].stream_position
                    await conn.execute(_REPLAYED, {
                        "transaction_id": end.transaction_id, "position": end.position,
                        "name": self.projection.name, "generation": generation,
                    })  # fmt: skip
            if not events:
                return total
            EVENTS_APPLIED.labels(self.projection.name).inc(len(events))
            if log.isEnabledFor(logging.DEBUG):
                log_applied(log, self.projection.name, events)
            position, total = events[-1].stream_position, total + len(events)
            if total % (REPLAY_BATCH * 20) < REPLAY_BATCH:
                log.info("consumer %s: %d events replayed from the store", self.group, total)

    @asynccontextmanager
    async def _polling_paused(self) -> AsyncIterator[None]:
        """While this member replays the store, its partitions are paused and the consumer
        is polled all the same (every REPLAY_POLL_SECONDS, in a thread): a replay longer
        than max.poll.interval.ms no longer gets the member thrown out of its group (and its
        partitions rebalanced mid-replay), and rebalances asked for meanwhile (a member
        joining) complete. Polling a paused consumer returns no messages of its paused
        partitions (librdkafka drops what it had fetched for them, and fetches again from the
        position on resume); partitions assigned during the replay are paused at the next
        poll, and the messages a poll returned before that are kept and applied after the
        replay, before anything else is read."""
        done = False

        def poll() -> list[Message]:
            assigned = [
                tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) not in self._paused
            ]
            if assigned:
                self.consumer.pause(assigned)
                self._paused |= {(tp.topic, tp.partition) for tp in assigned}
            return self.consumer.consume(self.batch_size, REPLAY_POLL_SECONDS)

        async def keep_polling() -> None:
            while not done:
                self._held += await asyncio.to_thread(poll)

        self._replaying = True
        poller = asyncio.create_task(keep_polling())
        try:
            yield
        finally:
            done = True
            try:
                await poller
            finally:
                self._replaying = False
                paused = [tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) in self._paused]
                self._paused.clear()
                if paused:
                    self.consumer.resume(paused)

    async def _apply_from_store(self, conn: AsyncConnection[Any], events: list[StoredEvent]) -> None:
        try:
            async with conn.transaction():  # a savepoint
                await self.projection.apply(conn, events)
            return
        except TRANSIENT:
            raise
        except Exception as exc:
            log.warning("consumer %s: a replayed batch failed (%r); event by event", self.group, exc)
        for event in events:
            try:
                async with conn.transaction():
                    await self.projection.apply(conn, [event])
            except TRANSIENT:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                await self._dead_letter_event(event, error)
                await self.projection.skip(conn, event)
                await conn.execute(_PARK, (self.projection.name, event.event_id, event.position, error))

    async def _apply(self, batch: list[tuple[Message, StoredEvent]]) -> None:
        """The whole batch in one transaction (under the projection's lock, as the
        engine's batches: a rebuild's swap pauses it, and group members never interleave
        their counts); if it fails, message by message."""
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await lock_projection(conn, self.projection.name)
                await self.projection.apply(conn, [event for _, event in batch])
            return
        except TRANSIENT:
            raise
        except Exception as exc:
            log.warning("consumer %s: batch failed (%r); applying message by message", self.group, exc)
        for message, event in batch:
            await self._apply_one(message, event)

    async def _apply_one(self, message: Message, event: StoredEvent) -> None:
        error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    await lock_projection(conn, self.projection.name)
                    await self.projection.apply(conn, [event])
                return
            except TRANSIENT:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("consumer %s: event %s failed (attempt %d/%d): %s",
                            self.group, event.event_id, attempt, self.attempts, error)  # fmt: skip
                if attempt < self.attempts:  # a pause, so that a passing cause can pass
                    await asyncio.sleep(RETRY_PAUSE_SECONDS * attempt)
        await self._dead_letter(message, error)
        async with self.pool.connection() as conn, conn.transaction():  # parked: the rest goes on
            await lock_projection(conn, self.projection.name)
            await self.projection.skip(conn, event)
            await conn.execute(_PARK, (self.projection.name, event.event_id, event.position, error))

    async def _dead_letter_event(self, event: StoredEvent, error: str) -> None:
        """A poison event met in a replay from the store: to the dead-letter topic as the
        relay would have published it, with the same headers a consumed one gets."""
        headers = [
            *envelope.headers(event),
            ("error", error.encode()),
            ("projection", self.projection.name.encode()),
            ("original_position", str(event.position).encode()),
        ]
        try:
            await self.dead_letters.publish(
                DLQ_TOPIC, [OutgoingMessage(envelope.key(event), envelope.value(event), headers)]
            )
        except BusUnavailable as exc:
            raise ProjectionTargetUnavailable(f"the dead-letter topic is unreachable: {exc}") from exc
        log.error("consumer %s: event %s (replayed from the store) to %s: %s",
                  self.group, event.event_id, DLQ_TOPIC, error)  # fmt: skip

    async def _dead_letter(self, message: Message, error: str) -> None:
        original = message.headers() or []
        headers: list[tuple[str, str | bytes | None]] = (
            list(original.items()) if isinstance(original, dict) else list(original)
        )
        headers += [
            ("error", error.encode()),
            ("projection", self.projection.name.encode()),
            ("original_partition", str(message.partition()).encode()),
            ("original_offset", str(message.offset()).encode()),
        ]
        try:
            await self.dead_letters.publish(
                DLQ_TOPIC, [OutgoingMessage(message.key() or b"", message.value() or b"", headers)]
            )
        except BusUnavailable as exc:
            raise ProjectionTargetUnavailable(f"the dead-letter topic is unreachable: {exc}") from exc
        log.error(
            "consumer %s: message %s/%s to %s: %s",
            self.group,
            message.partition(),
            message.offset(),
            DLQ_TOPIC,
            error,
        )

    async def _record_lag(self, *, fresh: bool = False) -> int:
        """Each partition this member holds: the offset it reads next (everything before it
        applied), the partition's end, and the store's order up to which its events are
        applied (sql/0016): the last event this member applied from it, or, if it is read
        to its end, the relay's checkpoint as it was before the end was asked of the
        broker (everything the relay had published by then is before that end), the later.
        The ends come from the consumer's cached watermarks (no round trip), or, `fresh`
        (while idle, and after a batch at most every PROGRESS_CHECK_SECONDS), from the
        broker, which moves a quiet partition's order on while others are busy.

        Every held partition, after each batch and while idle at the end of the topic, not
        only those the batch touched: a partition's row then stops moving only when nobody
        consumes it (its member died or hangs), and the status counts what the relay
        published after the least advanced partition. Returns the messages not consumed."""
        relayed, partitions = None, 0
        if fresh or time.monotonic() - self._progress_checked >= PROGRESS_CHECK_SECONDS:
            relayed = await self._relayed()
            partitions = await asyncio.to_thread(self._topic_partitions)
            self._progress_checked = time.monotonic()
        self._recorded_fresh = relayed is not None
        rows = await asyncio.to_thread(self._progress, relayed)
        if rows or partitions > self._partitions_placed:
            async with self.pool.connection() as conn:
                if partitions > self._partitions_placed:  # first: before a row says anything applied
                    await conn.execute(_PLACEHOLDERS, {"group": self.group, "count": partitions})
                    self._partitions_placed = partitions
                if rows:
                    await conn.execute(_RECORD_LAG, {"group": self.group, **_columns(rows)})
        return sum(row.end - row.committed for row in rows)

    def _topic_partitions(self) -> int:
        """How many partitions the topic has, as the broker says (0: not known now)."""
        try:
            topic = self.consumer.list_topics(TOPIC, timeout=5.0).topics.get(TOPIC)
        except KafkaException:
            return 0
        return 0 if topic is None or topic.error is not None else len(topic.partitions)

    def _progress(self, relayed: StreamPosition | None) -> list[PartitionProgress]:
        """The rows of `_record_lag`; ends asked of the broker when `relayed` is given."""
        rows: list[PartitionProgress] = []
        for tp in self.consumer.assignment():
            if tp.topic != TOPIC:
                continue
            # Never committed and nothing read from it yet: it is read from its earliest
            # record, so all of it is ahead (0 overstates it when retention has deleted the
            # first records, until the first message read from it). Skipped, as it was, the
            # partition said nothing, and the group's other partitions, read to their ends,
            # made the lag 0 with its messages unread.
            committed = self._expected.get(tp.partition) or 0
            end = self._end_offset(TOPIC, tp.partition, fresh=relayed is not None)
            applied = self._applied.get(tp.partition, START)
            if relayed is not None and committed >= end:
                applied = max(applied, relayed)
            end = max(end, committed)
            rows.append(PartitionProgress(tp.partition, committed, end, applied))
        return rows

    async def _relayed(self) -> StreamPosition:
        """The relay's checkpoint (it moves only once the broker confirmed): every event
        up to it is on the topic."""
        async with self.pool.connection() as conn:
            found = await read_checkpoint(conn, RELAY)
        return found[0] if found else START


def _skippable(message: Message) -> bool:
    error = message.error()
    if error is None:
        return False
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer: %s", error)
    return True
