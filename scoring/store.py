"""Lead stores: where lead states live between events.

:class:`LeadStore` is the interface the live worker programs against. Two implementations
share every bit of scoring math (:func:`scoring.state_machine.apply_lead_events`
and :func:`scoring.state_machine.advance`); they differ only in where states are kept:

* :class:`MemoryStore` (here): a dict; the reference replay path
  (``streams/replay/reference.py``), calibration, tests.
* ``streams.live.redis_store.RedisStore``: Redis, atomic per lead, crash-safe; the live worker.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from schemas.events import LEAD_LINKED, Scorable

from .crossings import ABSORBED, ERASED, Crossing
from .identity import (
    absorbed_event,
    apply_identity_items,
    forget_aliases,
    is_identity_event,
    late_items,
    rekey,
    resolve,
)
from .rules import RuleSet
from .state import LeadState, Position
from .state_machine import (
    advance,
    apply_lead_events,
    cool_due_ms,
    group_by_lead,
    score_at,
)

EventItem = tuple[Scorable, Position | None]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What applying a batch did."""

    crossings: tuple[Crossing, ...] = ()
    applied: int = 0
    duplicates: int = 0
    #: Events of retired leads (identity merges), not applied: each with the lead it
    #: goes to now (the live worker sends them on through its identity topic).
    forwarded: tuple[tuple[EventItem, str], ...] = ()


class LeadStore(Protocol):
    """Lead state storage plus the engine: the one interface both stores implement."""

    rules: RuleSet

    async def apply_batch(self, items: Sequence[EventItem]) -> BatchResult:
        """Apply events (any leads, each lead's order kept); skip duplicates."""
        ...

    async def get(self, lead_id: str) -> LeadState | None:
        """A lead's state, or None if never seen."""
        ...

    async def cool_due(
        self, until_ms: int, limit_for: Callable[[LeadState], int | None] | None = None
    ) -> BatchResult:
        """Emit ``lead_cooled`` for every hot lead whose score decayed below ``cool`` by
        ``until_ms`` (the cooling sweep / the end of a replay). ``limit_for(state)`` may
        cap that time per lead (None: skip the lead)."""
        ...

    async def top(self, n: int, at_ms: int) -> list[tuple[str, float]]:
        """The ``n`` highest-scoring leads at ``at_ms``, highest first."""
        ...


@dataclass(slots=True)
class _Totals:
    crossings: list[Crossing] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0

    def add(self, result: BatchResult) -> None:
        self.crossings += result.crossings
        self.applied += result.applied
        self.duplicates += result.duplicates

    def result(self) -> BatchResult:
        return BatchResult(tuple(self.crossings), self.applied, self.duplicates)


class MemoryStore:
    """In-memory :class:`LeadStore`. Synchronous ``*_sync`` methods for the reference
    replay path and calibration; the async methods satisfy the interface."""

    def __init__(self, rules: RuleSet, *, routed: bool = False) -> None:
        self.rules = rules
        self.states: dict[str, LeadState] = {}
        #: Retired (linked) lead -> the lead it joined: where its late events go.
        self.aliases: dict[str, str] = {}
        #: The events are the live worker's identity topic: its ``lead_absorbed`` records
        #: and forwarded events are in it, applied where they stand (as live); otherwise
        #: a link's merge and a retired lead's late events are applied at once.
        self.routed = routed

    # -- synchronous core
    def apply_batch_sync(self, items: Sequence[EventItem]) -> BatchResult:
        """Apply ``items``; an identity event (``scoring.identity``) takes effect where it
        stands: what precedes it first, then it (and the merge it makes), then the rest."""
        out = _Totals()
        start = 0
        for i, (event, _) in enumerate(items):
            if is_identity_event(event):
                out.add(self._apply_groups(items[start:i]))
                out.add(self._apply_groups(items[i : i + 1]))
                start = i + 1
        out.add(self._apply_groups(items[start:] if start else items))
        return out.result()

    def _apply_groups(self, items: Sequence[EventItem]) -> BatchResult:
        out = _Totals()
        absorbed: list[Crossing] = []
        forward: list[EventItem] = []
        for lead_id, lead_items in group_by_lead(items).items():
            state = self.states.get(lead_id)
            if lead_id in self.aliases and state is not None and state.retired:
                # retired: its events go where it went (skipped duplicates aside)
                late, out.duplicates = self._late(state, lead_items, out.duplicates)
                forward += late
                continue
            rest: list[EventItem] = []
            if any(is_identity_event(event) for event, _ in lead_items):
                result, rest = apply_identity_items(state, lead_items, self.rules)
                for event, _ in lead_items:  # (live: the identity stage wrote the alias)
                    into = event.field_value("canonical_id")
                    if event.type == LEAD_LINKED and into != lead_id:
                        self.aliases[lead_id] = str(into)
            else:
                result = apply_lead_events(state, lead_items, self.rules)
            if result.state is not None:
                self.states[lead_id] = result.state
            for c in result.crossings:
                (absorbed if c.kind == ABSORBED else out.crossings).append(c)
                if c.kind == ERASED:  # (live: the identity stage deletes them)
                    forget_aliases(self.aliases, lead_id)
            out.applied += len(result.applied_event_ids)
            out.duplicates += result.duplicates
            forward += self._late(None, rest, 0)[0]
        if not self.routed:  # (routed: the topic holds the absorbs)
            forward += [(absorbed_event(c), None) for c in absorbed]
        if forward:
            out.add(self._apply_groups(forward))
        return out.result()

    def _late(
        self, tombstone: LeadState | None, items: Sequence[EventItem], duplicates: int
    ) -> tuple[list[EventItem], int]:
        """A retired lead's events, for the lead it joined (none when routed: live
        forwarded them, and the copies come later in the topic)."""
        late, more = late_items(tombstone, items)
        if self.routed:
            return [], duplicates + more
        into = [(rekey(e, self.canonical(e.lead_id)), p) for e, p in late]
        return into, duplicates + more

    def canonical(self, lead_id: str) -> str:
        """Where a retired lead's events go now (following its aliases)."""
        return resolve(lead_id, self.aliases)[0][-1]

    def cool_due_sync(self, until_ms: int, lead_ids: Iterable[str] | None = None) -> BatchResult:
        crossings: list[Crossing] = []
        ids = self.states.keys() if lead_ids is None else lead_ids
        for lead_id in sorted(ids):
            state = self.states.get(lead_id)
            if state is None or not state.hot:
                continue
            step = advance(state, self.rules, until_ms)
            self.states[lead_id] = step.state
            crossings.extend(step.crossings)
        crossings.sort(key=lambda c: (c.occurred_at_ms, c.lead_id))
        return BatchResult(tuple(crossings))

    def top_sync(self, n: int, at_ms: int) -> list[tuple[str, float]]:
        scored = ((score_at(s, self.rules, at_ms), lead_id) for lead_id, s in self.states.items())
        return [(lead_id, score) for score, lead_id in heapq.nlargest(n, scored)]

    def cool_due_index(self) -> dict[str, int]:
        """Hot lead -> the millisecond it cools without further events (for inspection)."""
        due = {k: cool_due_ms(s, self.rules) for k, s in self.states.items() if s.hot}
        return {k: v for k, v in due.items() if v is not None}

    # -- LeadStore
    async def apply_batch(self, items: Sequence[EventItem]) -> BatchResult:
        return self.apply_batch_sync(items)

    async def get(self, lead_id: str) -> LeadState | None:
        return self.states.get(lead_id)

    async def cool_due(
        self, until_ms: int, limit_for: Callable[[LeadState], int | None] | None = None
    ) -> BatchResult:
        if limit_for is None:
            return self.cool_due_sync(until_ms)
        crossings: list[Crossing] = []
        for lead_id in sorted(self.states):
            limit = limit_for(self.states[lead_id])
            if limit is not None:
                crossings += self.cool_due_sync(min(limit, until_ms), [lead_id]).crossings
        crossings.sort(key=lambda c: (c.occurred_at_ms, c.lead_id))
        return BatchResult(tuple(crossings))

    async def top(self, n: int, at_ms: int) -> list[tuple[str, float]]:
        return self.top_sync(n, at_ms)
