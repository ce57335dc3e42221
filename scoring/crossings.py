"""Threshold crossings: what the state machine emits when a lead turns hot or cools, how
each gets its deterministic id, and how it becomes an output record.

A crossing's id is ``uuid5(rules version, lead, kind, occurred_at, crossing number)``: the
same crossing always gets the same id, live or replayed, first try or after a crash, so
consumers de-duplicate on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from schemas.outputs import (
    HotLeadEvent,
    LeadBecameHot,
    LeadCooled,
    LeadErased,
    LeadMerged,
    Reason,
)
from schemas.times import ms_to_datetime

from . import _native
from .rules import RuleSet

#: Namespace of crossing ids (uuid5). Changing it changes every id: don't.
CROSSING_ID_NAMESPACE = uuid.UUID("5d0f8a3e-6b1c-4f4e-9a51-1e3c2b7d9f10")

#: How many rules a crossing's ``reasons`` lists (the core picks them).
TOP_REASONS: int = _native.TOP_REASONS

CrossingKind = Literal[
    "lead_became_hot", "lead_cooled", "lead_erased", "lead_merged", "lead_absorbed"
]
#: The kinds of an erasure's and an identity merge's records (not threshold crossings;
#: counted apart).
ERASED: CrossingKind = "lead_erased"
MERGED: CrossingKind = "lead_merged"
#: Not a record for downstream: a linked lead's state on its way to its canonical lead
#: (``scoring.identity``), which takes the outbox too, to the worker's identity topic.
ABSORBED: CrossingKind = "lead_absorbed"

#: (became_hot, at_ms, score, sequence, trigger index, [(rule index, points)], fit_score,
#: fit_allows_hot, erased): a crossing as the native core reports it.
RawCrossing = tuple[bool, int, float, int, int | None, list[tuple[int, float]], float, bool, bool]


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold crossing: becomes a ``lead_became_hot`` / ``lead_cooled`` record; or
    an erasure (``lead_erased``, no score, threshold or reasons), which takes the same way
    out (outbox, hot topic) so that it is delivered exactly like them."""

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
    #: ``lead_merged``, ``lead_absorbed``: the canonical lead that absorbed this one.
    merged_into: str | None = None
    #: ``lead_absorbed``: the absorbed lead's state (``LeadState.to_dict``).
    payload: Mapping[str, Any] | None = None

    def absorbed_event(self) -> dict[str, Any]:
        """A ``lead_absorbed`` crossing as the ``lead_absorbed`` event the canonical
        lead's owner applies (``schemas.events.LeadAbsorbed``, JSON-able)."""
        assert self.kind == ABSORBED and self.merged_into is not None
        assert self.trigger_event_id is not None and self.payload is not None
        return {
            "event_id": self.event_id,
            "type": ABSORBED,
            "lead_id": self.merged_into,
            "occurred_at": ms_to_datetime(self.occurred_at_ms).isoformat(),
            "absorbed_id": self.lead_id,
            "link_event_id": self.trigger_event_id,
            "state": dict(self.payload),
        }

    def to_record(self, emitted_at: datetime) -> HotLeadEvent:
        """The output record, stamped with the (caller's) wall-clock ``emitted_at``."""
        if self.kind == ABSORBED:
            raise ValueError("lead_absorbed goes to the identity topic: see absorbed_event")
        if self.kind in (MERGED, ERASED):  # no score, threshold or reasons
            assert self.trigger_event_id is not None
            notice = {
                "event_id": self.event_id,
                "lead_id": self.lead_id,
                "occurred_at": ms_to_datetime(self.occurred_at_ms),
                "trigger_event_id": self.trigger_event_id,
                "rules_version": self.rules_version,
                "emitted_at": emitted_at,
            }
            if self.kind == ERASED:
                return LeadErased(**notice)
            assert self.merged_into is not None
            return LeadMerged(**notice, merged_into=self.merged_into)
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
    for optional in ("merged_into", "payload"):
        if data[optional] is None:
            del data[optional]  # (the format an older leadscore reads)
    data["reasons"] = [r.model_dump() for r in crossing.reasons]
    return data


def crossing_from_dict(data: Mapping[str, Any]) -> Crossing:
    """Inverse of :func:`crossing_to_dict`."""
    fields = dict(data)
    fields["reasons"] = tuple(Reason.model_validate(r) for r in data["reasons"])
    return Crossing(**fields)


def notice(
    kind: CrossingKind,
    lead_id: str,
    at_ms: int,
    sequence: int,
    trigger_event_id: str | None,
    rules_version: str,
    merged_into: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Crossing:
    """A record that is no threshold crossing (``lead_erased``, ``lead_merged``,
    ``lead_absorbed``): no score, threshold or reasons; its id like a crossing's."""
    return Crossing(
        kind=kind,
        event_id=crossing_id(rules_version, lead_id, kind, at_ms, sequence),
        lead_id=lead_id,
        score=0.0,
        threshold=0.0,
        occurred_at_ms=at_ms,
        trigger_event_id=trigger_event_id,
        reasons=(),
        fit_grade=None,
        rules_version=rules_version,
        merged_into=merged_into,
        payload=payload,
    )


def crossing_id(rules_version: str, lead_id: str, kind: str, at_ms: int, sequence: int) -> str:
    """Deterministic id of a crossing: the same crossing always gets the same id."""
    name = f"{rules_version}\x1f{lead_id}\x1f{kind}\x1f{at_ms}\x1f{sequence}"
    return str(uuid.uuid5(CROSSING_ID_NAMESPACE, name))


def make_crossing(
    raw: RawCrossing, rules: RuleSet, lead_id: str, trigger_event_id: str | None
) -> Crossing:
    """Dress a crossing of the core: id, reasons with rule ids, grade, fit reason."""
    became_hot, at_ms, score, sequence, _, parts, fit_points, allows, erased = raw
    ids = rules.rule_ids
    thresholds = rules.thresholds
    kind: CrossingKind = "lead_became_hot" if became_hot else "lead_cooled"
    if erased:
        return notice(ERASED, lead_id, at_ms, sequence, trigger_event_id, rules.version)
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
