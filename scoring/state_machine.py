"""The state machine's Python API: pure functions ``(state, events) -> (state, crossings)``
over a :class:`~scoring.state.LeadState`, for the stores (the live worker's Redis store, the
memory store of the reference replay path, calibration and tests).

Per lead, at each event, in processing order, with ``t = max(clock, occurred_at)``:

1. if the lead is hot and its decayed score fell below ``cool`` at some moment in
   ``(clock, t]``, it cooled at the first such millisecond ``t_c``: emit ``lead_cooled``
   at ``t_c`` (no trigger event: decay did it);
2. apply every matching rule's points, each with the event's own ``occurred_at``;
3. if not hot and ``score(t) >= hot`` (and the fit grade allows): emit ``lead_became_hot``
   at ``t``; if hot and ``score(t) < cool`` (a negative event) or its fit grade fell below
   ``thresholds.min_grade`` (a profile event): emit ``lead_cooled`` at ``t``.

:func:`advance` runs step 1 alone up to a given time: the live worker's cooling sweep uses
it (and replay's lead table runs the same core code at its end time), producing the very
same ``lead_cooled`` (same id, time, score) the next event would have produced.

Duplicates, the state machine and the decay maths run in the native core
(``native/src/engine.rs:accept``, reached through :mod:`scoring._native`); rule matching
(:meth:`scoring.rules.RuleSet.match`), profiles and fit (:mod:`scoring.profile`) and
crossing ids (:mod:`scoring.crossings`) are Python. Replay's fast path drives the same
``accept`` through its native lead table, so every step has one implementation. The
core takes a lead as a positional tuple (:data:`PackedLead`); :func:`_pack` and
:func:`_unpack` are the only places that know its layout.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from schemas.events import (
    LEAD_ERASED,
    SCORE_ADJUSTED,
    SCORE_RESET,
    LeadProfile,
    Scorable,
    rule_event_of,
)

from . import _native
from .crossings import Crossing, make_crossings
from .profile import lead_fit, merge_profile
from .rules import RuleSet
from .state import LeadState, Position, ProfileEntry


@dataclass(frozen=True, slots=True)
class Contribution:
    """One rule's current part of a score."""

    rule_id: str
    points: float


@dataclass(frozen=True, slots=True)
class Step:
    """Result of one engine call."""

    state: LeadState
    crossings: tuple[Crossing, ...] = ()


#: A lead as the native core takes it: (clock_ms, landmark_ms, [(rule index, acc)], hot,
#: crossings, fit_score, fit_allows_hot, events_applied, floor_ms or None).
PackedLead = tuple[int, int, list[tuple[int, float]], bool, int, float, bool, int, int | None]
#: Event kinds as the core takes them (``native/src/engine.rs:Kind``).
_BEHAVIOUR, _PROFILE = 0, 1
#: Control event type -> kind (what `Kernel.apply_lead` and `Batch.set_event` take).
CONTROL_KINDS = {SCORE_RESET: 2, LEAD_ERASED: 3}
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
        state.floor_ms,
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
    recent_ids: bytes,
    old_floor_ms: int | None = None,
) -> LeadState:
    clock, landmark, sums, hot, crossings, _, _, applied, floor = packed
    ids = rules.rule_ids
    merged = {ids[i]: acc for i, acc in sums}
    if unknown and landmark == old_landmark_ms and floor == old_floor_ms:
        # re-basing drops them (restored rules start from 0), and so does a reset
        merged.update(unknown)
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
        recent_ids=recent_ids,
        floor_ms=floor,
    )


# --------------------------------------------------------------------------- reading


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


def rank_bound(state: LeadState, rules: RuleSet, landmark_ms: int) -> float:
    """The lead's entry in a rank index against ``landmark_ms``: its positive points at its
    clock ``c``, forward-decayed to the landmark with the longest half-life ``h_max``.
    Read back at ``t`` (:func:`decay_to` from the landmark to ``t`` with ``h_max``), it is
    at least the lead's score at any ``t`` (every part decays at least as fast), and
    exact at ``t = c`` for a lead without caps or negative points: one index ranks leads
    whatever the rules' half-lives (``leadscore top``)."""
    return rules.kernel.rank_bound(_pack(state, rules)[0], landmark_ms)


def dedupe_window_of(events: Iterable[tuple[str, int]]) -> bytes:
    """A dedupe window (:attr:`LeadState.recent_ids`) remembering ``(event id,
    occurred_at_ms)`` pairs, in the core's order (an old store's ids, when converted)."""
    entries = sorted({(at, _native.id_hash(event_id)) for event_id, at in events})
    return b"".join(struct.pack("<Qq", h, at) for at, h in entries)


def pack_dedupe_window(recent_ids: bytes) -> bytes | None:
    """A dedupe window packed for storage: 8 bytes (its newest event time), then 12 per
    entry (id hash, milliseconds before the newest) instead of 16; None when an entry lies
    more than 49.7 days before the newest (a window that long is stored as it is)."""
    return _native.pack_dedupe_window(recent_ids)


def unpack_dedupe_window(packed: bytes) -> bytes:
    """Inverse of :func:`pack_dedupe_window`."""
    return _native.unpack_dedupe_window(packed)


def decay_to(value: float, from_ms: int, to_ms: int, half_life_ms: int) -> float:
    """``value`` (points against ``from_ms``) as worth against ``to_ms``: times
    ``2 ** ((from_ms - to_ms) / half_life_ms)``. Moving a forward-decay landmark, or
    reading a rank value at a time, is this."""
    return _native.decay_to(value, from_ms, to_ms, half_life_ms)


def cool_due_ms(state: LeadState, rules: RuleSet) -> int | None:
    """For a hot lead: the millisecond it will cool if no further event arrives (None when
    not hot, or when decay alone never takes it below ``cool``). The live worker's sweep
    indexes hot leads by this time."""
    if not state.hot:
        return None
    return rules.kernel.cool_due_ms(_pack(state, rules)[0])


def index_values(state: LeadState, rules: RuleSet, landmark_ms: int) -> tuple[int | None, float]:
    """:func:`cool_due_ms` and :func:`rank_bound` together, from one packing of the state
    (the live store indexes every lead it writes by both)."""
    packed = _pack(state, rules)[0]
    due = rules.kernel.cool_due_ms(packed) if state.hot else None
    return due, rules.kernel.rank_bound(packed, landmark_ms)


# --------------------------------------------------------------------------- transitions


def apply_event(
    state: LeadState | None,
    event: Scorable,
    rules: RuleSet,
    position: Position | None = None,
) -> Step:
    """Apply one (non-duplicate) event to a lead: steps 1-3 of the module docstring."""
    batch = _apply(state, [(event, position)], rules, check_duplicates=False)
    assert batch.state is not None
    return Step(batch.state, batch.crossings)


def apply_link(
    state: LeadState, link: Scorable, position: Position | None, rules: RuleSet
) -> LeadBatch:
    """Apply an identity link to a merged lead (:mod:`scoring.merge`): as an event that
    matches no rule, never skipped as a duplicate (the merge checked that)."""
    return _apply(state, [(link, position)], rules, check_duplicates=False)


def id_hash(event_id: str) -> int:
    """The 64-bit hash a dedupe window remembers an event id by."""
    return _native.id_hash(event_id)


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
        packed,
        rules,
        state.lead_id,
        unknown,
        state.landmark_ms,
        state.profile,
        state.positions,
        state.recent_ids,
        state.floor_ms,
    )
    return Step(new, tuple(make_crossings(raw, rules, state.lead_id, ())))


# --------------------------------------------------------------------------- batches


def is_tombstone(state: LeadState) -> bool:
    """Whether ``state`` is what an erasure leaves (no events since): positions, the
    floor and the crossing count, nothing personal. Stores may keep it apart from leads."""
    return state.events_applied == 0


@dataclass(frozen=True, slots=True)
class LeadBatch:
    """Result of applying one lead's events from a batch (what a store must persist)."""

    state: LeadState | None
    crossings: tuple[Crossing, ...]
    applied_event_ids: tuple[str, ...]
    duplicates: int


def apply_lead_events(
    state: LeadState | None,
    events: Iterable[tuple[Scorable, Position | None]],
    rules: RuleSet,
) -> LeadBatch:
    """Apply one lead's events in order, skipping duplicates: an ``event_id`` applied
    within the dedupe window (``state.recent_ids``, or earlier in this batch) or a message
    at or before the last applied offset of its partition (a redelivery). Both stores call
    this."""
    return _apply(state, events, rules, check_duplicates=True)


def _apply(
    state: LeadState | None,
    events: Iterable[tuple[Scorable, Position | None]],
    rules: RuleSet,
    *,
    check_duplicates: bool,
) -> LeadBatch:
    """Hand the lead's events to the core's one per-event orchestration
    (``Kernel.apply_lead``, ``native/src/engine.rs:accept``, which replay's lead table runs
    too): duplicates, positions and the state machine are decided there; rule matching and
    profile merges (called back for applied profile events) are Python."""
    items = list(events)
    if not items:
        return LeadBatch(state, (), (), 0)
    profile: Mapping[str, ProfileEntry] = {} if state is None else state.profile

    def on_profile(index: int) -> tuple[float, bool]:
        """An applied profile event (merge it) or erasure (forget the profile): the fit."""
        nonlocal profile
        event = items[index][0]
        if isinstance(event, LeadProfile):
            profile = merge_profile(profile, event, rules.profile_fields)
        else:
            profile = {}
        return lead_fit(profile, rules)

    rows = [
        (
            event.event_id,
            event.occurred_at_ms,
            rules.match(rule_event_of(event), event.field_value),
            _PROFILE
            if isinstance(event, LeadProfile)
            else CONTROL_KINDS.get(event.type, _BEHAVIOUR),
            None if position is None else (position.stream, position.offset),
            event.field_value("points") if event.type == SCORE_ADJUSTED else None,
        )
        for event, position in items
    ]
    packed_in: PackedLead | None = None
    unknown: dict[str, float] = {}
    old_landmark: int | None = None
    old_floor: int | None = None
    positions_in: list[tuple[str, int]] = []
    recent_in = b""
    if state is not None:
        recent_in = state.recent_ids
        packed_in, unknown = _pack(state, rules, lead_fit(state.profile, rules))
        old_landmark = state.landmark_ms
        old_floor = state.floor_ms
        positions_in = list(state.positions.items())
    packed, positions, applied, duplicates, raw, recent = rules.kernel.apply_lead(
        packed_in, positions_in, recent_in, rows, on_profile, check_duplicates
    )
    if not applied:
        return LeadBatch(state, (), (), duplicates)
    assert packed is not None
    lead_id = items[0][0].lead_id
    new = _unpack(
        packed, rules, lead_id, unknown, old_landmark, profile, dict(positions), recent, old_floor
    )
    trigger_ids = [event.event_id for event, _ in items]
    crossings = make_crossings(raw, rules, lead_id, trigger_ids)
    applied_ids = tuple(trigger_ids[i] for i in applied)
    return LeadBatch(new, tuple(crossings), applied_ids, duplicates)


def group_by_lead(
    items: Sequence[tuple[Scorable, Position | None]],
) -> dict[str, list[tuple[Scorable, Position | None]]]:
    """Split a batch per lead, keeping each lead's order (dicts keep first-seen order)."""
    groups: dict[str, list[tuple[Scorable, Position | None]]] = {}
    for item in items:
        groups.setdefault(item[0].lead_id, []).append(item)
    return groups
