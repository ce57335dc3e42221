"""What an apply path produces, and the bookkeeping both paths share while producing it.

* :class:`RuleRun`: one rules file's replay (its crossings and counts, its lead states at
  the end and at the cut-off, as a :class:`LeadView`); :class:`Replay`: every run plus the
  event-time span;
* :class:`Span`: what both apply loops track (span, events after ``--at``, time spent),
  turned into the :class:`Replay` at the end;
* :func:`gc_paused`: the memory policy of a replay.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from scoring.crossings import Crossing
from scoring.rules import RuleSet

#: Later than any event time (ms): "no limit".
NEVER = 1 << 62

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
    """Result of an apply path (``replay_events`` or ``replay_sources``)."""

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
    #: Seconds spent applying (wall clock).
    apply_seconds: float = 0.0


@dataclass(slots=True)
class Span:
    """What both apply loops track while applying: the event-time span, events after
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
