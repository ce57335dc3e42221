"""The native decay arithmetic (``scoring._native``), wrapped for tests: named terms,
the three first-crossing methods one at a time. Exponential decay in event time, kept
exact with forward decay.

An event worth ``p`` points at time ``s`` is worth ``p * 2 ** (-(t - s) / h)`` at time
``t >= s`` (``h`` = the rule's half-life). Summing those naively would mean rewriting every
lead's score as time passes. Instead each lead keeps, per rule, the *forward-decayed* sum
(Cormode et al., "Forward Decay", ICDE 2009) against a landmark time ``L``::

    acc = sum(p_i * 2 ** ((s_i - L) / h))          # grows with s_i, never rewritten
    value(t) = acc * 2 ** ((L - t) / h)            # = sum(p_i * 2 ** (-(t - s_i) / h))

Adding an event is one multiply-add, the result does not depend on arrival order (late
events simply have a smaller weight), and reading at any ``t`` is exact. The weights grow
as ``2 ** ((s - L) / h)``, so the landmark is moved forward ("re-based") before they get
large: see :data:`REBASE_AFTER_HALF_LIVES`.

All times are integer milliseconds since the Unix epoch. Nothing here reads a clock.

The arithmetic lives in the native core (``native/src/decay.rs``, imported as
``leadscore_core``): one implementation for the live worker, replay and these helpers.
``pow`` is the C library's, as CPython's ``2.0 ** x``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from scoring import _native as _core

#: Move the landmark once it is this many half-lives (of the shortest rule) behind the
#: lead's clock. Weights then stay below 2**64 ~ 1.8e19, far from float overflow (~2**1024),
#: and re-basing is rare (once per 64 half-lives of activity).
REBASE_AFTER_HALF_LIVES: float = _core.REBASE_AFTER_HALF_LIVES


def decay(points: float, elapsed_ms: int | float, half_life_ms: int | float) -> float:
    """Points after ``elapsed_ms`` of decay with the given half-life."""
    return points * _core.pow2(-elapsed_ms / half_life_ms)


def forward_weight(at_ms: int, landmark_ms: int, half_life_ms: int) -> float:
    """``2 ** ((at - L) / h)``: how much an event at ``at_ms`` adds per point to ``acc``."""
    return _core.pow2((at_ms - landmark_ms) / half_life_ms)


def clamp(value: float, cap: float | None) -> float:
    """Apply a rule's ``cap`` (maximum magnitude of its total contribution)."""
    if cap is None:
        return value
    return cap if value > cap else (-cap if value < -cap else value)


class Term(NamedTuple):
    """One rule's accumulated contribution: ``acc`` against ``landmark_ms``."""

    rule_id: str
    acc: float
    half_life_ms: int
    cap: float | None

    def value(self, at_ms: int, landmark_ms: int) -> float:
        """Decayed, capped contribution at ``at_ms``."""
        return clamp(self.acc * _core.pow2((landmark_ms - at_ms) / self.half_life_ms), self.cap)


class Curve:
    """A lead's score as a function of time between two events (no new points).

    Each term is monotone in time: positive terms fall towards 0, negative terms rise
    towards 0 (caps keep that). So on ``[a, b]`` the score is at least
    ``positive(b) + negative(a)``: the bound that makes :meth:`first_below` exact.

    The arithmetic runs in the native core (``leadscore_core.Curve``), the same code the
    engine uses; this class keeps the terms for callers that inspect them.
    """

    __slots__ = ("_core", "landmark_ms", "negative", "positive")

    def __init__(self, terms: Sequence[Term], landmark_ms: int) -> None:
        self.landmark_ms = landmark_ms
        self.positive = tuple(t for t in terms if t.acc > 0)
        self.negative = tuple(t for t in terms if t.acc < 0)
        self._core = _core.Curve(
            [(t.acc, t.half_life_ms, t.cap) for t in self.positive + self.negative], landmark_ms
        )

    @classmethod
    def from_sums(
        cls,
        sums: Mapping[str, float],
        params: Mapping[str, tuple[int, float | None]],
        landmark_ms: int,
    ) -> Curve:
        """Build from a lead's accumulators; rules missing from ``params`` count 0."""
        terms = [
            Term(rule_id, acc, param[0], param[1])
            for rule_id, acc in sums.items()
            if (param := params.get(rule_id)) is not None and acc != 0.0
        ]
        return cls(terms, landmark_ms)

    def pos(self, at_ms: int) -> float:
        """Sum of the positive terms at ``at_ms`` (each capped at ``+cap``)."""
        return self._core.pos(at_ms)

    def neg(self, at_ms: int) -> float:
        """Sum of the negative terms at ``at_ms`` (each capped at ``-cap``)."""
        return self._core.neg(at_ms)

    def score(self, at_ms: int) -> float:
        """The score at ``at_ms``. Always ``pos + neg`` in this order, so that bounds and
        point values agree to the last bit."""
        return self._core.score(at_ms)

    def first_below(self, threshold: float, lo_ms: int, hi_ms: int) -> int | None:
        """Earliest whole millisecond ``m`` in ``[lo_ms, hi_ms]`` with ``score(m) < threshold``.

        Closed form when a single half-life is in play and no cap binds; Newton's method
        when several half-lives are but every term is positive and uncapped (the score is
        then convex and decreasing); otherwise an exact branch-and-bound over the
        millisecond grid using the monotone bound above (a root finder that cannot miss a
        dip between samples). Each fast path settles its answer on the millisecond grid.
        """
        return self._core.first_below(threshold, lo_ms, hi_ms)

    # The three methods of first_below, one at a time (for tests). The two fast paths
    # return NOT_APPLICABLE when their preconditions do not hold.
    def _closed_form(self, threshold: float, lo_ms: int, hi_ms: int) -> int | object | None:
        found = self._core.closed_form(threshold, lo_ms, hi_ms)
        return NOT_APPLICABLE if found is None else found[0]

    def _newton(self, threshold: float, lo_ms: int, hi_ms: int) -> int | object | None:
        found = self._core.newton(threshold, lo_ms, hi_ms)
        return NOT_APPLICABLE if found is None else found[0]

    def _search(self, threshold: float, lo_ms: int, hi_ms: int) -> int | None:
        return self._core.search(threshold, lo_ms, hi_ms)

    def horizon_ms(self, start_ms: int, threshold: float) -> int:
        """A time by which the score is certainly below ``threshold`` (if it ever will be):
        when the positive part alone has decayed under it. Uses the *uncapped* values (a
        cap hides how much is left to decay). Used to bound searches."""
        return self._core.horizon_ms(start_ms, threshold)


#: What :meth:`Curve._closed_form` and :meth:`Curve._newton` return when they do not apply.
NOT_APPLICABLE = object()


def score_from_sums(
    sums: Mapping[str, float],
    params: Mapping[str, tuple[int, float | None]],
    landmark_ms: int,
    at_ms: int,
) -> float:
    """The score of a lead's accumulators at ``at_ms`` (rules missing from ``params``
    count 0)."""
    return Curve.from_sums(sums, params, landmark_ms).score(at_ms)
