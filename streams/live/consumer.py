"""The worker's input: the input topics consumed in batches with confluent-kafka
(librdkafka), inside the Faust app, without Faust's per-message path.

One loop, one batch at a time (:meth:`BatchConsumer.run`):

1. in a worker thread, take what librdkafka has buffered, up to ``batch_size`` messages;
   when nothing is, wait up to ``batch_timeout`` for the first message and take what came
   with it. Batches are full under load (the buffer fills while the previous batch is
   processed) and small when idle: a batch that is not full waits at most
   ``batch_linger`` (2 ms by default) for more, then goes. The event loop never blocks on
   it.
2. the batch goes to :meth:`Processor.process` (validate, apply, produce, outbox);
3. only then are its offsets committed: sent (asynchronously) by the thread just before
   it takes the next batch, so the next batch does not wait for the broker's reply; on
   stop, the last batch's offsets are committed synchronously before leaving the group.
   A crash before a commit lands redelivers the batch; the store recognises what it
   already applied. A failed commit is logged (bounded) and counted, never retried: the
   next batch's commit covers its partitions.

A rebalance happens inside ``consume`` (librdkafka calls the assignment callbacks from
it), so it never meets a batch in flight: the previous batch was applied, acknowledged and
committed before the next ``consume``. On stop (SIGTERM), a batch in flight is finished and
committed, then the consumer leaves the group; each step is bounded in time.

The group protocol is librdkafka's (the ``range`` assignor), not Faust's: a group cannot
mix workers of both kinds, so an upgrade from a Faust-consuming worker stops every old
worker before starting the new ones (committed offsets carry over: same group id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from ..kafka import confluent_config
from ..settings import Settings
from .interfaces import RawMessage, StoreRolledBack, stream_of

log = logging.getLogger("leadscore.worker")

#: How long a stop may wait for the consumer to leave the group.
CLOSE_TIMEOUT_S = 10.0
#: Consumer errors are logged at most once per this many seconds (all are counted).
ERROR_LOG_INTERVAL_S = 10.0

TopicPartitionKey = tuple[str, int]


class BatchConsumer:
    """Consumes the input topics in batches and commits after each is processed."""

    def __init__(
        self,
        settings: Settings,
        on_assigned: Callable[[dict[str, int | None]], None] | None = None,
    ) -> None:
        #: Told the committed offset of each newly assigned partition (stream name ->
        #: offset; None: no commit yet, or revoked): what the store checks its marks with.
        self.on_assigned = on_assigned
        self.topics = [*settings.input_topics, settings.control_topic]
        if settings.merges_identities:
            self.topics.append(settings.identity_topic_name)
        self.batch_size = settings.batch_size
        self.batch_timeout = settings.batch_timeout
        self.batch_linger = settings.batch_linger
        session_ms = round(settings.broker_session_timeout * 1000)
        self._consumer = Consumer(
            confluent_config(
                settings,
                **{
                    "group.id": settings.app_id,
                    "client.id": f"{settings.app_id}-worker",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": session_ms,
                    "heartbeat.interval.ms": round(settings.broker_heartbeat_interval * 1000),
                    "error_cb": self._on_error,
                    "on_commit": self._on_commit,
                    # The worker logs through Python logging, not librdkafka's stderr.
                    "logger": logging.getLogger("leadscore.kafka.consumer"),
                },
            )
        )
        # One thread for every blocking call on the consumer (consume, commit, close).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consume")
        #: Where reading of each assigned partition started this time (its committed offset,
        #: else the log start; None if unknown): the lag of a partition nothing was
        #: processed from yet.
        self.start_offsets: dict[TopicPartitionKey, int | None] = {}
        self.errors = 0
        self._last_error_log = 0.0
        self._stopping = False
        self._done = asyncio.Event()
        #: The batch being processed and committed, if any.
        self._in_flight: asyncio.Future[None] | None = None
        #: When ``consume`` last returned (monotonic s): the group hears from us then.
        self._last_poll: float | None = None
        self._session_timeout_s = settings.broker_session_timeout
        #: Stream -> mark to re-read from, asked for by :meth:`rewind_to`.
        self._pending_rewind: dict[str, int] = {}
        #: Offsets of processed batches not yet handed to librdkafka to commit, and the
        #: last handed over per partition (committed again, synchronously, on revocation).
        self._to_commit: dict[TopicPartitionKey, int] = {}
        self._sent: dict[TopicPartitionKey, int] = {}
        self.commit_failures = 0
        self._last_commit_log = 0.0

    # ------------------------------------------------------------------ the loop
    async def run(
        self,
        process: Callable[[list[RawMessage]], Awaitable[object]],
        ready: asyncio.Event | None = None,
    ) -> None:
        """Consume, process and commit until :meth:`stop` (or cancellation); a batch in
        flight is finished and committed first (synchronously); then the consumer leaves
        the group."""
        loop = asyncio.get_running_loop()
        try:
            if ready is not None:
                await ready.wait()
            self._consumer.subscribe(
                self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            while not self._stopping:
                if self._pending_rewind:
                    marks, self._pending_rewind = self._pending_rewind, {}
                    await loop.run_in_executor(self._thread, self._rewind, [], marks)
                batch = await loop.run_in_executor(self._thread, self._consume)
                if not batch:
                    continue
                task = self._in_flight = asyncio.ensure_future(self._process(process, batch))
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    if not task.done():
                        log.info("stopping: finishing the current batch of %d", len(batch))
                        await task  # cancelled too when stop() gives up on it
                    raise
                finally:
                    self._in_flight = None
        finally:
            await self._close(loop)
            self._done.set()

    async def stop(self, timeout: float) -> None:
        """Ask :meth:`run` to stop after the batch in flight and wait (at most ``timeout``
        seconds) until it has committed and left the group. Call it before the producer
        stops: the batch in flight still produces its crossings. A batch that cannot finish
        in time (Redis or Kafka down) is abandoned uncommitted: whoever reads the partition
        next reads it again, and the store recognises what of it was applied. So a stop
        takes at most ``timeout`` + :data:`CLOSE_TIMEOUT_S` (+ a little)."""
        self._stopping = True
        try:
            await asyncio.wait_for(asyncio.shield(self._done.wait()), timeout)
            return
        except TimeoutError:
            pass
        task = self._in_flight
        if task is not None and not task.done():
            log.error(
                "the batch in flight did not finish within %.0fs of the stop; abandoning it "
                "uncommitted (it is read again on the next start; what of it was applied is "
                "recognised and skipped)",
                timeout,
            )
            task.cancel()
        try:
            await asyncio.wait_for(self._done.wait(), CLOSE_TIMEOUT_S + 5)
        except TimeoutError:
            log.error("the consumer did not stop; stopping anyway")

    async def _process(
        self, process: Callable[[list[RawMessage]], Awaitable[object]], batch: list[RawMessage]
    ) -> None:
        """Process ``batch``; then its offsets are due for commit (the next ``_consume``
        sends them, or the stop)."""
        loop = asyncio.get_running_loop()
        try:
            await process(batch)
        except StoreRolledBack as exc:
            # Re-read the batch, and from further back where the store lost writes; nothing
            # is committed. (Standalone: nothing of the batch was written. Cluster: the
            # nodes that lost nothing wrote their leads; re-read, those events are skipped
            # as applied, and their crossings wait in the outbox for the relay.)
            await loop.run_in_executor(self._thread, self._rewind, batch, exc.marks)
            return
        for m in batch:
            self._to_commit[(m.topic, m.partition)] = m.offset + 1

    def _take_commit(self) -> list[TopicPartition]:
        offsets, self._to_commit = self._to_commit, {}
        self._sent.update(offsets)
        return [TopicPartition(t, p, o) for (t, p), o in offsets.items()]

    def rewind_to(self, marks: dict[str, int]) -> None:
        """Re-read these streams from these offsets (-1: the log start) before the next
        batch (the store lost writes; see :class:`~streams.live.interfaces.StoreRolledBack`)."""
        self._pending_rewind.update(marks)

    def _rewind(self, batch: list[RawMessage], marks: dict[str, int]) -> None:
        """Seek each partition of ``batch`` back to its first message in it, or to the
        store's mark where that is further back (-1: the log start); and each assigned
        partition of ``marks`` to its mark."""
        targets: dict[TopicPartitionKey, int | None] = {}
        for m in batch:
            targets.setdefault((m.topic, m.partition), m.offset)
        try:
            assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        except (KafkaException, RuntimeError):
            assigned = set()
        for key in assigned:
            if stream_of(*key) in marks:
                targets.setdefault(key, None)
        for (topic, partition), first in targets.items():
            mark = marks.get(stream_of(topic, partition))
            if mark is None:
                assert first is not None
                self._consumer.seek(TopicPartition(topic, partition, first))
                continue
            if first is not None:
                mark = min(mark, first)
            log.error(
                "%s[%d]: Redis holds what was applied up to %s only (it lost writes): "
                "re-reading from there; the events it kept are recognised and skipped",
                topic,
                partition,
                "nothing (from the log start)" if mark < 0 else f"offset {mark}",
            )
            offset = OFFSET_BEGINNING if mark < 0 else mark
            self._consumer.seek(TopicPartition(topic, partition, offset))

    def _consume(self) -> list[RawMessage]:
        # First hand the processed batch's offsets to librdkafka (it sends the commit in
        # the background; the reply, or a failure, comes to _on_commit).
        commit = self._take_commit()
        if commit:
            self._commit(commit, asynchronous=True)
        # What is buffered now, up to a batch; if nothing, wait (at most batch_timeout) for
        # the first message, then take what came with it: under load the buffer fills
        # while the previous batch is processed (full batches); when idle, a batch waits at
        # most the linger to fill (a few ms: CPU per event, for little latency).
        messages = self._consumer.consume(self.batch_size, 0)
        if not messages:
            messages = self._consumer.consume(1, self.batch_timeout)
            if messages and self.batch_size > 1:
                messages += self._consumer.consume(self.batch_size - 1, 0)
        if messages and self.batch_linger > 0 and len(messages) < self.batch_size:
            # LEADSCORE_BATCH_LINGER: let more join a batch that is not full; returns as
            # soon as the batch is full.
            messages += self._consumer.consume(self.batch_size - len(messages), self.batch_linger)
        self._last_poll = time.monotonic()
        batch: list[RawMessage] = []
        for m in messages:
            error = m.error()
            if error is not None:
                self._on_error(error)
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            assert topic is not None and partition is not None and offset is not None
            kind, stamp = m.timestamp()
            when = stamp if kind != TIMESTAMP_NOT_AVAILABLE and stamp >= 0 else None
            batch.append(RawMessage(topic, partition, offset, m.key(), m.value(), when))
        return batch

    def _commit(self, offsets: list[TopicPartition], *, asynchronous: bool) -> None:
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self._commit_failed(exc)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's reply to a commit (served by ``consume``, in the thread)."""
        failed = [tp for tp in partitions if tp.error is not None]
        if error is not None or failed:
            self._commit_failed(error or failed[0].error)

    def _commit_failed(self, error: object) -> None:
        # A rebalance took the partitions (or the broker is away): the next owner re-reads
        # from the last commit, and the store skips what was already applied. Nothing is
        # lost; the next batch's commit covers the partitions still ours.
        self.commit_failures += 1
        now = time.monotonic()
        if now - self._last_commit_log >= ERROR_LOG_INTERVAL_S:
            self._last_commit_log = now
            log.warning(
                "offset commit failed (%s; %d so far); the batch may be redelivered",
                error,
                self.commit_failures,
            )

    async def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await asyncio.wait_for(
                loop.run_in_executor(self._thread, self._commit_and_close), CLOSE_TIMEOUT_S
            )
        except (TimeoutError, KafkaException, RuntimeError) as exc:
            log.warning("consumer did not leave the group cleanly: %s", exc)
        self._thread.shutdown(wait=False)

    def _commit_and_close(self) -> None:
        """Commit the last processed batch's offsets (synchronously), leave the group."""
        commit = self._take_commit()
        if commit:
            self._commit(commit, asynchronous=False)
        self._sent.clear()  # (committed: the revocation in close need not again)
        self._consumer.close()

    # ------------------------------------------------------------------ callbacks
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            log.warning("could not read committed offsets on assignment: %s", exc)
            committed = partitions
        for tp in committed:
            offset = tp.offset if tp.offset != OFFSET_INVALID and tp.offset >= 0 else None
            if offset is None:
                # No commit yet: reading starts at the log start (auto.offset.reset earliest).
                try:
                    low, _ = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                    offset = low if low >= 0 else None
                except KafkaException as exc:
                    log.warning("no watermarks for %s[%d]: %s", tp.topic, tp.partition, exc)
            self.start_offsets[(tp.topic, tp.partition)] = offset
        if self.on_assigned is not None:
            self.on_assigned(
                {
                    stream_of(tp.topic, tp.partition): (
                        tp.offset if tp.offset != OFFSET_INVALID and tp.offset >= 0 else None
                    )
                    for tp in committed
                }
            )
        log.info(
            "assigned: %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "-"
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The last processed offsets of these partitions were sent asynchronously just
        # before this consume, and a rebalance may fail that commit: commit them again,
        # synchronously, so that the next owner does not re-read a batch already applied
        # (it would only skip it). No batch is in flight here.
        again = [
            TopicPartition(tp.topic, tp.partition, offset)
            for tp in partitions
            if (offset := self._sent.pop((tp.topic, tp.partition), None)) is not None
        ]
        if again:
            self._commit(again, asynchronous=False)
        for tp in partitions:
            self.start_offsets.pop((tp.topic, tp.partition), None)
        if self.on_assigned is not None:
            self.on_assigned({stream_of(tp.topic, tp.partition): None for tp in partitions})
        log.info(
            "revoked: %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "-"
        )

    def _on_error(self, error: KafkaError) -> None:
        self.errors += 1
        now = time.monotonic()
        if error.fatal():
            log.error("Kafka consumer fatal error: %s", error)
        elif now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.warning("Kafka consumer: %s (%d errors so far)", error, self.errors)

    def owns_its_assignment(self) -> bool:
        """Whether the assignment can be trusted now: the consumer polled within the last
        session timeout. A process that was paused (SIGSTOP, a long GC, swapping) or stuck
        in a batch longer than that may have been dropped from the group while its
        assignment still lists the partitions (the revocation comes with its next poll):
        the cooling sweep must not act for them until then."""
        last = self._last_poll
        return last is not None and time.monotonic() - last < self._session_timeout_s

    # ------------------------------------------------------------------ lag
    def lag(self, next_offsets: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, int]:
        """Unprocessed messages per assigned partition, given the next offset the processor
        will see per partition. Unknown counts as lagging (1): holding a cooling back is
        safe, emitting it early is not."""
        lags: dict[TopicPartitionKey, int] = {}
        try:
            assignment = self._consumer.assignment()
        except (KafkaException, RuntimeError):
            return lags
        for tp in assignment:
            key = (tp.topic, tp.partition)
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except (KafkaException, RuntimeError):
                high = -1
            position = next_offsets.get(key, self.start_offsets.get(key))
            if high is None or high < 0 or position is None:
                lags[key] = 1
            else:
                lags[key] = max(0, high - position)
        return lags
