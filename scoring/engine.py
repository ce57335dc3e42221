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
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from schemas.events import PROFILE_FIELDS, LeadEvent, LeadProfile
from schemas.outputs import LeadBecameHot, LeadCooled, Reason

from .decay import (
    REBASE_AFTER_HALF_LIVES,
    Curve,
    Term,
    forward_weight,
    lower_bound_from_sums,
    rebase,
    score_from_sums,
)
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
    return curve(state, rules).score(max(at_ms, state.clock_ms))


def explain(state: LeadState, rules: RuleSet, at_ms: int) -> tuple[Contribution, ...]:
    """Per-rule decayed contributions that make up the score at ``at_ms``, largest first.
    They add up to :func:`score_at` (up to float rounding); like it, a time before the
    lead's clock means the clock."""
    at_ms = max(at_ms, state.clock_ms)
    parts = [
        Contribution(t.rule_id, t.value(at_ms, state.landmark_ms)) for t in terms(state, rules)
    ]
    return tuple(sorted(parts, key=lambda c: (-c.points, c.rule_id)))


def fit_score(state: LeadState, rules: RuleSet) -> float:
    """Sum of the fit rules that match the lead's profile (fit points do not decay)."""
    values = {name: entry[2] for name, entry in state.profile.items()}
    return sum(r.points for r in rules.fit_rules if r.matches(values.get))


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
    lead_curve = curve(state, rules)
    cool = rules.thresholds.cool
    start = state.clock_ms + 1
    return lead_curve.first_below(cool, start, lead_curve.horizon_ms(start, cool))


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
    occurred = event.occurred_at_ms
    if state is None:
        state = new_state(event.lead_id, occurred)
    t = max(state.clock_ms, occurred)
    crossings: list[Crossing] = []

    # 1. Did decay take a hot lead below `cool` since its last event?
    state = _cool_by_decay(state, rules, t, crossings)

    # 2. Apply the event's rules with its own timestamp (late events weigh less).
    landmark, sums = state.landmark_ms, dict(state.sums)
    if (t - landmark) > REBASE_AFTER_HALF_LIVES * rules.min_half_life_ms:
        sums = rebase(sums, rules.decay_params, landmark, t)
        landmark = t
    get = event.field_value
    for rule in rules.candidates(event.type, get):
        if rule.matches(get):
            weight = forward_weight(occurred, landmark, rule.half_life_ms)
            sums[rule.id] = sums.get(rule.id, 0.0) + rule.points * weight
    profile = _merge_profile(state.profile, event) if isinstance(event, LeadProfile) else None
    positions = state.positions
    if position is not None:
        positions = {**positions, position.key: position.offset}
    state = LeadState(
        lead_id=state.lead_id,
        clock_ms=t,
        landmark_ms=landmark,
        sums=sums,
        hot=state.hot,
        crossings=state.crossings,
        profile=state.profile if profile is None else profile,
        positions=positions,
        events_applied=state.events_applied + 1,
    )

    # 3. Hot / cool at the event.
    score = score_from_sums(sums, rules.decay_params, landmark, t)
    thresholds = rules.thresholds
    if not state.hot and score >= thresholds.hot:
        grade = fit_grade(state, rules)
        if rules.grade_allows_hot(grade):
            state = _cross(state, rules, "lead_became_hot", t, score, event.event_id, crossings)
    elif state.hot and (
        score < thresholds.cool
        or (
            thresholds.min_grade is not None and not rules.grade_allows_hot(fit_grade(state, rules))
        )
    ):
        # A negative event took it below `cool`, or its fit grade fell below min_grade.
        state = _cross(state, rules, "lead_cooled", t, score, event.event_id, crossings)
    return Step(state, tuple(crossings))


def advance(state: LeadState, rules: RuleSet, to_ms: int) -> Step:
    """Step 1 alone: emit the ``lead_cooled`` that decay caused by ``to_ms``, if any.
    The lead's clock (event time of its latest event) does not move."""
    crossings: list[Crossing] = []
    state = _cool_by_decay(state, rules, to_ms, crossings)
    return Step(state, tuple(crossings))


def _cool_by_decay(
    state: LeadState, rules: RuleSet, until_ms: int, crossings: list[Crossing]
) -> LeadState:
    if not state.hot or until_ms <= state.clock_ms:
        return state
    cool = rules.thresholds.cool
    lower = lower_bound_from_sums(
        state.sums, rules.decay_params, state.landmark_ms, state.clock_ms + 1, until_ms
    )
    if lower >= cool:
        return state  # the bound first_below would test first: no crossing possible
    lead_curve = curve(state, rules)
    cooled_at = lead_curve.first_below(rules.thresholds.cool, state.clock_ms + 1, until_ms)
    if cooled_at is None:
        return state
    score = lead_curve.score(cooled_at)
    return _cross(state, rules, "lead_cooled", cooled_at, score, None, crossings)


def _cross(
    state: LeadState,
    rules: RuleSet,
    kind: CrossingKind,
    at_ms: int,
    score: float,
    trigger_event_id: str | None,
    crossings: list[Crossing],
) -> LeadState:
    thresholds = rules.thresholds
    grade = fit_grade(state, rules)
    # The rules that weigh most either way (a cooling's negative rule included), largest
    # magnitude first.
    parts = sorted(explain(state, rules, at_ms), key=lambda c: (-abs(c.points), c.rule_id))
    reasons = [Reason(rule_id=c.rule_id, points=c.points) for c in parts[:TOP_REASONS]]
    if thresholds.min_grade is not None:
        meets = "meets" if rules.grade_allows_hot(grade) else "is below"
        reasons.append(
            Reason(
                rule_id="fit-grade",
                points=fit_score(state, rules),
                detail=f"fit grade {grade} {meets} the minimum grade {thresholds.min_grade}",
            )
        )
    crossings.append(
        Crossing(
            kind=kind,
            event_id=crossing_id(rules.version, state.lead_id, kind, at_ms, state.crossings),
            lead_id=state.lead_id,
            score=score,
            threshold=thresholds.hot if kind == "lead_became_hot" else thresholds.cool,
            occurred_at_ms=at_ms,
            trigger_event_id=trigger_event_id,
            reasons=tuple(reasons),
            fit_grade=grade,
            rules_version=rules.version,
        )
    )
    return replace(state, hot=kind == "lead_became_hot", crossings=state.crossings + 1)


def _merge_profile(
    profile: Mapping[str, ProfileEntry], event: LeadProfile
) -> dict[str, ProfileEntry]:
    merged = dict(profile)
    stamp = (event.occurred_at_ms, event.event_id)
    for name in PROFILE_FIELDS:
        value = getattr(event, name)
        if value is None and not (name == "email_domain" and event.email is not None):
            continue  # not provided: keep what we know (email_domain follows email)
        current = merged.get(name)
        if current is None or (current[0], current[1]) <= stamp:
            merged[name] = (stamp[0], stamp[1], value)
    return merged


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
    crossings: list[Crossing] = []
    applied: list[str] = []
    applied_set: set[str] = set()
    duplicates = 0
    for event, position in events:
        if event.event_id in applied_set or event.event_id in seen_event_ids:
            duplicates += 1
            continue
        if position is not None and state is not None:
            last = state.positions.get(position.key)
            if last is not None and position.offset <= last:
                duplicates += 1
                continue
        step = apply_event(state, event, rules, position)
        state = step.state
        crossings.extend(step.crossings)
        applied.append(event.event_id)
        applied_set.add(event.event_id)
    return LeadBatch(state, tuple(crossings), tuple(applied), duplicates)


def group_by_lead(
    items: Sequence[tuple[LeadEvent, Position | None]],
) -> dict[str, list[tuple[LeadEvent, Position | None]]]:
    """Split a batch per lead, keeping each lead's order (dicts keep first-seen order)."""
    groups: dict[str, list[tuple[LeadEvent, Position | None]]] = {}
    for item in items:
        groups.setdefault(item[0].lead_id, []).append(item)
    return groups
