"""The scoring engine: pure functions ``(state, event) -> (state, crossings)``.

Used unchanged by the live worker (on the Redis store) and by replay (on the memory store).

Per lead, at each event, in processing order, with ``t = max(clock, occurred_at)``:

1. if the lead is hot and its decayed score fell below ``cool`` at some moment in
   ``(clock, t]``, it cooled at the first such millisecond ``t_c``: emit ``lead_cooled``
   at ``t_c`` (no trigger event: decay did it);
2. apply every matching rule's points, each with the event's own ``occurred_at``;
3. if not hot and ``score(t) >= hot`` (and the fit grade allows): emit ``lead_became_hot``
   at ``t``; if hot and ``score(t) < cool`` (a negative event): emit ``lead_cooled`` at ``t``.

:func:`advance` runs step 1 alone up to a given time: the live worker's cooling sweep and
the end of a replay use it, and produce the very same ``lead_cooled`` (same id, time, score)
the next event would have produced.

The state machine and the decay maths run in the native core (``native/src/engine.rs``,
``leadscore_core.Kernel``); rule matching, fit grades, profiles and Kafka positions stay
here. Both stores and replay go through the functions of this module, so there is one
implementation of every step.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from schemas.events import PROFILE_FIELDS, LeadEvent, LeadProfile
from schemas.outputs import LeadBecameHot, LeadCooled, Reason

from .decay import Curve, Term
from .rules import RuleSet
from .state import LeadState, ProfileEntry

#: Namespace of crossing ids (uuid5). Changing it changes every id: don't.
CROSSING_ID_NAMESPACE = uuid.UUID("5d0f8a3e-6b1c-4f4e-9a51-1e3c2b7d9f10")
#: How many rules a crossing's ``reasons`` lists.
TOP_REASONS = 5

CrossingKind = Literal["lead_became_hot", "lead_cooled"]


@dataclass(frozen=True, slots=True)
class Position:
    """Where an event came from: a Kafka message (or a line of a file, as partition 0)."""

    topic: str
    partition: int
    offset: int

    @property
    def key(self) -> str:
        return f"{self.topic}:{self.partition}"

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Contribution:
    """One rule's current part of a score."""

    rule_id: str
    points: float


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold crossing: becomes a ``lead_became_hot`` / ``lead_cooled`` record."""

    kind: CrossingKind
    event_id: str
    lead_id: str
    score: float
    threshold: float
    occurred_at_ms: int
    trigger_event_id: str | None
    reasons: tuple[Reason, ...]
    fit_grade: str | None
    rules_version: str

    def to_record(self, emitted_at: datetime) -> LeadBecameHot | LeadCooled:
        """The output record, stamped with the (caller's) wall-clock ``emitted_at``."""
        model = LeadBecameHot if self.kind == "lead_became_hot" else LeadCooled
        return model(
            event_id=self.event_id,
            lead_id=self.lead_id,
            score=self.score,
            threshold=self.threshold,
            occurred_at=ms_to_datetime(self.occurred_at_ms),
            trigger_event_id=self.trigger_event_id,
            reasons=list(self.reasons),
            fit_grade=self.fit_grade,
            rules_version=self.rules_version,
            emitted_at=emitted_at,
        )


def crossing_to_dict(crossing: Crossing) -> dict[str, Any]:
    """JSON-able form of a crossing (the Redis outbox stores these)."""
    data = {name: getattr(crossing, name) for name in Crossing.__slots__}
    data["reasons"] = [r.model_dump() for r in crossing.reasons]
    return data


def crossing_from_dict(data: Mapping[str, Any]) -> Crossing:
    """Inverse of :func:`crossing_to_dict`."""
    fields = dict(data)
    fields["reasons"] = tuple(Reason.model_validate(r) for r in data["reasons"])
    return Crossing(**fields)


@dataclass(frozen=True, slots=True)
class Step:
    """Result of one engine call."""

    state: LeadState
    crossings: tuple[Crossing, ...] = ()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch -> aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(value: datetime) -> int:
    """Aware datetime -> milliseconds since the epoch (sub-ms truncated)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: leadscore only accepts timezone-aware times")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def crossing_id(rules_version: str, lead_id: str, kind: str, at_ms: int, sequence: int) -> str:
    """Deterministic id of a crossing: the same crossing always gets the same id."""
    name = f"{rules_version}\x1f{lead_id}\x1f{kind}\x1f{at_ms}\x1f{sequence}"
    return str(uuid.uuid5(CROSSING_ID_NAMESPACE, name))


# --------------------------------------------------------------------------- the core's view

#: A lead as the native core takes it: (clock_ms, landmark_ms, [(rule index, acc)], hot,
#: crossings, fit_score, fit_allows_hot, events_applied).
PackedLead = tuple[int, int, list[tuple[int, float]], bool, int, float, bool, int]
#: (became_hot, at_ms, score, sequence, trigger index, [(rule index, points)], fit_score,
#: fit_allows_hot): a crossing as the core reports it.
RawCrossing = tuple[bool, int, float, int, int | None, list[tuple[int, float]], float, bool]

_NO_FIT: tuple[float, bool] = (0.0, True)


def _pack(
    state: LeadState, rules: RuleSet, fit: tuple[float, bool] = _NO_FIT
) -> tuple[PackedLead, dict[str, float]]:
    """The core's view of ``state``, and the sums of rules no longer in ``rules`` (they
    count 0; kept as they are until the landmark moves, then dropped)."""
    index = rules.rule_index
    known: list[tuple[int, float]] = []
    unknown: dict[str, float] = {}
    for rule_id, acc in state.sums.items():
        position = index.get(rule_id)
        if position is None:
            unknown[rule_id] = acc
        else:
            known.append((position, acc))
    packed = (
        state.clock_ms,
        state.landmark_ms,
        known,
        state.hot,
        state.crossings,
        fit[0],
        fit[1],
        state.events_applied,
    )
    return packed, unknown


def _unpack(
    packed: PackedLead,
    rules: RuleSet,
    lead_id: str,
    unknown: Mapping[str, float],
    old_landmark_ms: int | None,
    profile: Mapping[str, ProfileEntry],
    positions: Mapping[str, int],
) -> LeadState:
    clock, landmark, sums, hot, crossings, _, _, applied = packed
    ids = rules.rule_ids
    merged = {ids[i]: acc for i, acc in sums}
    if unknown and landmark == old_landmark_ms:
        merged.update(unknown)  # re-basing drops them (restored rules start from 0)
    return LeadState(
        lead_id=lead_id,
        clock_ms=clock,
        landmark_ms=landmark,
        sums=merged,
        hot=hot,
        crossings=crossings,
        profile=profile,
        positions=positions,
        events_applied=applied,
    )


def lead_fit(profile: Mapping[str, ProfileEntry], rules: RuleSet) -> tuple[float, bool]:
    """``(fit score, whether its grade lets the lead be hot)`` for a profile."""
    if not rules.has_fit:
        return 0.0, rules.grade_allows_hot(None)
    get = {name: entry[2] for name, entry in profile.items()}.get
    score = float(sum(r.points for r in rules.fit_rules if r.matches(get)))
    return score, rules.grade_allows_hot(rules.grade(score))


def make_crossing(
    raw: RawCrossing, rules: RuleSet, lead_id: str, trigger_event_id: str | None
) -> Crossing:
    """Dress a crossing of the core: id, reasons with rule ids, grade, fit reason."""
    became_hot, at_ms, score, sequence, _, parts, fit_points, allows = raw
    ids = rules.rule_ids
    thresholds = rules.thresholds
    kind: CrossingKind = "lead_became_hot" if became_hot else "lead_cooled"
    grade = rules.grade(fit_points) if rules.has_fit else None
    reasons = [Reason(rule_id=ids[i], points=points) for i, points in parts]
    if thresholds.min_grade is not None:
        meets = "meets" if allows else "is below"
        reasons.append(
            Reason(
                rule_id="fit-grade",
                points=fit_points,
                detail=f"fit grade {grade} {meets} the minimum grade {thresholds.min_grade}",
            )
        )
    return Crossing(
        kind=kind,
        event_id=crossing_id(rules.version, lead_id, kind, at_ms, sequence),
        lead_id=lead_id,
        score=score,
        threshold=thresholds.hot if became_hot else thresholds.cool,
        occurred_at_ms=at_ms,
        trigger_event_id=trigger_event_id,
        reasons=tuple(reasons),
        fit_grade=grade,
        rules_version=rules.version,
    )


def make_crossings(
    raw: Iterable[RawCrossing],
    rules: RuleSet,
    lead_id: str,
    trigger_ids: Sequence[str],
) -> list[Crossing]:
    """:func:`make_crossing` for each; ``trigger_ids`` maps the core's trigger indices."""
    return [
        make_crossing(c, rules, lead_id, None if c[4] is None else trigger_ids[c[4]]) for c in raw
    ]


def matched_rules(event: LeadEvent, rules: RuleSet) -> list[int]:
    """Indices (into ``rules.rules``) of the behaviour rules ``event`` matches, in order."""
    return match_values(event.type, event.field_value, rules)


def match_values(event_type: str, get: Callable[[str], Any], rules: RuleSet) -> list[int]:
    """:func:`matched_rules` for an event given as its type and a field reader (``get(name)``
    returns what ``event.field_value(name)`` would)."""
    index = rules.rule_index
    return [index[r.id] for r in rules.candidates(event_type, get) if r.matches(get)]


# --------------------------------------------------------------------------- reading


def terms(state: LeadState, rules: RuleSet) -> tuple[Term, ...]:
    """The lead's per-rule terms under ``rules`` (rules no longer in the file count 0)."""
    lead_curve = curve(state, rules)
    return lead_curve.positive + lead_curve.negative


def curve(state: LeadState, rules: RuleSet) -> Curve:
    """The lead's score as a function of time (until its next event)."""
    return Curve.from_sums(state.sums, rules.decay_params, state.landmark_ms)


def score_at(state: LeadState, rules: RuleSet, at_ms: int) -> float:
    """The lead's decayed score at ``at_ms``. A state cannot be rewound: for a time before
    the lead's latest event this is the score at that event (its clock)."""
    return rules.kernel.score_at(_pack(state, rules)[0], at_ms)


def explain(state: LeadState, rules: RuleSet, at_ms: int) -> tuple[Contribution, ...]:
    """Per-rule decayed contributions that make up the score at ``at_ms``, largest first.
    They add up to :func:`score_at` (up to float rounding); like it, a time before the
    lead's clock means the clock."""
    ids = rules.rule_ids
    parts = rules.kernel.explain(_pack(state, rules)[0], at_ms)
    return tuple(Contribution(ids[i], points) for i, points in parts)


def fit_score(state: LeadState, rules: RuleSet) -> float:
    """Sum of the fit rules that match the lead's profile (fit points do not decay)."""
    return lead_fit(state.profile, rules)[0]


def fit_grade(state: LeadState, rules: RuleSet) -> str | None:
    """A-D grade from the fit rules, or None when the rules file has no fit section."""
    if not rules.has_fit:
        return None
    return rules.grade(fit_score(state, rules))


def cool_due_ms(state: LeadState, rules: RuleSet) -> int | None:
    """For a hot lead: the millisecond it will cool if no further event arrives (None when
    not hot, or when decay alone never takes it below ``cool``). The live worker's sweep
    indexes hot leads by this time."""
    if not state.hot:
        return None
    return rules.kernel.cool_due_ms(_pack(state, rules)[0])


# --------------------------------------------------------------------------- transitions


def new_state(lead_id: str, at_ms: int) -> LeadState:
    """State of a lead never seen before, with its clock at its first event."""
    return LeadState(lead_id=lead_id, clock_ms=at_ms, landmark_ms=at_ms)


def apply_event(
    state: LeadState | None,
    event: LeadEvent,
    rules: RuleSet,
    position: Position | None = None,
) -> Step:
    """Apply one (non-duplicate) event to a lead: steps 1-3 of the module docstring."""
    batch = _apply(state, [(event, position)], rules, (), check_duplicates=False)
    assert batch.state is not None
    return Step(batch.state, batch.crossings)


def advance(state: LeadState, rules: RuleSet, to_ms: int) -> Step:
    """Step 1 alone: emit the ``lead_cooled`` that decay caused by ``to_ms``, if any.
    The lead's clock (event time of its latest event) does not move."""
    if not state.hot or to_ms <= state.clock_ms:
        return Step(state)
    fit = lead_fit(state.profile, rules)
    packed, unknown = _pack(state, rules, fit)
    packed, raw = rules.kernel.advance(packed, to_ms)
    if not raw:
        return Step(state)
    new = _unpack(
        packed, rules, state.lead_id, unknown, state.landmark_ms, state.profile, state.positions
    )
    return Step(new, tuple(make_crossings(raw, rules, state.lead_id, ())))


def merge_profile(
    profile: Mapping[str, ProfileEntry], event: LeadProfile
) -> dict[str, ProfileEntry]:
    """The profile after ``event``: the newest value of each field wins (by
    ``occurred_at``, then event id), so arrival order does not matter."""
    return merge_profile_values(
        profile, event.occurred_at_ms, event.event_id, profile_values(event)
    )


def profile_values(event: LeadProfile) -> tuple[Any, ...]:
    """The event's values of :data:`PROFILE_FIELDS`, in that order."""
    return tuple(getattr(event, name) for name in PROFILE_FIELDS)


def merge_profile_values(
    profile: Mapping[str, ProfileEntry],
    occurred_ms: int,
    event_id: str,
    values: Sequence[Any],
) -> dict[str, ProfileEntry]:
    """:func:`merge_profile` from the values alone (replay's native reader hands them
    over without building a pydantic model)."""
    merged = dict(profile)
    stamp = (occurred_ms, event_id)
    has_email = values[0] is not None  # PROFILE_FIELDS[0] is "email"
    for name, value in zip(PROFILE_FIELDS, values, strict=True):
        if value is None and not (name == "email_domain" and has_email):
            continue  # not provided: keep what we know (email_domain follows email)
        current = merged.get(name)
        if current is None or (current[0], current[1]) <= stamp:
            merged[name] = (occurred_ms, event_id, value)
    return merged


assert PROFILE_FIELDS[0] == "email", "merge_profile_values relies on it"


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True, slots=True)
class LeadBatch:
    """Result of applying one lead's events from a batch (what a store must persist)."""

    state: LeadState | None
    crossings: tuple[Crossing, ...]
    applied_event_ids: tuple[str, ...]
    duplicates: int


def apply_lead_events(
    state: LeadState | None,
    events: Iterable[tuple[LeadEvent, Position | None]],
    rules: RuleSet,
    seen_event_ids: Container[str] = frozenset(),
) -> LeadBatch:
    """Apply one lead's events in order, skipping duplicates: an ``event_id`` already
    applied (``seen_event_ids``, or earlier in this batch) or a message at or before the
    last applied offset of its partition (a redelivery). Both stores call this."""
    return _apply(state, events, rules, seen_event_ids, check_duplicates=True)


def _apply(
    state: LeadState | None,
    events: Iterable[tuple[LeadEvent, Position | None]],
    rules: RuleSet,
    seen_event_ids: Container[str],
    *,
    check_duplicates: bool,
) -> LeadBatch:
    rows: list[tuple[int, list[int], tuple[float, bool] | None]] = []
    applied: list[str] = []
    applied_set: set[str] = set()
    duplicates = 0
    profile: Mapping[str, ProfileEntry] = {} if state is None else state.profile
    positions: Mapping[str, int] = {} if state is None else state.positions
    positions_copied = False
    lead_id = None if state is None else state.lead_id
    for event, position in events:
        if check_duplicates:
            if event.event_id in applied_set or event.event_id in seen_event_ids:
                duplicates += 1
                continue
            if position is not None:
                last = positions.get(position.key)
                if last is not None and position.offset <= last:
                    duplicates += 1
                    continue
        if position is not None:
            if not positions_copied:
                positions = dict(positions)
                positions_copied = True
            positions[position.key] = position.offset  # type: ignore[index]
        fit = None
        if isinstance(event, LeadProfile):
            profile = merge_profile(profile, event)
            fit = lead_fit(profile, rules)
        rows.append((event.occurred_at_ms, matched_rules(event, rules), fit))
        applied.append(event.event_id)
        applied_set.add(event.event_id)
        lead_id = event.lead_id
    if not rows:
        return LeadBatch(state, (), (), duplicates)
    assert lead_id is not None
    packed_in: PackedLead | None = None
    unknown: dict[str, float] = {}
    old_landmark: int | None = None
    if state is not None:
        packed_in, unknown = _pack(state, rules, lead_fit(state.profile, rules))
        old_landmark = state.landmark_ms
    packed, raw = rules.kernel.apply(packed_in, rows)
    new = _unpack(packed, rules, lead_id, unknown, old_landmark, profile, positions)
    crossings = make_crossings(raw, rules, lead_id, applied)
    return LeadBatch(new, tuple(crossings), tuple(applied), duplicates)


def group_by_lead(
    items: Sequence[tuple[LeadEvent, Position | None]],
) -> dict[str, list[tuple[LeadEvent, Position | None]]]:
    """Split a batch per lead, keeping each lead's order (dicts keep first-seen order)."""
    groups: dict[str, list[tuple[LeadEvent, Position | None]]] = {}
    for item in items:
        groups.setdefault(item[0].lead_id, []).append(item)
    return groups
