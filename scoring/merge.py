"""Identity merges: an absorbed lead (an anonymous visitor) folded into a canonical one
(the known person), as ``(state, state, link) -> (state, outputs)``, pure like the rest
of :mod:`scoring`.

At the link's time ``t`` (its ``occurred_at``, or the later of the two clocks):

1. the canonical lead's own decay runs up to ``t`` (:func:`~scoring.state_machine.advance`:
   a hot lead that had cooled by then cools, as at any event);
2. the two states add up: forward-decayed sums rule by rule (forward decay is linear:
   both are re-based to the later landmark; sums of rules no longer in the file are
   dropped), profiles field by field (the newer stamp wins, as for profile events),
   dedupe windows united, both event counts. The canonical lead keeps its own offsets
   and reset floor; an absorbed lead whose every event is dated at or before that floor
   adds no points (one with events on both sides adds all of them: sums cannot be split
   by time, so a merge across a reset is exact only then);
3. the link is applied to the sum as an event that matches no rule: it moves the clock to
   ``t``, is remembered like any event (its id and offset), and runs step 3 of the state
   machine, so a merge that takes the canonical lead over ``hot`` emits
   ``lead_became_hot`` triggered by the link;
4. the absorbed lead gets a ``lead_merged`` record naming the canonical id, so that
   downstream copies drop it (:attr:`Merge.record`: the caller writes it under the
   absorbed lead, whose record it is).

A link already applied changes nothing (a retried merge is harmless).

The score after a merge is the sum of both scores at ``t`` (up to rounding and caps,
which apply to the sum): merging is order-independent for scores, and merging then
applying an event equals applying it then merging (``tests/unit/test_merge.py``).
How the live worker gets both states to one place is docs/architecture.md's
"Identity merges" plan.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from schemas.events import LEAD_LINKED

from .crossings import MERGED, Crossing, notice
from .rules import RuleSet
from .state import LeadState, Position, ProfileEntry
from .state_machine import LeadBatch, advance, apply_link, decay_to, id_hash

#: The type of the link event the merge applies (reserved: no rule may name it).
LINK_TYPE = LEAD_LINKED


@dataclass(frozen=True, slots=True)
class Link:
    """The event that links two ids (a Segment ``alias``, an ``identify`` with both
    ids), as the merge applies it to the canonical lead."""

    event_id: str
    #: The canonical lead (the one that stays).
    lead_id: str
    #: The absorbed lead.
    absorbed_id: str
    occurred_at_ms: int
    type: str = LINK_TYPE

    def field_value(self, name: str) -> Any:
        return None


@dataclass(frozen=True, slots=True)
class Merge:
    """What a merge yields: the canonical lead's new state and crossings (to be written
    like any lead's), and the absorbed lead's ``lead_merged`` record (its own: it goes out
    under the absorbed id)."""

    canonical: LeadBatch
    record: Crossing


def merge_leads(
    canonical: LeadState | None,
    absorbed: LeadState,
    link: Link,
    rules: RuleSet,
    position: Position | None = None,
) -> Merge:
    """The canonical lead after absorbing ``absorbed`` (see the module docstring). A link
    already applied (its id in the canonical lead's dedupe window, or its offset at or
    before the canonical lead's last one) changes nothing: merging is idempotent."""
    t = max(link.occurred_at_ms, absorbed.clock_ms, canonical.clock_ms if canonical else 0)
    record = merged_record(absorbed, link, rules, t)
    if canonical is not None and _already_applied(canonical, link, position):
        return Merge(LeadBatch(canonical, (), (), 1), record)
    cooled: tuple[Crossing, ...] = ()
    if canonical is not None:
        step = advance(canonical, rules, t)
        canonical, cooled = step.state, step.crossings
    merged = _add(canonical, absorbed, rules, link.lead_id, t)
    # The link is applied whatever the floor (dated just after it if need be) and the
    # offsets (checked above): the merge has happened, its event must be remembered.
    floor = merged.floor_ms if merged.floor_ms is not None else t - 1
    at = replace(link, occurred_at_ms=max(t, floor + 1))
    applied = apply_link(merged, at, position, rules)
    return Merge(
        LeadBatch(
            applied.state,
            (*cooled, *applied.crossings),
            applied.applied_event_ids,
            applied.duplicates,
        ),
        record,
    )


def _already_applied(canonical: LeadState, link: Link, position: Position | None) -> bool:
    if position is not None and canonical.positions.get(position.stream, -1) >= position.offset:
        return True
    wanted = id_hash(link.event_id)
    recent = canonical.recent_ids
    return any(struct.unpack_from("<Q", recent, i)[0] == wanted for i in range(0, len(recent), 16))


def _add(
    canonical: LeadState | None, absorbed: LeadState, rules: RuleSet, lead_id: str, t: int
) -> LeadState:
    """Step 2: both states as one, its clock at ``t``."""
    states = [s for s in (canonical, absorbed) if s is not None]
    landmark = max(s.landmark_ms for s in states)
    sums: dict[str, float] = {}
    floor = canonical.floor_ms if canonical is not None else None
    for state in states:
        if state is absorbed and floor is not None and absorbed.clock_ms <= floor:
            continue  # everything it did is dated before the canonical lead's reset
        for rule_id, acc in state.sums.items():
            params = rules.decay_params.get(rule_id)
            if params is None:
                continue  # a rule no longer in the file counts 0
            value = decay_to(acc, state.landmark_ms, landmark, params[0])
            sums[rule_id] = sums.get(rule_id, 0.0) + value
    return LeadState(
        lead_id=lead_id,
        clock_ms=t,
        landmark_ms=landmark,
        sums=sums,
        hot=canonical is not None and canonical.hot,
        crossings=0 if canonical is None else canonical.crossings,
        profile=_newest(*(s.profile for s in states)),
        # (the canonical lead's only: the absorbed lead's partitions are not its own, and
        # its event ids are in the window)
        positions={} if canonical is None else dict(canonical.positions),
        events_applied=sum(s.events_applied for s in states),
        recent_ids=b"".join(s.recent_ids for s in states),
        floor_ms=None if canonical is None else canonical.floor_ms,
    )


def _newest(*profiles: Mapping[str, ProfileEntry]) -> dict[str, ProfileEntry]:
    """Field by field, the entry with the newest stamp (ties: the larger event id)."""
    out: dict[str, ProfileEntry] = {}
    for profile in profiles:
        for name, entry in profile.items():
            kept = out.get(name)
            if kept is None or (entry[0], entry[1]) > (kept[0], kept[1]):
                out[name] = entry
    return out


def merged_record(absorbed: LeadState, link: Link, rules: RuleSet, t: int) -> Crossing:
    """The absorbed lead's ``lead_merged`` record."""
    sequence = absorbed.crossings
    return notice(MERGED, absorbed.lead_id, t, sequence, link.event_id, rules.version, link.lead_id)
