"""A projection fed from Kafka: one consumer group per projection (`warriors-<name>`).

Each batch of messages is applied in a PostgreSQL transaction, then the offsets are
committed: after the effect, so a crash redelivers rather than loses, and the projection's
idempotent applies make a redelivery harmless. Per-aggregate order holds because one
warrior's events share a partition, which one group member reads at a time.

A message that cannot be applied is retried a bounded number of times; then it goes to
`warrior-events.dlq` with the error in its headers, is recorded with the projection's
parked events (its status shows it), and the rest of the stream goes on.

Consumer lag (end of each partition minus the committed offset) is written to
`bus_consumer_lag` after every batch; the projections' status reports it.
"""

import asyncio
import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from psycopg import AsyncConnection, InterfaceError, OperationalError
from psycopg_pool import AsyncConnectionPool

from warriors import tracing
from warriors.adapters.kafka_bus import DLQ_TOPIC, TOPIC, BusProducer, BusUnavailable, OutgoingMessage
from warriors.bus import envelope
from warriors.eventstore.reader import read_after
from warriors.eventstore.records import START, StoredEvent, StreamPosition
from warriors.logs import log_applied
from warriors.metrics import EVENTS_APPLIED
from warriors.projections.base import Projection, ProjectionTargetUnavailable
from warriors.projections.engine import lock_projection
from warriors.projections.status import consumer_group

log = logging.getLogger("warriors.bus.consumer")
_APPLY_SPAN = "warriors.projection.apply"

_RECORD_LAG = """
INSERT INTO bus_consumer_lag (group_id, partition, committed, end_offset, updated_at)
VALUES (%s, %s, %s, %s, now())
ON CONFLICT (group_id, partition) DO UPDATE
SET committed = excluded.committed, end_offset = excluded.end_offset, updated_at = now()
"""
_PARK = """
INSERT INTO projection_parked_events (projection_name, event_id, position, error)
VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING
"""


# The database or the target away for now (see the engine's _is_transient): the batch is tried again.
TRANSIENT = (OperationalError, InterfaceError, OSError, ProjectionTargetUnavailable)
# Events per batch when a sink is built from the event store.
REPLAY_BATCH = 1000
# Before parking an event that failed alone, it is tried again after 0.2 s, then 0.4 s.
RETRY_PAUSE_SECONDS = 0.2
_PAST_START = StreamPosition(0, 1)  # "not from the beginning", for `Projection.intact`


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
    ) -> None:
        self.pool = pool
        self.projection = projection
        self.group = consumer_group(projection.name)
        self.dead_letters = dead_letters
        self.batch_size = batch_size
        self.attempts = attempts
        self._needs_store_replay = False  # set on assignment (a group that never committed) or a lost sink
        self._expected: dict[int, int | None] = {}  # partition -> the offset its next message should have
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                # A member unheard for this long (killed, hung) loses its partitions to the others.
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": min(3000, session_timeout_ms // 3),
            }
        )

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer.subscribe([TOPIC], on_assign=self._assigned)
        log.info("consumer group %s reading %s for %s", self.group, TOPIC, self.projection.name)
        try:
            while not stop.is_set():
                messages = await asyncio.to_thread(self._next_messages)
                batch = [m for m in messages if not _skippable(m)]
                self._notice_gaps(batch)
                if batch:
                    await self._process(batch, stop)
                elif not messages:
                    await self._idle()
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
        committed = consumer.committed(partitions, 10.0)
        self._needs_store_replay = self._needs_store_replay or all(tp.offset < 0 for tp in committed)
        for tp in committed:  # where each partition's next message should be
            self._expected[tp.partition] = tp.offset if tp.offset >= 0 else None

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
            if expected is not None and offset > expected:
                log.warning(
                    "consumer %s: partition %d jumped from offset %d to %d (records gone from the topic);"
                    " the sink is rebuilt from the event store",
                    self.group, partition, expected, offset,
                )  # fmt: skip
                self._needs_store_replay = True
            self._expected[partition] = offset + 1

    def _at_end(self) -> bool:
        """Every partition this member holds is read to its end (cached watermarks)."""
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        for tp in self.consumer.position(assigned):
            _, end = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), 1.0, True)
            if end > max(tp.offset, 0):
                return False
        return True

    async def _idle(self) -> None:
        """No message for a while: a sink that must be built from the store is built now
        (a new group on a quiet topic, a cache flushed while nothing is written), and at
        the end of the topic its partitions' lag is recorded again (their progress: see
        `_record_lag`) and the projection is told it is still caught up (the cache renews
        its readiness, which lapses when nobody renews it)."""
        try:
            await self._intact()
            if await asyncio.to_thread(self._at_end):
                await self._record_lag()
                await self.projection.caught_up()
        except TRANSIENT as exc:
            log.warning("consumer %s: %r", self.group, exc)

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
                if not await self._intact():
                    return  # replaying from the beginning: this batch comes again
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
        # which the applies make harmless.
        self.consumer.commit(asynchronous=True)
        EVENTS_APPLIED.labels(self.projection.name).inc(len(readable))
        if log.isEnabledFor(logging.DEBUG):
            log_applied(log, self.projection.name, [event for _, event in readable])
        try:
            if await self._record_lag() == 0:
                await self.projection.caught_up()
        except TRANSIENT as exc:  # only a gauge: the next batch records it again
            log.warning("consumer %s: lag not recorded: %r", self.group, exc)

    async def _intact(self) -> bool:
        """Before a batch: the sink holds everything before it. A group that never
        committed (a new projection, a new group), or a sink that lost its data (a flushed
        cache, a lost index alias: reset here, whichever member notices), is first built
        from the event store, the source of truth, with the gap-safe reader; then the topic
        goes on from where the group stands. Never from the topic's beginning: retention
        may have dropped it, and a member only reads its own partitions. Events applied
        twice across the overlap are harmless (the applies' version guards)."""
        if not self._needs_store_replay:
            if await self.projection.intact(_PAST_START):
                return True
            log.warning("consumer %s: %s lost its data; rebuilding it from the event store",
                        self.group, self.projection.name)  # fmt: skip
            async with self.pool.connection() as conn, conn.transaction():
                await lock_projection(conn, self.projection.name)
                await self.projection.reset(conn)
            self._needs_store_replay = True
        await self._replay_store()  # a transient error: tried again, from the start of the store
        self._needs_store_replay = False
        return True

    async def _replay_store(self) -> None:
        """Every stored event into the sink, in batches under the projection's lock (as the
        consumers' batches); an event that fails alone is parked, as from the topic."""
        # A fresh start: the cache opens its epoch, the index gets its alias. Under the
        # projection's lock, as every reset: two members creating the alias at once would
        # each add an index behind it, and then every write fails ("no write index").
        async with self.pool.connection() as conn, conn.transaction():
            await lock_projection(conn, self.projection.name)
            await self.projection.intact(START)
        position, total = START, 0
        while True:
            async with self.pool.connection() as conn, conn.transaction():
                await lock_projection(conn, self.projection.name)
                events = await read_after(conn, position, REPLAY_BATCH)
                if events:
                    started_ns = time.time_ns()
                    await self._apply_from_store(conn, events)
                    tracing.record_applied(_APPLY_SPAN, self.projection.name, events, started_ns)
            if not events:
                break
            EVENTS_APPLIED.labels(self.projection.name).inc(len(events))
            if log.isEnabledFor(logging.DEBUG):
                log_applied(log, self.projection.name, events)
            position, total = events[-1].stream_position, total + len(events)
            if total % (REPLAY_BATCH * 20) < REPLAY_BATCH:
                log.info("consumer %s: %d events replayed from the store", self.group, total)
        log.info("consumer %s: %s built from the event store (%d events); on with the topic",
                 self.group, self.projection.name, total)  # fmt: skip

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

    async def _record_lag(self) -> int:
        """Each partition this member holds: the offset it reads next (everything before it
        applied) and the partition's end, from the consumer's cached watermarks (no round
        trip to the broker). Every held partition, after each batch and while idle at the
        end of the topic, not only those the batch touched: a partition's row then stops
        moving only when nobody consumes it (its member died or hangs), and the status
        counts what was stored since the least recently recorded partition."""
        rows: list[tuple[Any, ...]] = []
        for tp in self.consumer.assignment():
            committed = self._expected.get(tp.partition)
            if tp.topic != TOPIC or committed is None:
                continue  # never committed and nothing read yet: nothing to say
            _, end = self.consumer.get_watermark_offsets(TopicPartition(TOPIC, tp.partition), 1.0, True)
            rows.append((self.group, tp.partition, committed, max(end, committed)))
        async with self.pool.connection() as conn:
            for row in rows:
                await conn.execute(_RECORD_LAG, row)
        return sum(end - committed for _, _, committed, end in rows)


def _skippable(message: Message) -> bool:
    error = message.error()
    if error is None:
        return False
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer: %s", error)
    return True
