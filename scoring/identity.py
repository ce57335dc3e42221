"""Identity: which lead an event counts for, and what happens when two ids turn out to be
one person. Pure, like the rest of :mod:`scoring`; the live worker runs it in two steps
with Kafka between them (docs/architecture.md, "Identity merges"), replay in one.

**Step 1, routing** (:func:`route`): every event goes to its *canonical* lead, found by
following the aliases (``absorbed id -> canonical id``) from its own lead id. A link makes
an alias:

* explicit, ``lead_linked`` (a Segment ``alias``: ``previousId`` -> ``userId``): the
  canonical lead of ``lead_id`` joins the canonical lead of ``canonical_id``, even when
  both are known leads;
* implicit, a ``lead_profile`` with ``anonymous_id`` (a Segment ``identify`` with both ids):
  the anonymous id joins the profile's lead, **only if that anonymous id has no alias
  yet**. A shared device that sends one anonymous id with two user ids gives its history
  to the first; two known leads are never merged implicitly.

Aliases are written first-wins (the store's ``SET NX``): a route whose alias write lost is
planned again on what won. Each alias made (or found already made by this event: a
redelivery) yields a *link*: ``lead_linked(lead_id=absorbed, canonical_id=canonical)``,
addressed to the absorbed lead. Chains (A->B, then B->C) resolve by following aliases, at
most :data:`MAX_HOPS`. An erasure (``lead_erased``, routed like any event) deletes every
alias that leads to the erased lead: the ids the person was known by start afresh.

**Step 2, applying** (:func:`apply_identity_items`, per lead, in order, wherever the
lead's state lives):

* a link at the absorbed lead *retires* it: its state becomes a tombstone (positions, its
  clock as floor, the crossing count; as after an erasure), and two records go out through
  the outbox: ``lead_merged`` (for downstream: drop this id, it is now ``canonical_id``)
  and ``lead_absorbed``, carrying the state, addressed to the canonical lead;
* ``lead_absorbed`` at the canonical lead merges the carried state in
  (:func:`scoring.merge.merge_leads`: decayed sums add, profiles and dedupe windows merge,
  the link is applied as an event, so a merge that takes the lead over ``hot`` emits
  ``lead_became_hot`` triggered by the link); a repeated one changes nothing;
* other events as always (:func:`scoring.state_machine.apply_lead_events`).

An event routed to a lead before its alias existed, and arriving after the lead was
retired, is *forwarded* by the store to the canonical lead (it sees the alias).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from schemas.events import (
    EVENT_ADAPTER,
    IDENTITY_TYPES,
    LEAD_ABSORBED,
    LEAD_ERASED,
    LEAD_LINKED,
    LeadEvent,
    LeadLinked,
    Scorable,
)
from schemas.times import ms_to_datetime

from .crossings import ABSORBED, Crossing, notice
from .merge import Link, merge_leads, merged_record
from .rules import RuleSet
from .state import LeadState, Position
from .state_machine import LeadBatch, apply_lead_events, is_tombstone

#: Aliases followed at most from one id (a longer chain is cut there).
MAX_HOPS = 16
#: Longest event id (``schemas.events.EventId``): a link's id is derived from its event's.
MAX_EVENT_ID = 128

EventItem = tuple[Scorable, Position | None]


# --------------------------------------------------------------------------- step 1


@dataclass(frozen=True, slots=True)
class Routed:
    """An event for its canonical lead (``lead_id``; the event's own may differ)."""

    event: Scorable
    lead_id: str


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """``absorbed`` joins ``canonical``: the ``lead_linked`` event step 2 applies at the
    absorbed lead."""

    event_id: str
    absorbed: str
    canonical: str
    occurred_at_ms: int

    def event(self) -> dict[str, Any]:
        """As a ``lead_linked`` event (JSON-able, ``occurred_at`` left to the caller)."""
        return {
            "event_id": self.event_id,
            "type": LEAD_LINKED,
            "lead_id": self.absorbed,
            "canonical_id": self.canonical,
        }


@dataclass(slots=True)
class Plan:
    """Step 1's result for a batch: what to send on, in order, and the aliases to write
    (first-wins) before sending it."""

    out: list[Routed | LinkRecord] = field(default_factory=list)
    writes: dict[str, str] = field(default_factory=dict)
    #: Erased leads: every alias that leads to them is deleted (once ``out`` is sent).
    forget: list[str] = field(default_factory=list)
    #: Aliases that closed a cycle (:func:`resolve`): deleted if they still hold the value.
    repairs: dict[str, str] = field(default_factory=dict)


def ids_to_resolve(events: Sequence[Scorable]) -> set[str]:
    """Every id whose alias step 1 needs for ``events`` (then follow what they point to)."""
    ids: set[str] = set()
    for event in events:
        ids.add(event.lead_id)
        for name in ("canonical_id", "anonymous_id"):
            other = event.field_value(name)
            if isinstance(other, str) and other:
                ids.add(other)
    return ids


class _Known:
    """The aliases as a route sees them: the store's (read-only), overlaid with what this
    route wrote or deleted (no copy of a replay's whole table per batch)."""

    def __init__(self, base: Mapping[str, str]) -> None:
        self.base = base
        self.over: dict[str, str | None] = {}

    def get(self, lead: str) -> str | None:
        return self.over[lead] if lead in self.over else self.base.get(lead)

    def set(self, lead: str, into: str | None) -> None:
        self.over[lead] = into

    def ids(self) -> list[str]:
        return [k for k in {*self.base, *self.over} if self.get(k) is not None]


def resolve(lead: str, aliases: Mapping[str, str] | _Known) -> tuple[list[str], dict[str, str]]:
    """``lead``'s path to its canonical lead (the last id), and the aliases that close a
    cycle, to delete: two workers may link A into B and B into A at once (different keys,
    both first); the smallest id of a cycle keeps no alias, so every worker breaks it the
    same way. A path longer than :data:`MAX_HOPS` is cut there."""
    get = aliases.get
    repairs: dict[str, str] = {}
    hops = [lead]
    while len(hops) <= MAX_HOPS:
        nxt = get(hops[-1])
        if nxt is None:
            break
        if nxt in hops:
            smallest = min(hops[hops.index(nxt) :])
            repairs[smallest] = str(get(smallest))
            hops = hops[: hops.index(smallest) + 1]
            break
        hops.append(nxt)
    return hops, repairs


def route(events: Sequence[Scorable], aliases: Mapping[str, str]) -> Plan:
    """Step 1 on ``events`` in order, given the aliases known (``id -> id``, at least those
    of :func:`ids_to_resolve` and what they point to)."""
    known = _Known(aliases)
    plan = Plan()

    def path(lead: str) -> list[str]:
        hops, repairs = resolve(lead, known)
        for broken, value in repairs.items():
            known.set(broken, None)
            plan.repairs.setdefault(broken, value)
        return hops

    def canonical(lead: str) -> str:
        return path(lead)[-1]

    def link(source: str, into: str, event: Scorable) -> None:
        """``source``'s canonical lead joins ``into`` (first-wins), and a link for every id
        on ``source``'s path that is not ``into``: the absorbed ones (a redelivery, after
        the alias was written, sends them again: harmless)."""
        top = canonical(source)
        if top != into:
            known.set(top, into)
            plan.writes[top] = into
        for node in path(source)[:-1]:
            plan.out.append(LinkRecord(link_id(event.event_id, node), node, into, _ms(event)))

    def erase(lead: str) -> None:
        """The person is forgotten: the ids that led to ``lead`` are new leads from now."""
        for alias in [a for a in known.ids() if canonical(a) == lead]:
            known.set(alias, None)
            plan.writes.pop(alias, None)
        plan.forget.append(lead)

    for event in events:
        if event.type == LEAD_ERASED:
            lead = canonical(event.lead_id)
            plan.out.append(Routed(event, lead))
            erase(lead)
            continue
        if event.type == LEAD_LINKED:
            link(event.lead_id, canonical(str(event.field_value("canonical_id"))), event)
            continue
        lead = canonical(event.lead_id)
        plan.out.append(Routed(event, lead))  # (before its links: live, the merge comes later)
        anonymous = event.field_value("anonymous_id")
        # Only an anonymous id without an alias joins (or one that joined this very lead
        # before: a redelivery); one that belongs to another lead stays there.
        if (
            isinstance(anonymous, str)
            and anonymous
            and anonymous != lead
            and (known.get(anonymous) is None or canonical(anonymous) == lead)
        ):
            link(anonymous, lead, event)
    return plan


def _ms(event: Scorable) -> int:
    return event.occurred_at_ms


def link_id(event_id: str, absorbed: str) -> str:
    """The id of the link an event makes for ``absorbed``: unique per event and id, stable
    across redeliveries."""
    candidate = f"{event_id}>{absorbed}"
    if len(candidate) <= MAX_EVENT_ID:
        return candidate
    return "link:" + hashlib.sha256(candidate.encode()).hexdigest()[:40]


# --------------------------------------------------------------------------- step 2


def is_identity_event(event: Scorable) -> bool:
    return event.type in IDENTITY_TYPES


def apply_identity_items(
    state: LeadState | None, items: Sequence[EventItem], rules: RuleSet
) -> tuple[LeadBatch, list[EventItem]]:
    """One lead's items in order (step 2 of the module docstring). Both stores call this
    for a lead whose items include an identity event. Returns the result and, once a
    link retired the lead, the items after it: they go where it went (the link's
    ``canonical_id``), not here."""
    crossings: list[Crossing] = []
    applied: list[str] = []
    duplicates = 0
    start = 0
    for i, (event, position) in enumerate([*items, (None, None)]):
        if event is not None and not is_identity_event(event):
            continue
        if start < i:
            part = apply_lead_events(state, items[start:i], rules)
        elif event is None:
            break
        else:
            part = LeadBatch(state, (), (), 0)
        if event is not None:
            part = _then(part, _identity_step(part.state, event, position, rules))
        state = part.state
        crossings += part.crossings
        applied += part.applied_event_ids
        duplicates += part.duplicates
        start = i + 1
        if event is not None and event.type == LEAD_LINKED and state is not None and state.retired:
            rest = [item for item in items[start:] if item[0].type != LEAD_LINKED]
            return LeadBatch(state, tuple(crossings), tuple(applied), duplicates), rest
    return LeadBatch(state, tuple(crossings), tuple(applied), duplicates), []


def apply_or_forward(
    state: LeadState | None, alias: str | None, items: Sequence[EventItem], rules: RuleSet
) -> tuple[LeadBatch, list[tuple[EventItem, str]]]:
    """Step 2 for one lead of a store that read its alias with its state (live): a retired
    lead (a tombstone a link left, with an alias: one an erasure forgot applies its
    events as a fresh lead's) forwards its events; otherwise they are applied,
    and those after a link that retires it now are forwarded. Returns the result and
    the events to forward, each with where."""
    if alias is not None and state is not None and state.retired:
        late, duplicates = late_items(state, items)
        return LeadBatch(state, (), (), duplicates), [(item, alias) for item in late]
    if not any(is_identity_event(event) for event, _ in items):
        return apply_lead_events(state, items, rules), []
    batch, rest = apply_identity_items(state, items, rules)
    links = [e.field_value("canonical_id") for e, _ in items if e.type == LEAD_LINKED]
    return batch, [(item, str(links[0])) for item in rest] if rest else []


def late_items(
    tombstone: LeadState | None, items: Sequence[EventItem]
) -> tuple[list[EventItem], int]:
    """A retired lead's events to forward (links aside: no-ops now), and how many are
    duplicates: at or before an offset its tombstone keeps (a redelivered batch whose
    events were absorbed with the lead)."""
    late: list[EventItem] = []
    duplicates = 0
    for event, position in items:
        if event.type == LEAD_LINKED:
            continue
        done = (
            -1
            if tombstone is None or position is None
            else tombstone.positions.get(position.stream, -1)
        )
        if position is not None and position.offset <= done:
            duplicates += 1
        else:
            late.append((event, position))
    return late, duplicates


def _then(first: LeadBatch, second: LeadBatch) -> LeadBatch:
    return LeadBatch(
        second.state,
        first.crossings + second.crossings,
        first.applied_event_ids + second.applied_event_ids,
        first.duplicates + second.duplicates,
    )


def _identity_step(
    state: LeadState | None, event: Scorable, position: Position | None, rules: RuleSet
) -> LeadBatch:
    if event.type == LEAD_ABSORBED:
        if (
            state is not None
            and is_tombstone(state)
            and event.occurred_at_ms <= (state.floor_ms or 0)
        ):
            # erased after the link (the absorb overtook by the erasure): it stays erased
            return LeadBatch(state, (), (), 1)
        absorbed = LeadState.from_dict({**event.field_value("state"), "positions": {}})
        link = Link(
            event_id=str(event.field_value("link_event_id")),
            lead_id=event.lead_id,
            absorbed_id=absorbed.lead_id,
            occurred_at_ms=event.occurred_at_ms,
        )
        return merge_leads(state, absorbed, link, rules, position).canonical
    return retire(state, event, position, rules)


def retire(
    state: LeadState | None, event: Scorable, position: Position | None, rules: RuleSet
) -> LeadBatch:
    """A link at the absorbed lead: its tombstone (marked *retired*), ``lead_merged`` and
    ``lead_absorbed``. A lead without a state, or with a tombstone (erased), is marked
    retired alone: its events routed before the alias existed, arriving later, are
    forwarded. A link applied before changes nothing."""
    into = str(event.field_value("canonical_id"))
    if state is not None and (state.retired or into == state.lead_id):
        return LeadBatch(state, (), (), 0)
    if state is None or is_tombstone(state):
        t = event.occurred_at_ms if state is None else max(state.clock_ms, event.occurred_at_ms)
        positions = {} if state is None else dict(state.positions)
        if position is not None:
            positions[position.stream] = max(positions.get(position.stream, -1), position.offset)
        stone = LeadState(
            event.lead_id,
            t,
            t,
            crossings=0 if state is None else state.crossings,
            positions=positions,
            floor_ms=t,
            retired=True,
        )
        return LeadBatch(stone, (), (event.event_id,), 0)
    if position is not None and state.positions.get(position.stream, -1) >= position.offset:
        return LeadBatch(state, (), (), 1)
    link = Link(event.event_id, into, state.lead_id, event.occurred_at_ms)
    t = max(event.occurred_at_ms, state.clock_ms)
    merged = merged_record(state, link, rules, t)
    sequence = state.crossings + 1
    absorbed = notice(
        ABSORBED, state.lead_id, t, sequence, event.event_id, rules.version, into, _carried(state)
    )
    positions = dict(state.positions)
    if position is not None:
        positions[position.stream] = position.offset
    tombstone = LeadState(
        lead_id=state.lead_id,
        clock_ms=t,
        landmark_ms=t,
        crossings=sequence + 1,
        retired=True,
        positions=positions,
        floor_ms=t,
    )
    return LeadBatch(tombstone, (merged, absorbed), (event.event_id,), 0)


# --------------------------------------------------------------------------- both steps


def rekey(event: Scorable, lead_id: str) -> Scorable:
    """``event`` for lead ``lead_id`` (a pydantic event or the native decoder's)."""
    if isinstance(event, BaseModel):
        return event.model_copy(update={"lead_id": lead_id})
    return dataclasses.replace(event, lead_id=lead_id)  # type: ignore[type-var]


def link_event(record: LinkRecord) -> LeadLinked:
    """A link of step 1 as the event step 2 applies."""
    return LeadLinked(
        event_id=record.event_id,
        type="lead_linked",
        lead_id=record.absorbed,
        canonical_id=record.canonical,
        occurred_at=ms_to_datetime(record.occurred_at_ms),
    )


def absorbed_event(crossing: Crossing) -> LeadEvent:
    """A ``lead_absorbed`` crossing as the event the canonical lead applies."""
    return EVENT_ADAPTER.validate_python(crossing.absorbed_event())


class Router:
    """Step 1 in one process (replay): aliases in a dict, written as they are made."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}

    def route(self, events: Sequence[Scorable]) -> list[Scorable]:
        plan = route(events, self.aliases)
        for broken in plan.repairs:
            self.aliases.pop(broken, None)
        self.aliases.update(plan.writes)
        for lead in plan.forget:
            self.forget(lead)
        return [
            link_event(r) if isinstance(r, LinkRecord) else rekey(r.event, r.lead_id)
            for r in plan.out
        ]

    def forget(self, lead: str) -> None:
        forget_aliases(self.aliases, lead)


#: Largest record of the worker's identity topic: its own, and a ``lead_absorbed``
#: carries a whole state (up to :data:`MAX_CARRIED_IDS` event ids); Kafka's default
#: message limit. Step 2 and ``leadscore replay --routed`` read up to this.
IDENTITY_RECORD_MAX_BYTES = 1_048_576
#: Event ids of an absorbed lead's dedupe window carried to the canonical lead at most
#: (the newest): bounds a ``lead_absorbed`` record (16 bytes, 32 hex digits an id).
MAX_CARRIED_IDS = 8192


def _carried(state: LeadState) -> dict[str, Any]:
    """``state`` as a ``lead_absorbed`` record carries it: no positions (the canonical
    lead keeps its own), at most :data:`MAX_CARRIED_IDS` event ids (the newest)."""
    data = {**state.to_dict(), "positions": {}}
    recent = state.recent_ids
    if len(recent) > 16 * MAX_CARRIED_IDS:
        entries = sorted(
            (recent[i : i + 16] for i in range(0, len(recent), 16)),
            key=lambda e: int.from_bytes(e[8:], "little", signed=True),
        )
        data["recent_ids"] = b"".join(entries[-MAX_CARRIED_IDS:]).hex()
    return data


def forget_aliases(aliases: dict[str, str], lead: str) -> None:
    """Delete from ``aliases`` every alias that leads to ``lead`` (an erasure)."""
    gone = {lead}
    while True:
        more = [a for a, b in aliases.items() if b in gone]
        if not more:
            return
        for alias in more:
            del aliases[alias]
        gone.update(more)
