"""The reference apply path: pydantic events, in read order, through one
:class:`scoring.store.MemoryStore` per rules file (the engine code of the live worker,
batch by batch), then the coolings due at the end time.

Slower than the native path (:mod:`streams.replay.fast`, what ``leadscore replay`` runs),
and the definition it is tested against; ``leadscore calibrate`` uses it for the held-out
backtest, since it has the events in memory anyway.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence

from schemas.events import LeadEvent
from scoring.profile import fit_grade
from scoring.rules import RuleSet
from scoring.state import LeadState
from scoring.state_machine import explain, score_at
from scoring.store import MemoryStore

from .results import NEVER, LeadRow, Replay, RuleRun, Span, gc_paused

#: Valid events handed to the store per ``apply_batch_sync`` call (the worker's default
#: micro-batch is 2000; results do not depend on the batch size).
BATCH_SIZE = 5000


class StatesView:
    """:class:`~streams.replay.results.LeadView` over :class:`LeadState` objects (a
    :class:`MemoryStore`)."""

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


class _Stores:
    """One :class:`MemoryStore` per run, fed in batches."""

    def __init__(
        self, runs: list[RuleRun], span: Span, batch_size: int, routed: bool = False
    ) -> None:
        self.runs = runs
        self.stores = [MemoryStore(run.rules, routed=routed) for run in runs]
        self.span = span
        self.batch_size = batch_size
        self.pending: list[tuple[LeadEvent, None]] = []

    def flush(self) -> None:
        """Apply the pending events, ``batch_size`` at a time, to every store."""
        started = time.perf_counter()
        pending, size = self.pending, self.batch_size
        for start in range(0, len(pending), size):
            items = pending[start : start + size]
            for run, store in zip(self.runs, self.stores, strict=True):
                result = store.apply_batch_sync(items)
                run.crossings.extend(result.crossings)
                run.applied += result.applied
                run.duplicates += result.duplicates
        self.span.apply_seconds += time.perf_counter() - started
        self.pending = []

    def snapshot(self) -> None:
        """Keep every store's states as they are now (the cut-off)."""
        self.flush()
        for run, store in zip(self.runs, self.stores, strict=True):
            run.snapshot = StatesView(dict(store.states), run.rules)

    def finish(self, end_ms: int | None) -> None:
        """Apply the rest, emit the coolings due at ``end_ms``, keep the final states."""
        self.flush()
        for run, store in zip(self.runs, self.stores, strict=True):
            if end_ms is not None:
                cooled = store.cool_due_sync(end_ms).crossings
                run.crossings.extend(cooled)
                run.cooled_at_end = len(cooled)
            run.final = StatesView(store.states, run.rules)


def replay_events(
    batches: Iterable[Sequence[LeadEvent]],
    rulesets: Sequence[RuleSet],
    *,
    at_ms: int | None = None,
    cutoff_ms: int | None = None,
    batch_size: int = BATCH_SIZE,
    routed: bool = False,
) -> Replay:
    """Apply events in order to one :class:`MemoryStore` per rule set, then emit the
    coolings due at the end time (``at_ms``, else the latest event time).

    * events with ``occurred_at > at_ms`` are skipped (and counted);
    * with ``cutoff_ms``, each store's states are kept (``RuleRun.snapshot``) just before
      the first event later than the cut-off is applied;
    * ``routed``: the events are the worker's identity topic (``MemoryStore(routed=)``).
    """
    runs = [RuleRun(rules) for rules in rulesets]
    span = Span()
    stores = _Stores(runs, span, batch_size, routed)
    limit = NEVER if at_ms is None else at_ms
    snapshot_after = NEVER if cutoff_ms is None else cutoff_ms
    with gc_paused():
        for batch in batches:
            if not batch:
                continue
            times = [event.occurred_at_ms for event in batch]
            low, high = min(times), max(times)
            if high <= limit and high <= snapshot_after:
                # The common case: nothing to skip, no snapshot to take in this chunk.
                stores.pending.extend(zip(batch, itertools.repeat(None)))
                span.saw(low, high)
            else:
                for event, occurred in zip(batch, times, strict=True):
                    if occurred > limit:
                        span.after_at += 1
                        continue
                    if occurred > snapshot_after:
                        stores.snapshot()
                        snapshot_after = NEVER
                    span.saw(occurred, occurred)
                    stores.pending.append((event, None))
            if len(stores.pending) >= batch_size:
                stores.flush()
        end_ms = span.end_ms(at_ms)
        stores.finish(end_ms)
    return span.replay(runs, at_ms, end_ms, cutoff_ms)
