"""Replay: run stored event logs through the live worker's scoring code, offline.

``leadscore replay`` (``streams/replay_cli.py``) is a thin layer over this module:

1. **read** (:func:`read_events`): JSONL files (``.gz`` too) line by line, or a Kafka topic
   range (:class:`KafkaSource`); every line/message goes through
   :func:`schemas.validation.parse_event` exactly like the worker's, and bad ones are
   counted and listed with their line number (or partition/offset) and reason;
2. **apply** (:func:`replay_events`): valid events, in read order, in batches through
   :meth:`scoring.store.MemoryStore.apply_batch_sync` (the engine code of the live
   worker), one store per rules file; then ``cool_due_sync(end)`` emits the coolings that
   decay caused by the end time;
3. **write** (:func:`write_outputs`): ``hot.jsonl``, ``scores.csv``, ``summary.json`` and
   ``report.html`` (+ the same for the ``--compare`` rules, and the leads whose status
   differs), with backtest metrics when conversions are given (:mod:`scoring.backtest`).

Definitions (docs/replay.md has the long version):

* **end time**: ``--at`` if given (events that occurred later are ignored and counted),
  else the latest ``occurred_at`` replayed;
* **cut-off** (ranking metrics): the scores are taken when the replay first reaches an
  event later than the cut-off (default: the end time): what the live worker knew then;
* ``hot.jsonl`` holds the records the live worker would have published, ordered by
  ``occurred_at`` then lead (each lead's records keep their order): the live order
  depends on its batching, the set does not. ``emitted_at`` is the replay's wall clock.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import gzip
import io
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import click
import leadscore_core as _core
import orjson

from schemas.events import EVENT_MODELS, LeadEvent, LeadProfile
from schemas.times import datetime_to_ms, format_duration_ms, ms_to_datetime
from schemas.validation import MAX_EVENT_BYTES, Rejected, parse_event
from scoring import backtest
from scoring.crossings import Crossing, make_crossing
from scoring.profile import fit_grade, lead_fit, merge_profile_values, profile_values
from scoring.rules import RuleSet
from scoring.state import LeadState, ProfileEntry
from scoring.state_machine import explain, match_values, matched_rules, score_at
from scoring.store import MemoryStore

#: Valid events handed to the store per ``apply_batch_sync`` call (the worker's default
#: micro-batch is 2000; results do not depend on the batch size).
BATCH_SIZE = 5000
#: Bad lines listed one by one in ``summary.json`` (all are counted).
MAX_BAD_LISTED = 100
#: Bytes read from a file at a time.
READ_CHUNK_BYTES = 4 << 20
#: Top reasons written per lead in ``scores.csv``.
SCORE_REASONS = 3
#: Distinct profiles whose fit a replay remembers.
FIT_CACHE_SIZE = 1 << 16
#: Event types in the native core's order.
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_MODELS)
#: Later than any event time (ms): "no limit".
NEVER = 1 << 62


class ReplayError(Exception):
    """A problem the user must fix (unreadable source, bad conversions file...)."""


# --------------------------------------------------------------------------- times


def parse_time_ms(text: str, what: str = "time") -> int:
    """RFC 3339 text (``2026-11-23T10:00:00Z``, an offset is required) -> ms since epoch."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReplayError(
            f"{what}: {text!r} is not an RFC 3339 time like 2026-11-23T10:00:00Z"
        ) from None
    if value.tzinfo is None:
        raise ReplayError(f"{what}: {text!r} has no timezone offset; add Z or +HH:MM")
    return datetime_to_ms(value)


def format_ms(ms: int | None) -> str | None:
    """ms since epoch -> ``2026-11-23T10:00:00Z`` (milliseconds only when not zero)."""
    if ms is None:
        return None
    value = ms_to_datetime(ms)
    spec = "milliseconds" if ms % 1000 else "seconds"
    return value.isoformat(timespec=spec).replace("+00:00", "Z")


# --------------------------------------------------------------------------- sources


@dataclass(slots=True)
class Chunk:
    """A run of raw records from one source, in order."""

    values: list[bytes | None]
    #: Kafka message keys (checked against ``lead_id`` like the worker does); None for files.
    keys: list[bytes | None] | None = None
    #: Files: line number of ``values[0]`` (1-based; blank lines keep their number).
    first_line: int = 1
    #: Kafka: ``(partition, offset)`` of each value.
    positions: list[tuple[int, int]] | None = None
    #: Progress units (file bytes / Kafka messages) this chunk accounts for.
    progress: int = 0


class Source(Protocol):
    """Where events are read from."""

    #: How bad records of this source are named (``events.jsonl``, ``kafka:lead-events``).
    name: str

    def size(self) -> int:
        """Total progress units (bytes or messages), for the progress bar."""
        ...

    def chunks(self) -> Iterator[Chunk]:
        """The records, in order."""
        ...


class FileSource:
    """A JSONL file, gzip-compressed when its name ends in ``.gz``.

    Lines are cut like ``leadscore produce`` sends them (trailing ``\\r``/``\\n`` removed);
    whitespace-only lines are skipped (produce skips them too), every other line is one
    record, with its 1-based line number.
    """

    def __init__(self, path: Path, chunk_bytes: int = READ_CHUNK_BYTES) -> None:
        self.path = path
        self.name = str(path)
        #: Bytes read at a time (results never depend on it).
        self.chunk_bytes = chunk_bytes

    def size(self) -> int:
        return self.path.stat().st_size

    def chunks(self) -> Iterator[Chunk]:
        try:
            raw = self.path.open("rb")
        except OSError as exc:
            raise ReplayError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        with raw:
            stream: IO[bytes] | gzip.GzipFile = raw
            if self.path.suffix == ".gz":
                stream = gzip.GzipFile(fileobj=raw)
            line_no = 1
            rest = b""
            done = 0
            while True:
                try:
                    data = stream.read(self.chunk_bytes)
                except (OSError, EOFError) as exc:  # a corrupt or truncated .gz
                    raise ReplayError(f"{self.path}: cannot read: {exc}") from None
                if not data:
                    break
                lines = (rest + data).split(b"\n")
                rest = lines.pop()  # an incomplete last line waits for the next read
                position = raw.tell()
                yield Chunk(list(lines), first_line=line_no, progress=position - done)
                done = position
                line_no += len(lines)
            if rest:
                yield Chunk([rest], first_line=line_no)


class KafkaSource:
    """A range of a Kafka topic: every partition from the first message written at or
    after ``from_ms`` (default: the oldest) up to, excluding, the first written at or after
    ``to_ms`` (default: the end when the replay starts). Times are the messages' Kafka
    timestamps (when they were produced), not ``occurred_at``.

    Reads with explicit offsets (``offsets_for_times`` + ``assign()``): it never joins a
    consumer group and never commits, so the live worker's group is not disturbed.
    """

    def __init__(
        self,
        topic: str,
        config: Mapping[str, Any],
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        timeout_s: float = 30.0,
        batch: int = 10_000,
    ) -> None:
        self.topic = topic
        self.name = f"kafka:{topic}"
        self.from_ms = from_ms
        self.to_ms = to_ms
        self.timeout_s = timeout_s
        self.batch = batch
        self.config = {
            **config,
            # A throw-away group id: assign() never joins it and nothing is committed.
            "group.id": f"leadscore-replay-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
        self._consumer: Any = None
        self._ranges: list[tuple[int, int, int]] | None = None

    def _open(self) -> list[tuple[int, int, int]]:
        """Connect and resolve ``(partition, start, end)`` offsets (once)."""
        if self._ranges is not None:
            return self._ranges
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(self.config)
        self._consumer = consumer
        try:
            meta = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(self.topic)
            if meta is None or meta.error is not None:
                reason = meta.error if meta is not None else "not found"
                raise ReplayError(f"{self.name}: {reason}")
            ranges = []
            for partition in sorted(meta.partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=self.timeout_s
                )
                start = self._offset_at(consumer, partition, self.from_ms, low, high)
                end = self._offset_at(consumer, partition, self.to_ms, high, high)
                ranges.append((partition, start, max(start, end)))
        except KafkaException as exc:
            raise ReplayError(f"{self.name}: {exc}") from None
        self._ranges = ranges
        return ranges

    def _offset_at(
        self, consumer: Any, partition: int, at_ms: int | None, default: int, high: int
    ) -> int:
        """First offset of ``partition`` written at or after ``at_ms`` (``high`` when none;
        ``default`` when no time is given)."""
        if at_ms is None:
            return default
        from confluent_kafka import TopicPartition

        found = consumer.offsets_for_times(
            [TopicPartition(self.topic, partition, at_ms)], timeout=self.timeout_s
        )[0]
        return int(found.offset) if found.offset >= 0 else high

    def ranges(self) -> list[tuple[int, int, int]]:
        """``(partition, start offset, end offset)`` per partition (end excluded)."""
        return list(self._open())

    def size(self) -> int:
        return sum(end - start for _, start, end in self._open())

    def chunks(self) -> Iterator[Chunk]:
        from confluent_kafka import KafkaError, TopicPartition

        ranges = self._open()
        consumer = self._consumer
        remaining = {p: end for p, start, end in ranges if start < end}
        try:
            consumer.assign(
                [TopicPartition(self.topic, p, start) for p, start, end in ranges if start < end]
            )
            idle_since = time.monotonic()
            while remaining:
                messages = consumer.consume(num_messages=self.batch, timeout=0.5)
                values: list[bytes | None] = []
                keys: list[bytes | None] = []
                positions: list[tuple[int, int]] = []
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise ReplayError(f"{self.name}: {error}")
                    partition, offset = message.partition(), message.offset()
                    end = remaining.get(partition)
                    if end is None or offset >= end:
                        continue  # past the range (or a finished partition)
                    values.append(message.value())
                    keys.append(message.key())
                    positions.append((partition, offset))
                # A partition is done once its position reaches the end offset (this also
                # covers offsets without a message: transaction markers, compaction).
                for tp in consumer.position([TopicPartition(self.topic, p) for p in remaining]):
                    if tp.offset >= remaining[tp.partition]:
                        del remaining[tp.partition]
                if values:
                    idle_since = time.monotonic()
                    yield Chunk(values, keys=keys, positions=positions, progress=len(values))
                elif remaining and time.monotonic() - idle_since > self.timeout_s:
                    stuck = ", ".join(f"partition {p} (end {e})" for p, e in remaining.items())
                    raise ReplayError(
                        f"{self.name}: no message for {self.timeout_s:.0f}s before the end of "
                        f"the range: {stuck}"
                    )
        finally:
            consumer.close()


def open_source(
    spec: str,
    *,
    from_ms: int | None = None,
    to_ms: int | None = None,
    kafka_config: Callable[[], Mapping[str, Any]] | None = None,
) -> Source:
    """``kafka:TOPIC`` -> :class:`KafkaSource` (``kafka_config`` gives the client
    configuration), anything else -> :class:`FileSource`."""
    if spec.startswith("kafka:"):
        topic = spec.removeprefix("kafka:")
        if not topic:
            raise ReplayError(f"{spec!r}: expected kafka:TOPIC")
        if kafka_config is None:
            raise ReplayError(f"{spec}: no Kafka configuration")
        return KafkaSource(topic, kafka_config(), from_ms=from_ms, to_ms=to_ms)
    path = Path(spec)
    if not path.is_file():
        raise ReplayError(f"{spec}: no such file (for a Kafka topic write kafka:TOPIC)")
    return FileSource(path)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A rejected line or message, like a dead letter."""

    source: str
    kind: str
    error: str
    line: int | None = None
    partition: int | None = None
    offset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        where: dict[str, Any] = {"source": self.source}
        if self.line is not None:
            where["line"] = self.line
        else:
            where.update(partition=self.partition, offset=self.offset)
        return {**where, "kind": self.kind, "error": self.error}


@dataclass(slots=True)
class ReadStats:
    """What reading found (all counts; bad records listed up to ``max_listed``)."""

    records: int = 0
    blank_lines: int = 0
    valid: int = 0
    bad: int = 0
    bad_by_kind: Counter[str] = field(default_factory=Counter)
    bad_records: list[BadRecord] = field(default_factory=list)
    max_listed: int = MAX_BAD_LISTED
    #: Seconds spent reading and validating (wall clock).
    seconds: float = 0.0

    def reject(self, record: BadRecord) -> None:
        self.bad += 1
        self.bad_by_kind[record.kind] += 1
        if len(self.bad_records) < self.max_listed:
            self.bad_records.append(record)


def read_events(
    sources: Sequence[Source],
    stats: ReadStats,
    *,
    max_event_bytes: int = MAX_EVENT_BYTES,
    progress: bool = False,
) -> Iterator[list[LeadEvent]]:
    """Validate every record of ``sources`` (in order) and yield the valid events in
    chunks. Bad records go to ``stats``; reading never stops for them.

    Files are validated like un-keyed messages, Kafka messages exactly like the worker
    (the key must be the event's ``lead_id``). With ``progress``, a bar per source is
    drawn on stderr.
    """
    for source, chunk in _chunks(sources, progress):
        started = time.perf_counter()
        events = _validate_chunk(source.name, chunk, stats, max_event_bytes)
        stats.seconds += time.perf_counter() - started
        yield events


def _chunks(sources: Sequence[Source], progress: bool) -> Iterator[tuple[Source, Chunk]]:
    """Every chunk of every source, in order; with ``progress``, a bar per source on
    stderr, advanced once the caller is done with a chunk."""
    for source in sources:
        with contextlib.ExitStack() as stack:
            update: Callable[[int], None] | None = None
            if progress:
                bar = stack.enter_context(
                    click.progressbar(
                        length=source.size(),
                        label=source.name,
                        file=click.get_text_stream("stderr"),
                    )
                )
                update = bar.update
            for chunk in source.chunks():
                yield source, chunk
                if update is not None:
                    update(chunk.progress)


def _validate_chunk(
    name: str, chunk: Chunk, stats: ReadStats, max_event_bytes: int
) -> list[LeadEvent]:
    """The hot loop of reading: one ``parse_event`` per record."""
    stats.records += len(chunk.values)
    events = [
        event
        for i in range(len(chunk.values))
        if (event := _validate_record(name, chunk, i, stats, max_event_bytes)) is not None
    ]
    stats.valid += len(events)
    return events


def _validate_record(
    name: str, chunk: Chunk, index: int, stats: ReadStats, max_event_bytes: int
) -> LeadEvent | None:
    """Record ``index`` of ``chunk`` as an event, or None (a blank line or a bad record,
    counted in ``stats``). Files: trailing ``\r`` removed and blank lines skipped, as
    ``leadscore produce`` does; Kafka: the worker's exact check, key included."""
    raw = chunk.values[index]
    if chunk.keys is None:
        assert raw is not None
        line = raw.rstrip(b"\r")
        if not line.strip():
            stats.blank_lines += 1
            return None
        result = parse_event(line, max_bytes=max_event_bytes)
        if isinstance(result, Rejected):
            where = {"line": chunk.first_line + index}
    else:
        result = parse_event(raw, chunk.keys[index], require_key=True, max_bytes=max_event_bytes)
        if isinstance(result, Rejected):
            assert chunk.positions is not None
            partition, offset = chunk.positions[index]
            where = {"partition": partition, "offset": offset}
    if isinstance(result, Rejected):
        stats.reject(BadRecord(name, result.kind, result.error, **where))
        return None
    return result


# --------------------------------------------------------------------------- applying


#: A lead as the outputs need it: (lead id, score (the sum of its contributions, largest
#: first), its first ``top`` contributions as (rule id, points), fit grade or None, hot,
#: events applied, clock ms).
LeadRow = tuple[str, float, list[tuple[str, float]], str | None, bool, int, int]


class LeadView(Protocol):
    """Lead states frozen at a moment (the end of a replay, or its cut-off)."""

    def __len__(self) -> int: ...

    def scores(self, at_ms: int) -> dict[str, float]:
        """Lead id -> score at ``at_ms``."""
        ...

    def hot(self) -> dict[str, bool]:
        """Lead id -> hot."""
        ...

    def rows(self, at_ms: int, top: int) -> list[LeadRow]:
        """Every lead at ``at_ms`` (any order)."""
        ...


class StatesView:
    """:class:`LeadView` over :class:`LeadState` objects (a :class:`MemoryStore`)."""

    def __init__(self, states: Mapping[str, LeadState], rules: RuleSet) -> None:
        self.states = states
        self.rules = rules

    def __len__(self) -> int:
        return len(self.states)

    def scores(self, at_ms: int) -> dict[str, float]:
        return {lead_id: score_at(s, self.rules, at_ms) for lead_id, s in self.states.items()}

    def hot(self) -> dict[str, bool]:
        return {lead_id: s.hot for lead_id, s in self.states.items()}

    def rows(self, at_ms: int, top: int) -> list[LeadRow]:
        rules = self.rules
        rows: list[LeadRow] = []
        for lead_id, s in self.states.items():
            parts = explain(s, rules, at_ms)
            rows.append(
                (
                    lead_id,
                    sum(p.points for p in parts),
                    [(p.rule_id, p.points) for p in parts[:top]],
                    fit_grade(s, rules),
                    s.hot,
                    s.events_applied,
                    s.clock_ms,
                )
            )
        return rows


class NativeView:
    """:class:`LeadView` over a snapshot of the native lead table (the fast replay)."""

    def __init__(self, snapshot: _core.LeadSnapshot, rules: RuleSet) -> None:
        self.snapshot = snapshot
        self.rules = rules

    def __len__(self) -> int:
        return len(self.snapshot)

    def scores(self, at_ms: int) -> dict[str, float]:
        return dict(self.snapshot.scores(at_ms))

    def hot(self) -> dict[str, bool]:
        return dict(self.snapshot.hot())

    def rows(self, at_ms: int, top: int) -> list[LeadRow]:
        ids = self.rules.rule_ids
        grade = self.rules.grade if self.rules.has_fit else None
        return [
            (
                lead_id,
                score,
                [(ids[i], points) for i, points in parts],
                None if grade is None else grade(fit),
                hot,
                applied,
                clock,
            )
            for lead_id, score, parts, fit, hot, applied, clock in self.snapshot.rows(at_ms, top)
        ]


@dataclass(slots=True)
class RuleRun:
    """One rules file's replay: every crossing, and its lead states at the end and at the
    cut-off."""

    rules: RuleSet
    #: In processing order (batches, then the end-time coolings).
    crossings: list[Crossing] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    #: ``lead_cooled`` emitted at the end time.
    cooled_at_end: int = 0
    #: Lead states at the end.
    final: LeadView | None = None
    #: Lead states when the replay reached the cut-off (None: take the final states).
    snapshot: LeadView | None = None

    @property
    def leads(self) -> LeadView:
        assert self.final is not None, "the replay has not finished"
        return self.final

    def sorted_crossings(self) -> list[Crossing]:
        """Crossings by ``occurred_at`` then lead; a lead's own order is kept (stable)."""
        return sorted(self.crossings, key=lambda c: (c.occurred_at_ms, c.lead_id))

    def scores_at(self, at_ms: int, view: LeadView | None = None) -> dict[str, float]:
        """Every lead's score at ``at_ms`` (from ``view``, default: the final states)."""
        return (self.leads if view is None else view).scores(at_ms)


@dataclass(slots=True)
class Replay:
    """Result of :func:`replay_events`."""

    runs: list[RuleRun]
    #: Earliest / latest ``occurred_at`` of the replayed events (None: no event).
    first_event_ms: int | None
    last_event_ms: int | None
    #: ``--at`` (or None) and the end time used (``--at`` or the latest event).
    at_ms: int | None
    end_ms: int | None
    cutoff_ms: int | None
    #: Valid events ignored because they occurred after ``--at``.
    after_at: int = 0
    #: Seconds spent in the stores (wall clock).
    apply_seconds: float = 0.0


@dataclass(slots=True)
class _Span:
    """What both replay loops track while applying: the event-time span, events after
    ``--at``, time spent applying."""

    first: int = NEVER
    last: int = -NEVER
    after_at: int = 0
    apply_seconds: float = 0.0

    def saw(self, low: int, high: int) -> None:
        self.first, self.last = min(self.first, low), max(self.last, high)

    def end_ms(self, at_ms: int | None) -> int | None:
        """``--at``, else the latest event time (None: no event)."""
        return at_ms if at_ms is not None else (self.last if self.last >= 0 else None)

    def replay(
        self, runs: list[RuleRun], at_ms: int | None, end_ms: int | None, cutoff_ms: int | None
    ) -> Replay:
        return Replay(
            runs=runs,
            first_event_ms=self.first if self.first != NEVER else None,
            last_event_ms=self.last if self.last >= 0 else None,
            at_ms=at_ms,
            end_ms=end_ms,
            cutoff_ms=cutoff_ms,
            after_at=self.after_at,
            apply_seconds=self.apply_seconds,
        )


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector.

    A replay allocates millions of small objects that form no reference cycles (events,
    immutable lead states); reference counting frees them all. The cyclic collector would
    still re-scan the growing set of live lead states again and again: about 40% of the
    replay's time (measured on 100k events). Re-enabled on exit.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def replay_events(
    batches: Iterable[Sequence[LeadEvent]],
    rulesets: Sequence[RuleSet],
    *,
    at_ms: int | None = None,
    cutoff_ms: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> Replay:
    """Apply events in order to one :class:`MemoryStore` per rule set, then emit the
    coolings due at the end time (``at_ms``, else the latest event time).

    * events with ``occurred_at > at_ms`` are skipped (and counted);
    * with ``cutoff_ms``, each store's states are kept (``RuleRun.snapshot``) just before
      the first event later than the cut-off is applied.
    """
    runs = [RuleRun(rules) for rules in rulesets]
    stores = [MemoryStore(rules) for rules in rulesets]
    limit = NEVER if at_ms is None else at_ms
    snapshot_after = NEVER if cutoff_ms is None else cutoff_ms
    span = _Span()
    pending: list[tuple[LeadEvent, None]] = []

    def flush() -> None:
        """Apply the pending events, ``batch_size`` at a time, to every store."""
        nonlocal pending
        started = time.perf_counter()
        for start in range(0, len(pending), batch_size):
            items = pending[start : start + batch_size]
            for run, store in zip(runs, stores, strict=True):
                result = store.apply_batch_sync(items)
                run.crossings.extend(result.crossings)
                run.applied += result.applied
                run.duplicates += result.duplicates
        span.apply_seconds += time.perf_counter() - started
        pending = []

    with gc_paused():
        for batch in batches:
            if not batch:
                continue
            times = [event.occurred_at_ms for event in batch]
            low, high = min(times), max(times)
            if high <= limit and high <= snapshot_after:
                # The common case: nothing to skip, no snapshot to take in this chunk.
                pending.extend(zip(batch, itertools.repeat(None)))
                span.saw(low, high)
            else:
                for event, occurred in zip(batch, times, strict=True):
                    if occurred > limit:
                        span.after_at += 1
                        continue
                    if occurred > snapshot_after:
                        flush()
                        for run, store in zip(runs, stores, strict=True):
                            run.snapshot = StatesView(dict(store.states), run.rules)
                        snapshot_after = NEVER
                    span.saw(occurred, occurred)
                    pending.append((event, None))
            if len(pending) >= batch_size:
                flush()
        flush()
        end_ms = span.end_ms(at_ms)
        if end_ms is not None:
            for run, store in zip(runs, stores, strict=True):
                cooled = store.cool_due_sync(end_ms).crossings
                run.crossings.extend(cooled)
                run.cooled_at_end = len(cooled)
        for run, store in zip(runs, stores, strict=True):
            run.final = StatesView(store.states, run.rules)
    return span.replay(runs, at_ms, end_ms, cutoff_ms)


# --------------------------------------------------------------------------- the fast path


def rule_fields(rulesets: Sequence[RuleSet]) -> list[list[str]]:
    """Per event type (in :data:`EVENT_TYPES` order): the fields any rule of any of the
    rule sets tests. Events that agree on them match the same rules."""
    fields: list[set[str]] = [set() for _ in EVENT_TYPES]
    for rules in rulesets:
        for rule in rules.rules:
            assert rule.event is not None
            fields[EVENT_TYPES.index(rule.event)].update(c.field for c in rule.conditions)
    return [sorted(names) for names in fields]


class _FastRun:
    """One rule set's native lead table, with the Python side of it: profiles."""

    def __init__(self, run: RuleRun, slot: int) -> None:
        self.run = run
        self.rules = run.rules
        self.profiles: dict[str, Mapping[str, ProfileEntry]] = {}
        #: Fit by profile values: many leads share firmographics, and fit rules are slow.
        self.fits: dict[tuple[tuple[str, object], ...], tuple[float, bool]] = {}
        self.table = _core.LeadTable(run.rules.kernel, self.on_profile, slot)

    def on_profile(
        self, lead_id: str, event_id: str, occurred_ms: int, values: tuple[object, ...]
    ) -> tuple[float, bool]:
        """A profile event was applied: merge it, return the lead's new fit."""
        profile = merge_profile_values(
            self.profiles.get(lead_id, {}), occurred_ms, event_id, values
        )
        self.profiles[lead_id] = profile
        key = tuple([(name, entry[2]) for name, entry in profile.items()])
        fit = self.fits.get(key)
        if fit is None:
            if len(self.fits) >= FIT_CACHE_SIZE:
                self.fits.clear()
            fit = self.fits[key] = lead_fit(profile, self.rules)
        return fit

    def apply(self, batch: _core.Batch, start: int, stop: int, limit_ms: int) -> None:
        applied, duplicates, raw = self.table.apply(batch, start, stop, limit_ms)
        rules = self.rules
        self.run.crossings.extend(make_crossing(c, rules, lead, trig) for lead, trig, c in raw)
        self.run.applied += applied
        self.run.duplicates += duplicates


def replay_sources(
    sources: Sequence[Source],
    rulesets: Sequence[RuleSet],
    stats: ReadStats,
    *,
    at_ms: int | None = None,
    cutoff_ms: int | None = None,
    max_event_bytes: int = MAX_EVENT_BYTES,
    progress: bool = False,
) -> Replay:
    """:func:`read_events` + :func:`replay_events` in one pass, on the native core: the
    common records are parsed in Rust, rule matches are computed once per distinct
    combination of the fields rules look at (in Python, by :mod:`scoring.rules`), and lead
    states stay in a native table; every event still runs the engine's ``Lead::apply``.
    Records the fast path declines are validated by :func:`parse_event`, as everywhere.
    Same results as ``replay_events(read_events(...))``, bit for bit."""
    fields = rule_fields(rulesets)
    reader = _core.Reader(fields, max_event_bytes)
    runs = [RuleRun(rules) for rules in rulesets]
    fast = [_FastRun(run, slot) for slot, run in enumerate(runs)]
    limit = NEVER if at_ms is None else at_ms
    snapshot_after = NEVER if cutoff_ms is None else cutoff_ms
    span = _Span()
    with gc_paused():
        for source, chunk in _chunks(sources, progress):
            started = time.perf_counter()
            batch = _parse_chunk(source.name, chunk, reader, fields, fast, stats, max_event_bytes)
            stats.seconds += time.perf_counter() - started
            started = time.perf_counter()
            times, after = batch.time_range(limit)
            span.after_at += after
            if times is not None:
                span.saw(*times)
            start = 0
            if snapshot_after != NEVER:
                split = batch.first_after(0, snapshot_after, limit)
                if split is not None:
                    for f in fast:
                        f.apply(batch, 0, split, limit)
                        f.run.snapshot = NativeView(f.table.snapshot(), f.rules)
                    snapshot_after = NEVER
                    start = split
            for f in fast:
                f.apply(batch, start, len(batch), limit)
            span.apply_seconds += time.perf_counter() - started
        started = time.perf_counter()
        end_ms = span.end_ms(at_ms)
        for f in fast:
            if end_ms is not None:
                cooled = [
                    make_crossing(c, f.rules, lead, None) for lead, _, c in f.table.cool_due(end_ms)
                ]
                cooled.sort(key=lambda c: (c.occurred_at_ms, c.lead_id))
                f.run.crossings.extend(cooled)
                f.run.cooled_at_end = len(cooled)
            f.run.final = NativeView(f.table.snapshot(), f.rules)
        span.apply_seconds += time.perf_counter() - started
    return span.replay(runs, at_ms, end_ms, cutoff_ms)


def _parse_chunk(
    name: str,
    chunk: Chunk,
    reader: _core.Reader,
    fields: Sequence[Sequence[str]],
    fast: Sequence[_FastRun],
    stats: ReadStats,
    max_bytes: int,
) -> _core.Batch:
    """Parse a chunk natively; validate what the fast path declined like
    :func:`_validate_chunk`; resolve new signatures in every table."""
    values = chunk.values
    keys = chunk.keys
    batch = reader.parse(values, keys)
    stats.records += len(values)
    valid = len(values)
    for signature, event_type, field_values in batch.new_signatures():
        get = dict(zip(fields[EVENT_TYPES.index(event_type)], field_values, strict=True)).get
        for f in fast:
            f.table.resolve(signature, match_values(event_type, get, f.rules))
    for i in batch.slow():
        result = _validate_record(name, chunk, i, stats, max_bytes)
        if result is None:
            valid -= 1
            continue
        batch.set_event(
            i,
            result.event_id,
            result.lead_id,
            result.occurred_at_ms,
            profile_values(result) if isinstance(result, LeadProfile) else None,
            [matched_rules(result, f.rules) for f in fast],
        )
    stats.valid += valid
    return batch


# --------------------------------------------------------------------------- conversions


def load_conversions(path: Path) -> list[tuple[str, int]]:
    """``(lead_id, converted_at_ms)`` rows from a CSV file (header with ``lead_id`` and
    ``converted_at``; other columns ignored) or a JSONL file (objects with those keys).
    ``.gz`` is fine. A bad row stops with its line number: the ground truth must be right."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReplayError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if text.lstrip().startswith("{"):
        return _conversions_jsonl(path, text)
    return _conversions_csv(path, text)


def _conversion_row(path: Path, line: int, lead_id: Any, converted_at: Any) -> tuple[str, int]:
    if not isinstance(lead_id, str) or not lead_id:
        raise ReplayError(f"{path}: line {line}: lead_id: expected a non-empty string")
    if not isinstance(converted_at, str):
        raise ReplayError(f"{path}: line {line}: converted_at: expected an RFC 3339 string")
    try:
        return lead_id, parse_time_ms(converted_at, "converted_at")
    except ReplayError as exc:
        raise ReplayError(f"{path}: line {line}: {exc}") from None


def _conversions_csv(path: Path, text: str) -> list[tuple[str, int]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"lead_id", "converted_at"} - set(reader.fieldnames or ())
    if missing:
        raise ReplayError(
            f"{path}: line 1: the CSV header needs lead_id and converted_at "
            f"(missing: {', '.join(sorted(missing))})"
        )
    return [
        _conversion_row(path, reader.line_num, row["lead_id"], row["converted_at"])
        for row in reader
    ]


def _conversions_jsonl(path: Path, text: str) -> list[tuple[str, int]]:
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ReplayError(f"{path}: line {line_no}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ReplayError(f"{path}: line {line_no}: expected a JSON object")
        rows.append(_conversion_row(path, line_no, data.get("lead_id"), data.get("converted_at")))
    return rows


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class RunOutputs:
    """Where one rule set's files go, and its label in the summary and the report."""

    label: str
    rules_file: str
    directory: Path


def write_hot(run: RuleRun, path: Path, emitted_at: datetime) -> None:
    """``hot.jsonl``: every crossing exactly as the worker publishes it."""
    with path.open("w", encoding="utf-8") as handle:
        for crossing in run.sorted_crossings():
            handle.write(crossing.to_record(emitted_at).model_dump_json())
            handle.write("\n")


def lead_rows(run: RuleRun, at_ms: int) -> list[dict[str, Any]]:
    """Per lead at ``at_ms``: score, grade, hot, top reasons; highest score first."""
    rows: list[dict[str, Any]] = []
    for lead_id, score, parts, grade, hot, applied, clock in run.leads.rows(at_ms, SCORE_REASONS):
        rows.append(
            {
                "lead_id": lead_id,
                "score": score,
                "grade": grade or "",
                "hot": hot,
                "events": applied,
                "last_event_at": format_ms(clock),
                "top_reasons": "; ".join(f"{rule_id} {points:+.2f}" for rule_id, points in parts),
            }
        )
    rows.sort(key=lambda r: (-r["score"], r["lead_id"]))
    return rows


def write_scores(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """``scores.csv`` from :func:`lead_rows` (scores rounded to 4 decimals)."""
    fields = ["lead_id", "score", "grade", "hot", "events", "last_event_at", "top_reasons"]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        writer.writerows(
            [
                row["lead_id"],
                f"{row['score']:.4f}",
                row["grade"],
                "true" if row["hot"] else "false",
                row["events"],
                row["last_event_at"],
                row["top_reasons"],
            ]
            for row in rows
        )


def _duration(ms: float | None) -> str | None:
    """``3d 4h``, ``12m 5s``: the two largest units of a duration."""
    if ms is None:
        return None
    seconds = round(ms / 1000)
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def metrics_dict(result: backtest.Backtest) -> dict[str, Any]:
    """JSON form of one rule set's backtest."""
    hot, ranking = result.hot, result.ranking
    return {
        "window": format_duration_ms(result.window_ms),
        "period": {
            "start": format_ms(result.period.start_ms),
            "end": format_ms(result.period.end_ms),
        },
        "hot_events": hot.hot_events,
        "hot_events_converted": hot.hot_events_converted,
        "precision": hot.precision,
        "hot_events_window_truncated": hot.hot_events_window_truncated,
        "conversions": hot.conversions,
        "conversions_caught": hot.conversions_caught,
        "recall": hot.recall,
        "conversions_lookback_truncated": hot.conversions_lookback_truncated,
        "median_lead_time_s": None
        if hot.median_lead_time_ms is None
        else hot.median_lead_time_ms / 1000,
        "median_lead_time": _duration(hot.median_lead_time_ms),
        "ranking": {
            "cutoff": format_ms(ranking.cutoff_ms),
            "outcome_end": format_ms(ranking.outcome_end_ms),
            "leads": ranking.leads,
            "converted": ranking.converted,
            "base_rate": ranking.base_rate,
            "converted_unknown_at_cutoff": ranking.converted_unknown_at_cutoff,
            "auc": ranking.auc,
            "deciles": [
                {
                    "decile": d.decile,
                    "leads": d.leads,
                    "converted": d.converted,
                    "rate": d.rate,
                    "lift": d.lift,
                    "min_score": d.min_score,
                    "max_score": d.max_score,
                }
                for d in ranking.deciles
            ],
        },
    }


def status_differences(
    a: RuleRun,
    b: RuleRun,
    rows_a: Sequence[Mapping[str, Any]],
    rows_b: Sequence[Mapping[str, Any]],
    conversions: Mapping[str, Sequence[int]] | None,
) -> list[dict[str, Any]]:
    """Leads whose status differs between two runs: hot at the end in one only, or hot at
    some point in one only. Sorted by the larger of the two scores, highest first."""

    def hot_times(run: RuleRun) -> dict[str, list[int]]:
        times: dict[str, list[int]] = {}
        for c in run.crossings:
            if c.kind == "lead_became_hot":
                times.setdefault(c.lead_id, []).append(c.occurred_at_ms)
        return times

    hot_a, hot_b = hot_times(a), hot_times(b)
    score_a = {r["lead_id"]: r["score"] for r in rows_a}
    score_b = {r["lead_id"]: r["score"] for r in rows_b}
    diffs = []
    hot_end_b = b.leads.hot()
    for lead_id, hot_end_a in a.leads.hot().items():
        ever_a, ever_b = lead_id in hot_a, lead_id in hot_b
        if hot_end_a == hot_end_b[lead_id] and ever_a == ever_b:
            continue
        row: dict[str, Any] = {
            "lead_id": lead_id,
            "hot_at_end_a": hot_end_a,
            "hot_at_end_b": hot_end_b[lead_id],
            "hot_events_a": len(hot_a.get(lead_id, ())),
            "hot_events_b": len(hot_b.get(lead_id, ())),
            "first_hot_a": format_ms(min(hot_a[lead_id])) if ever_a else None,
            "first_hot_b": format_ms(min(hot_b[lead_id])) if ever_b else None,
            "score_a": score_a[lead_id],
            "score_b": score_b[lead_id],
        }
        if conversions is not None:
            times = conversions.get(lead_id)
            row["first_conversion"] = format_ms(times[0]) if times else None
        diffs.append(row)
    diffs.sort(key=lambda r: (-max(r["score_a"], r["score_b"]), r["lead_id"]))
    return diffs


def _write_csv(rows: Sequence[Mapping[str, Any]], path: Path, fields: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: (f"{v:.4f}" if isinstance(v, float) else ("" if v is None else v))
                    for k, v in row.items()
                }
            )


def _backtest(
    replay: Replay,
    run: RuleRun,
    conversions: Mapping[str, Sequence[int]],
    window_ms: int,
    period: backtest.Period,
    cutoff_ms: int,
) -> dict[str, Any]:
    """One rule set's metrics (JSON form): its hot events and its scores at the cut-off."""
    assert replay.first_event_ms is not None
    result = backtest.backtest(
        hot_events=[
            (c.lead_id, c.occurred_at_ms) for c in run.crossings if c.kind == "lead_became_hot"
        ],
        scores_at_cutoff=run.scores_at(cutoff_ms, run.snapshot),
        cutoff_ms=cutoff_ms,
        conversions=conversions,
        window_ms=window_ms,
        period=period,
        first_event_ms=replay.first_event_ms,
    )
    return metrics_dict(result)


def _run_summary(
    run: RuleRun, where: RunOutputs, out_dir: Path, metrics: dict[str, Any] | None
) -> dict[str, Any]:
    """One rule set's part of ``summary.json``."""
    kinds = Counter(c.kind for c in run.crossings)
    relative = where.directory.relative_to(out_dir)
    return {
        "label": where.label,
        "rules_file": where.rules_file,
        "rules_version": run.rules.version,
        "thresholds": {"hot": run.rules.thresholds.hot, "cool": run.rules.thresholds.cool},
        "applied": run.applied,
        "duplicates": run.duplicates,
        "leads": len(run.leads),
        "leads_hot_at_end": sum(run.leads.hot().values()),
        "leads_ever_hot": len({c.lead_id for c in run.crossings if c.kind == "lead_became_hot"}),
        "crossings": {
            "lead_became_hot": kinds["lead_became_hot"],
            "lead_cooled": kinds["lead_cooled"],
            "lead_cooled_by_decay": sum(
                1 for c in run.crossings if c.kind == "lead_cooled" and c.trigger_event_id is None
            ),
            "cooled_at_end": run.cooled_at_end,
        },
        "files": {"hot": str(relative / "hot.jsonl"), "scores": str(relative / "scores.csv")},
        "metrics": metrics,
    }


def write_outputs(
    replay: Replay,
    stats: ReadStats,
    out_dir: Path,
    outputs: Sequence[RunOutputs],
    *,
    sources: Sequence[str],
    conversions: Mapping[str, Sequence[int]] | None = None,
    window_ms: int = 7 * 86_400_000,
    period: backtest.Period | None = None,
    emitted_at: datetime | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Write every output file of a replay into ``out_dir`` and return the summary.

    ``outputs`` names each run of ``replay`` (same order). Metrics are computed when
    ``conversions`` are given, over ``period`` (default: the replayed span).
    """
    from .report import ReportRun, render_report

    output_started = time.perf_counter()
    emitted_at = emitted_at or datetime.now(UTC)
    out_dir.mkdir(parents=True, exist_ok=True)
    end_ms = replay.end_ms
    cutoff_ms = replay.cutoff_ms if replay.cutoff_ms is not None else end_ms
    if period is None and replay.first_event_ms is not None and end_ms is not None:
        period = backtest.Period(replay.first_event_ms, end_ms)

    summaries: list[dict[str, Any]] = []
    report_runs: list[ReportRun] = []
    all_rows: list[list[dict[str, Any]]] = []
    for run, where in zip(replay.runs, outputs, strict=True):
        where.directory.mkdir(parents=True, exist_ok=True)
        write_hot(run, where.directory / "hot.jsonl", emitted_at)
        rows = lead_rows(run, end_ms) if end_ms is not None else []
        write_scores(rows, where.directory / "scores.csv")
        all_rows.append(rows)
        metrics = None
        if conversions is not None and period is not None and cutoff_ms is not None:
            metrics = _backtest(replay, run, conversions, window_ms, period, cutoff_ms)
        summaries.append(_run_summary(run, where, out_dir, metrics))
        report_runs.append(ReportRun.build(where.label, run, rows))

    differences = None
    diff_rows: list[dict[str, Any]] = []
    if len(replay.runs) == 2:
        run_a, run_b = replay.runs
        diff_rows = status_differences(run_a, run_b, all_rows[0], all_rows[1], conversions)
        fields = [
            "lead_id",
            "hot_at_end_a",
            "hot_at_end_b",
            "hot_events_a",
            "hot_events_b",
            "first_hot_a",
            "first_hot_b",
            "score_a",
            "score_b",
        ] + (["first_conversion"] if conversions is not None else [])
        _write_csv(diff_rows, out_dir / "status_diff.csv", fields)
        differences = {"leads": len(diff_rows), "file": "status_diff.csv"}

    summary: dict[str, Any] = {
        "generated_at": format_ms(datetime_to_ms(emitted_at)),
        "sources": list(sources),
        "counts": {
            "records": stats.records,
            "blank_lines": stats.blank_lines,
            "valid_events": stats.valid,
            "bad": stats.bad,
            "after_at_ignored": replay.after_at,
            "applied": replay.runs[0].applied,
            "duplicates": replay.runs[0].duplicates,
            "leads": len(replay.runs[0].leads),
        },
        "bad_by_kind": dict(sorted(stats.bad_by_kind.items())),
        "bad_records": [r.to_dict() for r in stats.bad_records],
        "bad_records_listed": len(stats.bad_records),
        "time": {
            "first_event_at": format_ms(replay.first_event_ms),
            "last_event_at": format_ms(replay.last_event_ms),
            "at": format_ms(replay.at_ms),
            "end_at": format_ms(end_ms),
            "cutoff_at": format_ms(cutoff_ms),
            "note": (
                f"events that occurred after --at were ignored ({replay.after_at})"
                if replay.at_ms is not None
                else "end time = the latest occurred_at replayed"
            ),
        },
        "window": format_duration_ms(window_ms),
        "conversions": None
        if conversions is None
        else {"leads": len(conversions), "conversions": sum(len(t) for t in conversions.values())},
        "runs": summaries,
        "status_differences": differences,
    }
    outputs_seconds = time.perf_counter() - output_started
    total = None if started is None else time.perf_counter() - started
    summary["timing"] = {
        "read_validate_s": round(stats.seconds, 3),
        "apply_s": round(replay.apply_seconds, 3),
        "outputs_s": round(outputs_seconds, 3),
        "total_s": None if total is None else round(total, 3),
        "records_per_s": None if not total else round(stats.records / total),
    }
    (out_dir / "report.html").write_text(
        render_report(summary, report_runs, diff_rows), encoding="utf-8"
    )
    (out_dir / "summary.json").write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n"
    )
    return summary


# --------------------------------------------------------------------------- one call


def run_replay(
    sources: Sequence[Source],
    rules: Sequence[tuple[RuleSet, str]],
    out_dir: Path,
    *,
    conversions_path: Path | None = None,
    at_ms: int | None = None,
    cutoff_ms: int | None = None,
    window_ms: int = 7 * 86_400_000,
    max_event_bytes: int = MAX_EVENT_BYTES,
    progress: bool = False,
) -> dict[str, Any]:
    """Read, apply, write: the whole ``leadscore replay``. ``rules`` is ``(ruleset, file
    name)``, the first one the main rules, a second one the ``--compare`` rules (its files
    go to ``out_dir/compare/``). Returns the summary (also in ``summary.json``)."""
    started = time.perf_counter()
    conversions = None
    if conversions_path is not None:
        conversions = backtest.index_conversions(load_conversions(conversions_path))
    if cutoff_ms is not None and at_ms is not None and cutoff_ms > at_ms:
        raise ReplayError("--cutoff must not be after --at")
    stats = ReadStats()
    labels = ["A", "B"]
    outputs = [
        RunOutputs(labels[i], name, out_dir if i == 0 else out_dir / "compare")
        for i, (_, name) in enumerate(rules)
    ]
    with gc_paused():  # millions of acyclic objects: see gc_paused
        replay = replay_sources(
            sources,
            [ruleset for ruleset, _ in rules],
            stats,
            at_ms=at_ms,
            cutoff_ms=cutoff_ms,
            max_event_bytes=max_event_bytes,
            progress=progress,
        )
        return write_outputs(
            replay,
            stats,
            out_dir,
            outputs,
            sources=[s.name for s in sources],
            conversions=conversions,
            window_ms=window_ms,
            started=started,
        )
