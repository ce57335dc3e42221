"""Exponential decay in event time, kept exact with forward decay.

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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

#: Move the landmark once it is this many half-lives (of the shortest rule) behind the
#: lead's clock. Weights then stay below 2**64 ~ 1.8e19, far from float overflow (~2**1024),
#: and re-basing is rare (once per 64 half-lives of activity).
REBASE_AFTER_HALF_LIVES = 64.0


def decay(points: float, elapsed_ms: int | float, half_life_ms: int | float) -> float:
    """Points after ``elapsed_ms`` of decay with the given half-life."""
    return points * math.pow(2.0, -elapsed_ms / half_life_ms)


def forward_weight(at_ms: int, landmark_ms: int, half_life_ms: int) -> float:
    """``2 ** ((at - L) / h)``: how much an event at ``at_ms`` adds per point to ``acc``."""
    return math.pow(2.0, (at_ms - landmark_ms) / half_life_ms)


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
        return clamp(self.acc * 2.0 ** ((landmark_ms - at_ms) / self.half_life_ms), self.cap)


class Curve:
    """A lead's score as a function of time between two events (no new points).

    Each term is monotone in time: positive terms fall towards 0, negative terms rise
    towards 0 (caps keep that). So on ``[a, b]`` the score is at least
    ``positive(b) + negative(a)``: the bound that makes :meth:`first_below` exact.
    """

    __slots__ = ("landmark_ms", "negative", "positive")

    def __init__(self, terms: Sequence[Term], landmark_ms: int) -> None:
        self.landmark_ms = landmark_ms
        self.positive = tuple(t for t in terms if t.acc > 0)
        self.negative = tuple(t for t in terms if t.acc < 0)

    @classmethod
    def from_sums(
        cls,
        sums: Mapping[str, float],
        params: Mapping[str, tuple[int, float | None]],
        landmark_ms: int,
    ) -> Curve:
        """Build from a lead's accumulators; rules missing from ``params`` count 0."""
        positive: list[Term] = []
        negative: list[Term] = []
        for rule_id, acc in sums.items():
            param = params.get(rule_id)
            if param is None or acc == 0.0:
                continue
            (positive if acc > 0 else negative).append(Term(rule_id, acc, param[0], param[1]))
        curve = cls.__new__(cls)
        curve.landmark_ms = landmark_ms
        curve.positive = tuple(positive)
        curve.negative = tuple(negative)
        return curve

    def pos(self, at_ms: int) -> float:
        """Sum of the positive terms at ``at_ms`` (each capped at ``+cap``)."""
        total = 0.0
        shift = self.landmark_ms - at_ms
        for term in self.positive:
            value: float = term.acc * 2.0 ** (shift / term.half_life_ms)
            cap = term.cap
            total += cap if cap is not None and value > cap else value
        return total

    def neg(self, at_ms: int) -> float:
        """Sum of the negative terms at ``at_ms`` (each capped at ``-cap``)."""
        total = 0.0
        shift = self.landmark_ms - at_ms
        for term in self.negative:
            value: float = term.acc * 2.0 ** (shift / term.half_life_ms)
            cap = term.cap
            total += -cap if cap is not None and value < -cap else value
        return total

    def score(self, at_ms: int) -> float:
        """The score at ``at_ms``. Always ``pos + neg`` in this order, so that bounds and
        point values agree to the last bit."""
        return self.pos(at_ms) + self.neg(at_ms)

    def first_below(self, threshold: float, lo_ms: int, hi_ms: int) -> int | None:
        """Earliest whole millisecond ``m`` in ``[lo_ms, hi_ms]`` with ``score(m) < threshold``.

        Closed form when a single half-life is in play and no cap binds; Newton's method
        when several half-lives are but every term is positive and uncapped (the score is
        then convex and decreasing); otherwise an exact branch-and-bound over the
        millisecond grid using the monotone bound above (a root finder that cannot miss a
        dip between samples). Each fast path settles its answer on the millisecond grid.
        """
        if lo_ms > hi_ms:
            return None
        closed = self._closed_form(threshold, lo_ms, hi_ms)
        if closed is not _NOT_APPLICABLE:
            return closed  # type: ignore[return-value]
        newton = self._newton(threshold, lo_ms, hi_ms)
        if newton is not _NOT_APPLICABLE:
            return newton  # type: ignore[return-value]
        # Depth-first, left half first: when ``score(a) < threshold`` every earlier
        # millisecond has been checked or ruled out by the bound, so ``a`` is the first.
        stack = [(lo_ms, hi_ms)]
        while stack:
            a, b = stack.pop()
            if a > b:
                continue
            if self.score(a) < threshold:
                return a
            if a == b or self.pos(b) + self.neg(a) >= threshold:
                continue  # no millisecond in [a, b] can be below the threshold
            mid = (a + b) // 2
            stack.append((mid + 1, b))
            stack.append((a + 1, mid))
        return None

    def _newton(self, threshold: float, lo_ms: int, hi_ms: int) -> int | object | None:
        """Positive, uncapped terms only: ``score`` is a convex, decreasing sum of
        exponentials, so Newton's method started left of the crossing approaches it
        monotonically from the left in a few steps."""
        terms = self.positive
        if self.negative or not terms or threshold <= 0:
            return _NOT_APPLICABLE
        if any(t.cap is not None and abs(t.value(lo_ms, self.landmark_ms)) >= t.cap for t in terms):
            return _NOT_APPLICABLE
        if self.score(lo_ms) < threshold:
            return lo_ms
        if self.score(hi_ms) >= threshold:
            return None  # decreasing: never below within the range
        t = float(lo_ms)
        for _ in range(100):
            value = 0.0
            slope = 0.0
            for term in terms:
                v: float = term.acc * 2.0 ** ((self.landmark_ms - t) / term.half_life_ms)
                value += v
                slope -= v * _LN2 / term.half_life_ms
            excess = value - threshold
            if excess <= 0 or slope >= 0:
                break
            step = -excess / slope
            t = min(t + step, float(hi_ms))
            if step < 0.25:
                break
        else:
            return _NOT_APPLICABLE  # did not converge (never seen): use the exact search
        m = min(max(lo_ms, math.floor(t)), hi_ms)
        while m > lo_ms and self.score(m - 1) < threshold:
            m -= 1
        while m <= hi_ms and self.score(m) >= threshold:
            m += 1
        return m if m <= hi_ms else None

    def _closed_form(self, threshold: float, lo_ms: int, hi_ms: int) -> int | object | None:
        terms = self.positive
        if self.negative or len({t.half_life_ms for t in terms}) != 1 or threshold <= 0:
            return _NOT_APPLICABLE
        if any(t.cap is not None and abs(t.value(lo_ms, self.landmark_ms)) >= t.cap for t in terms):
            return _NOT_APPLICABLE  # a cap binds at the start: not a pure exponential
        half_life = terms[0].half_life_ms
        total = sum(t.acc for t in terms)
        # total * 2 ** ((L - t) / h) < threshold  <=>  t > L + h * log2(total / threshold)
        crossing = self.landmark_ms + half_life * (math.log2(total) - math.log2(threshold))
        if not math.isfinite(crossing) or abs(crossing) > 2**62:
            return _NOT_APPLICABLE  # beyond any representable millisecond: search instead
        m = max(lo_ms, math.floor(crossing) + 1)
        # Float rounding can put the analytic answer one tick off: settle it on the grid.
        while m > lo_ms and self.score(m - 1) < threshold:
            m -= 1
        while m <= hi_ms and self.score(m) >= threshold:
            m += 1
        return m if m <= hi_ms else None

    def horizon_ms(self, start_ms: int, threshold: float) -> int:
        """A time by which the score is certainly below ``threshold`` (if it ever will be):
        when the positive part alone has decayed under it. Uses the *uncapped* values (a
        cap hides how much is left to decay). Used to bound searches."""
        longest = max((t.half_life_ms for t in self.positive + self.negative), default=1)
        shift = self.landmark_ms - start_ms
        positive = sum(t.acc * math.pow(2.0, shift / t.half_life_ms) for t in self.positive)
        if threshold > 0 and positive > 0:
            halvings = max(0.0, math.log2(positive) - math.log2(threshold)) + 1
            if math.isfinite(halvings):
                return start_ms + math.ceil(halvings * longest)
        return start_ms + 1100 * longest  # 2**-1100 underflows: everything is 0 by then


_NOT_APPLICABLE = object()
_LN2 = math.log(2.0)


def rebase(
    sums: Mapping[str, float],
    params: Mapping[str, tuple[int, float | None]],
    old_landmark_ms: int,
    new_landmark_ms: int,
) -> dict[str, float]:
    """Re-express accumulators against a new landmark (values at any time unchanged).
    ``params`` maps rule id -> (half_life_ms, cap). Accumulators of rules that are no longer
    in the rules file are dropped: they count 0 already, and kept against a moved landmark
    they would come back wrongly scaled if the rule were restored."""
    shift = old_landmark_ms - new_landmark_ms
    rebased: dict[str, float] = {}
    for rule_id, acc in sums.items():
        param = params.get(rule_id)
        if param is not None:
            rebased[rule_id] = acc * math.pow(2.0, shift / param[0])
    return rebased


def score_from_sums(
    sums: Mapping[str, float],
    params: Mapping[str, tuple[int, float | None]],
    landmark_ms: int,
    at_ms: int,
) -> float:
    """``Curve.from_sums(sums, params, landmark_ms).score(at_ms)`` without building the
    curve: the same terms summed in the same order, so the result is bit-identical."""
    positive = 0.0
    negative = 0.0
    shift = landmark_ms - at_ms
    for rule_id, acc in sums.items():
        param = params.get(rule_id)
        if param is None or acc == 0.0:
            continue
        value: float = acc * 2.0 ** (shift / param[0])
        cap = param[1]
        if acc > 0:
            positive += cap if cap is not None and value > cap else value
        else:
            negative += -cap if cap is not None and value < -cap else value
    return positive + negative


def lower_bound_from_sums(
    sums: Mapping[str, float],
    params: Mapping[str, tuple[int, float | None]],
    landmark_ms: int,
    start_ms: int,
    end_ms: int,
) -> float:
    """``curve.pos(end_ms) + curve.neg(start_ms)`` without building the curve (same terms,
    same order): a lower bound of the score on ``[start_ms, end_ms]``. When it is at least
    the cool threshold, no cooling can happen in that span (the hot path's early exit)."""
    positive = 0.0
    negative = 0.0
    for rule_id, acc in sums.items():
        param = params.get(rule_id)
        if param is None or acc == 0.0:
            continue
        cap = param[1]
        if acc > 0:
            value: float = acc * 2.0 ** ((landmark_ms - end_ms) / param[0])
            positive += cap if cap is not None and value > cap else value
        else:
            value = acc * 2.0 ** ((landmark_ms - start_ms) / param[0])
            negative += -cap if cap is not None and value < -cap else value
    return positive + negative
