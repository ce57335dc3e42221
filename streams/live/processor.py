"""The worker's batch logic, independent of Faust and Redis: raw messages in, lead states
(a :class:`~streams.live.interfaces.DurableStore`) and records (a
:class:`~streams.live.interfaces.Sink`) out.

For each batch (as :class:`~streams.live.consumer.BatchConsumer` consumed it):

1. validate every message (``schemas.validation.parse_for_scoring``, then the clock-skew
   policy); rejects become dead letters;
2. produce the dead letters and wait for their acks (so a crash cannot lose them; one the
   broker refuses for what it is is logged, counted and skipped);
3. apply the valid events through the store: states (with their dedupe windows) and the
   crossings (outbox) are written atomically per lead;
4. produce the crossings to the hot-lead topic and wait for the acks;
5. drop them from the outbox.

Only when ``process`` returns does the consumer commit the batch's offsets. A crash
anywhere before that redelivers the batch: already-applied events are skipped by the store
(offsets / dedupe windows), and crossings still in the outbox are produced by
:meth:`Processor.relay_outbox` at start and on every sweep. Transient failures (of the
sink, and of the store as it judges them) are retried with backoff, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from schemas.events import CONTROL_TYPES, IDENTITY_TYPES, Scorable, rule_event_of
from schemas.formats import Decode
from schemas.times import datetime_to_ms
from schemas.validation import (
    DEFAULT_MAX_CLOCK_SKEW_MS,
    Rejected,
    not_control,
    parse_control_event,
    parse_for_scoring,
    too_far_ahead,
)
from scoring.crossings import ABSORBED, Crossing
from scoring.identity import IDENTITY_RECORD_MAX_BYTES
from scoring.state_machine import group_by_lead
from scoring.store import BatchResult, EventItem

from ..redaction import LeadIdsInLogs
from .dead_letters import DeadLetters, send_or_skip
from .identity_stage import (
    IdentityStage,
    absorbed_records,
    forwarded_records,
    identity_check,
)
from .interfaces import (
    DurableStore,
    RawMessage,
    Sink,
    StoreRolledBack,
    position_of,
)
from .metrics import Metrics
from .sweep import sweep_limit

log = logging.getLogger("leadscore.worker")

T = TypeVar("T")


def utc_now() -> datetime:
    """The default wall clock (emitted_at, seen_at, the cooling sweep's 'now')."""
    return datetime.now(UTC)


class Processor:
    """Applies micro-batches and runs the cooling sweep. One per worker process; batches,
    sweeps and outbox relays are serialised by a lock."""

    def __init__(
        self,
        store: DurableStore,
        sink: Sink,
        *,
        hot_topic: str,
        dlq_topic: str,
        metrics: Metrics,
        max_event_bytes: int = 64 * 1024,
        max_clock_skew_ms: int | None = DEFAULT_MAX_CLOCK_SKEW_MS,
        dlq_max_message_bytes: int = 1_048_588,
        clock: Callable[[], datetime] = utc_now,
        partition_lag: Callable[[], Awaitable[dict[tuple[str, int], int] | None]] | None = None,
        retry_initial: float = 0.1,
        retry_max: float = 10.0,
        on_rollback: Callable[[dict[str, int]], None] | None = None,
        decode: Decode = parse_for_scoring,
        mentioned: Callable[[str], bool] | None = None,
        control_topic: str | None = None,
        lead_ids: LeadIdsInLogs | None = None,
        identity: tuple[str, IdentityStage] | None = None,
    ) -> None:
        self.store = store
        #: Identity merges: the identity topic and step 1 (None: off).
        self.identity_topic: str | None = identity[0] if identity else None
        self.identity: IdentityStage | None = identity[1] if identity else None
        #: How log lines name leads (LEADSCORE_LOG_LEAD_IDS).
        self.lead_ids = lead_ids or LeadIdsInLogs()
        #: Where control events (``score_adjusted``, ``score_reset``) are read from; they
        #: are refused on any other topic.
        self.control_topic = control_topic
        #: Reads one input message (the input format's decoder, :mod:`schemas.formats`).
        self.decode = decode
        #: Whether a rule mentions an event name (None: do not count unscored events).
        self.mentioned = mentioned
        self.sink = sink
        self.hot_topic = hot_topic
        self.dlq_topic = dlq_topic
        self.metrics = metrics
        self.max_event_bytes = max_event_bytes
        #: See :func:`schemas.validation.too_far_ahead` (None: no limit).
        self.max_clock_skew_ms = max_clock_skew_ms
        self.clock = clock
        self.partition_lag = partition_lag
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        #: Told where to re-read from when the sweep finds the store rolled back.
        self.on_rollback = on_rollback
        self.lock = asyncio.Lock()
        #: Next offset to process per (topic, partition) (lag gauge, sweep limits).
        self.next_offsets: dict[tuple[str, int], int] = {}
        #: Operations being retried now: what -> (since, monotonic seconds; last error).
        #: /healthz reports the worker unhealthy when one has been failing for long.
        self.failing: dict[str, tuple[float, str]] = {}
        #: Newest event time processed per (topic, partition) (sweep limits).
        self.event_time: dict[tuple[str, int], int] = {}
        self.dead_letters = DeadLetters(
            sink, dlq_topic, metrics, self.lead_ids, self._retry, dlq_max_message_bytes
        )

    # ------------------------------------------------------------------ batches
    async def process(self, messages: Sequence[RawMessage]) -> BatchResult:
        """Apply one micro-batch (see the module docstring). Returns what it did."""
        started = time.perf_counter()
        async with self.lock:
            self.metrics.consumed.inc(len(messages))
            items: list[EventItem] = []
            item_partitions: list[tuple[str, int]] = []
            dead: list[tuple[bytes, bytes]] = []
            to_route: list[tuple[Scorable, RawMessage]] = []  # identity merges, step 1
            seen_at = self.clock()
            for message in messages:
                control = message.topic == self.control_topic
                routed = message.topic == self.identity_topic
                decode = parse_control_event if control else self.decode
                parsed = (parse_for_scoring if routed else decode)(
                    message.value,
                    message.key,
                    require_key=True,
                    # (the worker's own records: a lead_absorbed carries a whole state)
                    max_bytes=IDENTITY_RECORD_MAX_BYTES if routed else self.max_event_bytes,
                )
                if not isinstance(parsed, Rejected):
                    parsed = (
                        too_far_ahead(
                            parsed.occurred_at_ms, message.timestamp_ms, self.max_clock_skew_ms
                        )
                        or (None if control or routed else not_control(parsed, self.control_topic))
                        or identity_check(parsed, message.topic, self.identity_topic)
                        or parsed
                    )
                if isinstance(parsed, Rejected):
                    dead.append(self.dead_letters.record(message, parsed, seen_at))
                elif self.identity is not None and not routed:
                    to_route.append((parsed, message))
                else:
                    if (
                        self.mentioned is not None
                        and parsed.type != "lead_profile"
                        and parsed.type not in CONTROL_TYPES
                        and parsed.type not in IDENTITY_TYPES
                        and not self.mentioned(rule_event_of(parsed))
                    ):
                        self.metrics.unscored.labels(type=parsed.type).inc()
                    items.append((parsed, position_of(message)))
                    item_partitions.append((message.topic, message.partition))
            if dead:
                await self.dead_letters.send(dead)
            if to_route:
                await self._route(to_route, seen_at)
            result, failed = await self._apply(items)
            if failed:
                await self.dead_letters.send_failed(messages, failed, seen_at)
            if result.forwarded:
                await self._forward(result.forwarded, messages)
            await self._publish(result.crossings)
            self.metrics.applied.inc(result.applied)
            self.metrics.duplicates.inc(result.duplicates)
            for message in messages:
                self.next_offsets[(message.topic, message.partition)] = message.offset + 1
            for (event, _), tp in zip(items, item_partitions, strict=True):
                self.event_time[tp] = max(self.event_time.get(tp, 0), event.occurred_at_ms)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return result

    async def _apply(
        self, items: Sequence[EventItem]
    ) -> tuple[BatchResult, list[tuple[EventItem, str]]]:
        """Apply through the store, retrying transient failures. Any other failure is a
        poison event (a bug, corrupt state): the batch is re-applied lead by lead so that
        the healthy leads go through, and the failing leads' events are returned for the
        dead-letter topic. Nothing is dropped silently."""
        try:
            result = await self._retry(
                "apply batch to Redis", partial(self.store.apply_batch, items), poison_check=True
            )
            return result, []
        except StoreRolledBack:
            raise  # nothing written: the consumer re-reads from the store's marks
        except Exception as exc:
            if self.lead_ids.hashed:  # (exceptions may quote lead ids)
                log.error("batch failed (%s); isolating the failing lead(s)", type(exc).__name__)
            else:
                log.exception("batch failed (%s); isolating the failing lead(s)", exc)
        crossings: list[Crossing] = []
        applied = duplicates = 0
        forwarded: list[tuple[EventItem, str]] = []
        failed: list[tuple[EventItem, str]] = []
        for lead_items in group_by_lead(items).values():
            try:
                part = await self._retry(
                    "apply lead to Redis",
                    partial(self.store.apply_batch, lead_items),
                    poison_check=True,
                )
            except StoreRolledBack:
                raise
            except Exception as exc:
                first = lead_items[0][1]
                lead = self.lead_ids(lead_items[0][0].lead_id)
                if self.lead_ids.hashed:
                    name = type(exc).__name__
                    log.error("cannot apply lead %s (first at %s): %s", lead, first, name)
                else:
                    log.exception("cannot apply lead %s (first at %s)", lead, first)
                failed += [(item, f"{type(exc).__name__}: {exc}") for item in lead_items]
                continue
            crossings += part.crossings
            applied += part.applied
            duplicates += part.duplicates
            forwarded += part.forwarded
        return BatchResult(tuple(crossings), applied, duplicates, tuple(forwarded)), failed

    async def _route(
        self, events: Sequence[tuple[Scorable, RawMessage]], seen_at: datetime
    ) -> None:
        """Identity merges, step 1: route the input and control events to their canonical
        leads through the identity topic (acknowledged before the batch's offsets are
        committed); an erasure's aliases are deleted then. An event that cannot be routed
        (an alias chain too long) is dead-lettered; its neighbours go on."""
        assert self.identity is not None
        stage = self.identity
        routing = await self._retry(
            "route events (identity aliases)",
            lambda: stage.route_batch(events, self.store.is_transient),
        )
        if routing.failed:
            rejected = (
                Rejected("processing_error", f"lead_id: {why}") for _, why in routing.failed
            )
            dead = [
                self.dead_letters.record(message, reason, seen_at)
                for (message, _), reason in zip(routing.failed, rejected, strict=True)
            ]
            await self.dead_letters.send(dead)
        await self._to_identity_topic(routing.records)
        erased = routing.erased
        if erased:  # (the erasures' records are out: their aliases go)
            await self._retry("forget aliases", lambda: stage.forget(erased), poison_check=True)
        self.metrics.routed.inc(len(events) - len(routing.failed))
        self.metrics.linked.inc(routing.links)

    async def _forward(
        self, forwarded: Sequence[tuple[EventItem, str]], messages: Sequence[RawMessage]
    ) -> None:
        """Identity merges: a retired lead's late events, to its canonical lead now."""
        assert self.identity is not None
        stage = self.identity
        leads = {into for _, into in forwarded}
        targets = await self._retry("resolve forwards", lambda: stage.targets(leads))
        moved = [(item, targets.get(into, into)) for item, into in forwarded]
        await self._to_identity_topic(forwarded_records(moved, messages))
        self.metrics.forwarded.inc(len(moved))

    async def _to_identity_topic(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce to the identity topic (acked). A record the broker refuses for what it
        is (larger than the topic allows) is logged, counted and skipped."""
        assert self.identity_topic is not None

        def refused(record: tuple[bytes, bytes], exc: Exception) -> None:
            self.metrics.identity_unwritable.inc()
            log.error("identity topic record refused (%s, %d bytes): skipped", exc, len(record[1]))

        await send_or_skip(self._retry, self.sink, self.identity_topic, records, refused)

    # ------------------------------------------------------------------ outputs
    async def _publish(self, crossings: Sequence[Crossing]) -> None:
        """Produce crossings (acked), then drop them from the outbox."""
        if not crossings:
            return
        emitted_at = self.clock()
        absorbed = absorbed_records(crossings)  # (identity merges: to the identity topic)
        if absorbed:
            await self._to_identity_topic(absorbed)
        records = [
            (c.lead_id.encode(), c.to_record(emitted_at).model_dump_json().encode())
            for c in crossings
            if c.kind != ABSORBED
        ]
        await self._retry(
            "produce hot-lead events", lambda: self.sink.send_all(self.hot_topic, records)
        )
        for c in crossings:
            if c.kind == ABSORBED:
                continue
            if c.kind == "lead_erased":  # (the erased lead's id is not logged)
                self.metrics.erased.inc()
                log.info("lead_erased (trigger %s)", c.trigger_event_id)
                continue
            if c.kind == "lead_merged":
                self.metrics.merged.inc()
                into = self.lead_ids(c.merged_into or "")
                log.info("lead_merged %s into %s", self.lead_ids(c.lead_id), into)
                continue
            counter = self.metrics.hot if c.kind == "lead_became_hot" else self.metrics.cooled
            counter.inc()
            log.info(
                "%s %s score=%.2f at %s (trigger %s)",
                c.kind,
                self.lead_ids(c.lead_id),
                c.score,
                c.to_record(emitted_at).occurred_at.isoformat(),
                c.trigger_event_id or "decay",
            )
        await self._retry("confirm outbox", lambda: self.store.mark_delivered(crossings))

    async def prepare(self) -> None:
        """Get the store ready before the first batch or relay (it may convert an older
        storage format first: logged, with progress). Transient failures are retried."""
        converted = await self._retry("prepare the store", self.store.prepare)
        if converted:
            log.warning("store converted to the current format: %d lead(s)", converted)

    async def relay_outbox(self) -> int:
        """Produce crossings a crash left in the outbox. Returns how many."""
        total = 0
        async with self.lock:
            while True:
                pending = await self._retry("read outbox", self.store.undelivered)
                if not pending:
                    return total
                log.warning(
                    "relaying %d undelivered hot-lead event(s) from the outbox", len(pending)
                )
                await self._publish(pending)
                total += len(pending)

    # ------------------------------------------------------------------ cooling sweep
    async def sweep(self) -> int:
        """Emit ``lead_cooled`` for hot leads that decayed below ``cool`` by now (wall
        clock), plus anything left in the outbox. Returns how many were emitted."""
        self.dead_letters.log.flush()
        async with self.lock:
            behind = await self._retry("check the store's marks", self.store.verify_applied)
        if behind and self.on_rollback is not None:
            self.on_rollback(behind)
        relayed = await self.relay_outbox()
        now_ms = datetime_to_ms(self.clock())
        async with self.lock:
            limit = None
            if self.partition_lag is not None:
                lags = await self.partition_lag()
                if lags is None:
                    # Which partitions are ours is not known now (the consumer has not
                    # polled for longer than a session: paused, or stuck in retries, and
                    # maybe no longer in the group): cooling them is not our call.
                    log.info("cooling sweep skipped: partition ownership not confirmed")
                    return relayed
                limit = partial(sweep_limit, lags, now_ms, self.event_time, self.control_topic)
            result = await self._retry("cooling sweep", lambda: self.store.cool_due(now_ms, limit))
            await self._publish(result.crossings)
        return relayed + len(result.crossings)

    # ------------------------------------------------------------------ retries
    async def _retry(
        self,
        what: str,
        operation: Callable[[], Awaitable[T]],
        *,
        poison_check: bool = False,
        permanent: Callable[[Exception], bool] | None = None,
    ) -> T:
        """Run ``operation`` until it succeeds, backing off exponentially (logged, counted)
        for as long as failures last: dropping the batch would lose events. With
        ``poison_check``, only failures the store calls transient are retried and anything
        else is raised to the caller (a poison event, not an outage)."""
        delay = self.retry_initial
        attempt = 0
        while True:
            try:
                result = await operation()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if poison_check and not self.store.is_transient(exc):
                    raise
                if permanent is not None and permanent(exc):
                    raise  # it cannot pass: the caller decides
                if attempt == 0:
                    self.failing[what] = (time.monotonic(), "")
                error = self.lead_ids.error(exc)  # (hashed: no text that may quote a lead)
                self.failing[what] = (self.failing[what][0], error)
                attempt += 1
                self.metrics.retries.labels(operation=what).inc()
                if _is_credentials_error(exc):
                    log.error(
                        "%s: refused our credentials (%s); check the passwords and ACLs in "
                        "the settings; retrying until they are fixed (/healthz says 503)",
                        what,
                        exc,
                    )
                log.error(
                    "%s failed (attempt %d): %s; retrying in %.1fs", what, attempt, error, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            else:
                self.failing.pop(what, None)
                return result


def _is_credentials_error(error: Exception) -> bool:
    """A refusal that passes only once the configuration is fixed (wrong password, ACL):
    the worker waits (it must not skip data), and says why in plain words."""
    return type(error).__name__.endswith(
        ("AuthenticationError", "AuthorizationError", "AuthorizationFailedError")
    )
