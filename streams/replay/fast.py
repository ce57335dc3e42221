"""The native apply path, what ``leadscore replay`` runs: reading and applying in one
pass on the native core, with the same results as the reference path
(:func:`streams.replay.reference.replay_events` over
:func:`streams.replay.reading.read_events`), bit for bit.

Records are parsed by the core's serde fast path (:class:`schemas._native.Reader`), which
takes only what pydantic certainly accepts with the same values; the rest is validated by
:func:`~streams.replay.reading.validate_record` as everywhere. Rule matches are computed
in Python (:mod:`scoring.state_machine`) once per distinct combination of the fields the
rules test, and lead states stay in the core's hash map (:class:`scoring._native.LeadTable`),
where every event runs the same per-event engine code as the worker's. Profile merges and
fit rules stay in Python (:class:`_FastRun`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from schemas._native import Batch, Reader
from schemas.events import (
    EVENT_MODELS,
    PROFILE_FIELDS,
    LeadEvent,
    LeadProfile,
    ScoreAdjusted,
    rule_event_of,
)
from schemas.validation import MAX_EVENT_BYTES, too_far_ahead
from scoring._native import LeadSnapshot, LeadTable
from scoring.crossings import make_crossing
from scoring.profile import lead_fit, merge_profile_values, profile_values
from scoring.rules import RuleSet
from scoring.state import ProfileEntry
from scoring.state_machine import CONTROL_KINDS

from .reading import BadRecord, ReadStats, source_chunks, validate_record
from .results import NEVER, LeadRow, Replay, RuleRun, Span, gc_paused
from .sources import Chunk, Source

#: Distinct profiles whose fit a replay remembers.
FIT_CACHE_SIZE = 1 << 16
#: The event type whose values the reader hands to :meth:`_FastRun.on_profile`.
PROFILE_TYPE = next(name for name, model in EVENT_MODELS.items() if model is LeadProfile)


class NativeView:
    """:class:`~streams.replay.results.LeadView` over a snapshot of the native lead
    table."""

    def __init__(self, snapshot: LeadSnapshot, rules: RuleSet) -> None:
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


def rule_fields(rulesets: Sequence[RuleSet]) -> dict[str, list[str]]:
    """Per event type: the fields any rule of any of the rule sets tests. Events that
    agree on them match the same rules."""
    fields: dict[str, set[str]] = {name: set() for name in EVENT_MODELS}
    for rules in rulesets:
        for rule in rules.rules:
            assert rule.event is not None
            # (a track event's name is a key too; the reader ignores types it declines)
            fields.setdefault(rule.event, set()).update(c.field for c in rule.conditions)
    return {name: sorted(names) for name, names in fields.items()}


def reader_profile_fields(rulesets: Sequence[RuleSet]) -> tuple[str, ...]:
    """The profile fields the reader hands over: every rule set's, in one list that
    starts with :data:`PROFILE_FIELDS`."""
    extra = {f for rules in rulesets for f in rules.profile_fields[len(PROFILE_FIELDS) :]}
    return (*PROFILE_FIELDS, *sorted(extra))


class _FastRun:
    """One rule set's native lead table, with the Python side of it: profiles."""

    def __init__(self, run: RuleRun, slot: int, reader_fields: Sequence[str]) -> None:
        self.run = run
        self.rules = run.rules
        #: This rule set's profile fields, and where the reader's values hold them.
        self.profile_fields = run.rules.profile_fields
        self.pick = [reader_fields.index(name) for name in self.profile_fields]
        self.profiles: dict[str, Mapping[str, ProfileEntry]] = {}
        #: Fit by profile values: many leads share firmographics, and fit rules are slow.
        self.fits: dict[tuple[tuple[str, object], ...], tuple[float, bool]] = {}
        self.table = LeadTable(run.rules.kernel, self.on_profile, slot)

    def on_profile(
        self, lead_id: str, event_id: str, occurred_ms: int, values: tuple[object, ...] | None
    ) -> tuple[float, bool]:
        """A profile event was applied: merge it, return the lead's new fit (``values``
        None: the lead was erased, its profile is forgotten)."""
        if values is None:
            self.profiles.pop(lead_id, None)
            return lead_fit({}, self.rules)
        profile = merge_profile_values(
            self.profiles.get(lead_id, {}),
            occurred_ms,
            event_id,
            [values[i] for i in self.pick],
            self.profile_fields,
        )
        self.profiles[lead_id] = profile
        key = tuple([(name, entry[2]) for name, entry in profile.items()])
        fit = self.fits.get(key)
        if fit is None:
            if len(self.fits) >= FIT_CACHE_SIZE:
                self.fits.clear()
            fit = self.fits[key] = lead_fit(profile, self.rules)
        return fit

    def apply(self, batch: Batch, start: int, stop: int, limit_ms: int) -> None:
        applied, duplicates, raw = self.table.apply(batch, start, stop, limit_ms)
        rules = self.rules
        self.run.crossings.extend(make_crossing(c, rules, lead, trig) for lead, trig, c in raw)
        self.run.applied += applied
        self.run.duplicates += duplicates

    def keep_snapshot(self) -> None:
        """The cut-off: keep the table's states as they are now."""
        self.run.snapshot = NativeView(self.table.snapshot(), self.rules)

    def finish(self, end_ms: int | None) -> None:
        """Emit the coolings due at ``end_ms``; keep the final states."""
        if end_ms is not None:
            cooled = [
                make_crossing(c, self.rules, lead, None)
                for lead, _, c in self.table.cool_due(end_ms)
            ]
            cooled.sort(key=lambda c: (c.occurred_at_ms, c.lead_id))
            self.run.crossings.extend(cooled)
            self.run.cooled_at_end = len(cooled)
        self.run.final = NativeView(self.table.snapshot(), self.rules)


def replay_sources(
    sources: Sequence[Source],
    rulesets: Sequence[RuleSet],
    stats: ReadStats,
    *,
    at_ms: int | None = None,
    cutoff_ms: int | None = None,
    max_event_bytes: int = MAX_EVENT_BYTES,
    progress: bool = False,
    control: Sequence[LeadEvent] = (),
) -> Replay:
    """Read ``sources`` and apply them to one native lead table per rule set (see the
    module docstring): ``replay_events(read_events(...))``, faster, same results.
    ``control``: control events (time order) merged in by event time
    (:mod:`streams.replay.control`)."""
    fields = rule_fields(rulesets)
    profile_fields = reader_profile_fields(rulesets)
    reader = Reader(fields, PROFILE_TYPE, list(profile_fields), max_event_bytes)
    runs = [RuleRun(rules) for rules in rulesets]
    fast = [_FastRun(run, slot, profile_fields) for slot, run in enumerate(runs)]
    span = Span()
    apply = _Applier(fast, reader, span, at_ms, cutoff_ms, control)
    with gc_paused():
        for source, chunk in source_chunks(sources, progress):
            started = time.perf_counter()
            batch = _parse_chunk(
                source.name, chunk, (reader, fields, profile_fields), fast, stats, max_event_bytes
            )
            stats.seconds += time.perf_counter() - started
            started = time.perf_counter()
            times, after = batch.time_range(apply.limit)
            span.after_at += after
            if times is not None:
                span.saw(*times)
            apply.batch(batch)
            span.apply_seconds += time.perf_counter() - started
        started = time.perf_counter()
        apply.rest()
        end_ms = span.end_ms(at_ms)
        for f in fast:
            f.finish(end_ms)
        span.apply_seconds += time.perf_counter() - started
    return span.replay(runs, at_ms, end_ms, cutoff_ms)


class _Applier:
    """Applies batches to every table, taking the cut-off snapshot before the first event
    after it, and applying each control event before the first event dated after it."""

    def __init__(
        self,
        fast: Sequence[_FastRun],
        reader: Reader,
        span: Span,
        at_ms: int | None,
        cutoff_ms: int | None,
        control: Sequence[LeadEvent],
    ) -> None:
        self.fast = fast
        self.reader = reader
        self.span = span
        self.limit = NEVER if at_ms is None else at_ms
        self.snapshot_after = NEVER if cutoff_ms is None else cutoff_ms
        self.pending = list(reversed(control))

    def batch(self, batch: Batch) -> None:
        start, end, limit = 0, len(batch), self.limit
        while True:
            due = self.pending[-1].occurred_at_ms if self.pending else None
            control = None if due is None else batch.first_after(start, due, limit)
            cut = None
            if self.snapshot_after != NEVER:
                cut = batch.first_after(start, self.snapshot_after, limit)
            stop = min(i for i in (control, cut, end) if i is not None)
            for f in self.fast:
                f.apply(batch, start, stop, limit)
            start = stop
            if stop == end:
                return
            if stop == control:
                self.control(self.pending.pop())
            else:
                self.snapshot()

    def rest(self) -> None:
        """The control events dated after every input event."""
        while self.pending:
            self.control(self.pending.pop())

    def snapshot(self) -> None:
        for f in self.fast:
            f.keep_snapshot()
        self.snapshot_after = NEVER

    def control(self, event: LeadEvent) -> None:
        at = event.occurred_at_ms
        if at > self.limit:
            self.span.after_at += 1
            return
        if at > self.snapshot_after:
            self.snapshot()
        self.span.saw(at, at)
        one = self.reader.parse([None])
        one.set_event(
            0,
            event.event_id,
            event.lead_id,
            at,
            None,
            [f.rules.match(rule_event_of(event), event.field_value) for f in self.fast],
            kind=CONTROL_KINDS.get(event.type, 0),
            points=event.points if isinstance(event, ScoreAdjusted) else None,
        )
        for f in self.fast:
            f.apply(one, 0, 1, self.limit)


def _parse_chunk(
    name: str,
    chunk: Chunk,
    reading: tuple[Reader, Mapping[str, Sequence[str]], Sequence[str]],
    fast: Sequence[_FastRun],
    stats: ReadStats,
    max_bytes: int,
) -> Batch:
    """Parse a chunk natively; validate what the fast path declined with
    :func:`validate_record`; resolve new signatures in every table. ``reading``: the
    reader, the fields rules test per event type, the profile fields it hands over."""
    reader, fields, profile_fields = reading
    values = chunk.values
    if chunk.input_format == "leadscore":
        batch = reader.parse(values, chunk.keys)
    else:  # the fast path reads leadscore events only: every record to the format's decoder
        batch = reader.parse([None] * len(values))
    stats.records += len(values)
    valid = len(values)
    for signature, event_type, field_values in batch.new_signatures():
        get = dict(zip(fields[event_type], field_values, strict=True)).get
        for f in fast:
            f.table.resolve(signature, f.rules.match(event_type, get))
    for i in batch.slow():
        result = validate_record(name, chunk, i, stats, max_bytes)
        if result is None:
            valid -= 1
            continue
        batch.set_event(
            i,
            result.event_id,
            result.lead_id,
            result.occurred_at_ms,
            profile_values(result, profile_fields) if isinstance(result, LeadProfile) else None,
            [f.rules.match(rule_event_of(result), result.field_value) for f in fast],
            kind=CONTROL_KINDS.get(result.type, 0),
            points=result.points if isinstance(result, ScoreAdjusted) else None,
        )
    if chunk.timestamps is not None and chunk.max_skew_ms is not None:
        skew = chunk.max_skew_ms
        limits = [None if t is None else t + skew for t in chunk.timestamps]
        for i, occurred_ms in batch.reject_after(limits):
            rejected = too_far_ahead(occurred_ms, chunk.timestamps[i], skew)
            assert rejected is not None and chunk.positions is not None
            partition, offset = chunk.positions[i]
            stats.reject(
                BadRecord(name, rejected.kind, rejected.error, partition=partition, offset=offset)
            )
            valid -= 1
    stats.valid += valid
    return batch
