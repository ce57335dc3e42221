"""Exponential decay, forward decay with landmark re-basing, and Curve.first_below."""

from __future__ import annotations

import math
import random

import pytest

from scoring.state_machine import apply_event, cool_due_ms, explain, score_at
from tests import decay_curve as decay_module
from tests.decay_curve import (
    REBASE_AFTER_HALF_LIVES,
    Curve,
    Term,
    clamp,
    decay,
    forward_weight,
    score_from_sums,
)
from tests.strategies import (
    BASE_MS,
    DAY_MS,
    HOUR_MS,
    naive_contributions,
    naive_score,
    page_view,
    rules_from,
)


def brute_first_below(curve: Curve, threshold: float, lo: int, hi: int) -> int | None:
    """The first millisecond in [lo, hi] below the threshold, by looking at every one."""
    return next((m for m in range(lo, hi + 1) if curve.score(m) < threshold), None)


def uses_closed_form(curve: Curve, threshold: float, lo: int, hi: int) -> bool:
    return curve._closed_form(threshold, lo, hi) is not decay_module.NOT_APPLICABLE


# --------------------------------------------------------------------------- decay()


@pytest.mark.parametrize(
    ("points", "elapsed", "half_life", "expected"),
    [
        (100, 0, 1000, 100),
        (100, 1000, 1000, 50),
        (100, 2000, 1000, 25),
        (100, 500, 1000, 100 / math.sqrt(2)),
        (-30, 3000, 1000, -3.75),
        (8, 14 * DAY_MS, 14 * DAY_MS, 4),
        (1, 10_000, 1, 0.0),  # underflows to 0, no error
    ],
)
def test_decay(points: float, elapsed: int, half_life: int, expected: float) -> None:
    assert decay(points, elapsed, half_life) == pytest.approx(expected, rel=1e-15, abs=0)


def test_decay_composes() -> None:
    once = decay(100, 7 * HOUR_MS, 3 * HOUR_MS)
    twice = decay(decay(100, 3 * HOUR_MS, 3 * HOUR_MS), 4 * HOUR_MS, 3 * HOUR_MS)
    assert once == pytest.approx(twice, rel=1e-14)


def test_forward_weight() -> None:
    assert forward_weight(1000, 1000, 500) == 1.0
    assert forward_weight(1500, 1000, 500) == 2.0
    assert forward_weight(500, 1000, 500) == 0.5
    assert forward_weight(1000 + 64 * 500, 1000, 500) == 2.0**64


def test_forward_decay_matches_decay() -> None:
    """acc = p * w(s); value(t) = acc * 2**((L - t)/h) is the spec's p * 2**(-(t-s)/h)."""
    landmark, half_life = BASE_MS, 6 * HOUR_MS
    for s, t in [(BASE_MS, BASE_MS), (BASE_MS + 5, BASE_MS + 9 * HOUR_MS), (BASE_MS - 1, BASE_MS)]:
        term = Term("r", 40 * forward_weight(s, landmark, half_life), half_life, None)
        assert term.value(t, landmark) == pytest.approx(decay(40, t - s, half_life), rel=1e-14)


@pytest.mark.parametrize(
    ("value", "cap", "expected"),
    [(12.0, None, 12.0), (12.0, 20.0, 12.0), (25.0, 20.0, 20.0), (-25.0, 20.0, -20.0), (0.0, 5, 0)],
)
def test_clamp(value: float, cap: float | None, expected: float) -> None:
    assert clamp(value, cap) == expected


def test_term_value_decays_then_caps() -> None:
    term = Term("opens", acc=8.0, half_life_ms=1000, cap=5.0)
    assert term.value(0, 0) == 5.0  # 8 capped to 5
    assert term.value(1000, 0) == 4.0  # 8 -> 4: under the cap
    negative = Term("unsub", acc=-80.0, half_life_ms=1000, cap=30.0)
    assert negative.value(0, 0) == -30.0
    assert negative.value(2000, 0) == -20.0


def test_rebase_keeps_every_value() -> None:
    """Events 64+ half-lives apart move the landmark; scores stay the naive sums."""
    rules = rules_from(
        [
            {"id": "a", "event": "page_view", "points": 123, "half_life": "1s"},
            {"id": "b", "event": "page_view", "points": -7.5, "half_life": "0.25s", "cap": 5},
        ],
        hot=1e9,
        cool=1e9,
    )
    first = page_view(at_ms=BASE_MS)
    state = apply_event(None, first, rules).state
    second = page_view(at_ms=BASE_MS + 65_000)
    moved = apply_event(state, second, rules).state
    assert moved.landmark_ms == BASE_MS + 65_000  # re-based
    for t in (BASE_MS + 65_000, BASE_MS + 65_321, BASE_MS + 70_000):
        assert score_at(moved, rules, t) == pytest.approx(naive_score([first, second], rules, t))


def test_curve_splits_terms_by_sign() -> None:
    curve = Curve([Term("p", 10.0, 100, None), Term("n", -4.0, 50, None)], landmark_ms=0)
    assert [t.rule_id for t in curve.positive] == ["p"]
    assert [t.rule_id for t in curve.negative] == ["n"]
    assert curve.pos(100) == 5.0
    assert curve.neg(100) == -1.0
    assert curve.score(100) == 4.0


def test_curve_from_sums_skips_unknown_rules_and_zeros() -> None:
    sums = {"p": 10.0, "gone": 99.0, "zero": 0.0, "n": -500.0}
    params = {"p": (100, None), "zero": (100, None), "n": (50, 40.0)}
    curve = Curve.from_sums(sums, params, landmark_ms=7)
    assert curve.landmark_ms == 7
    assert curve.positive == (Term("p", 10.0, 100, None),)
    assert curve.negative == (Term("n", -500.0, 50, 40.0),)
    assert curve.score(107) == 5.0 - 40.0  # the negative rule is capped at -40
    assert curve.score(7 + 50 * 5) == 10 * 2**-2.5 - 500 / 32
    direct = Curve([Term("p", 10.0, 100, None), Term("n", -500.0, 50, 40.0)], landmark_ms=7)
    for at in (7, 100, 333, 10_000):
        assert curve.score(at) == direct.score(at)
        assert score_from_sums(sums, params, 7, at) == curve.score(at)


def test_empty_curve_scores_zero() -> None:
    curve = Curve([], landmark_ms=0)
    assert curve.score(12345) == 0
    assert curve.first_below(1.0, 10, 20) == 10
    assert curve.first_below(0.0, 10, 20) is None
    assert curve.first_below(-1.0, 10, 20) is None


def test_first_below_empty_range() -> None:
    curve = Curve([Term("p", 10.0, 100, None)], landmark_ms=0)
    assert curve.first_below(5.0, 11, 10) is None
    assert curve.first_below(50.0, 11, 10) is None


# --------------------------------------------------------------------------- closed form


def test_first_below_closed_form_single_term() -> None:
    # 80 * 2**(-t/1000) < 50  <=>  t > 1000 * log2(80/50) = 678.07...
    curve = Curve([Term("p", 80.0, 1000, None)], landmark_ms=0)
    assert uses_closed_form(curve, 50.0, 0, 5000)
    assert curve.first_below(50.0, 0, 5000) == 679
    assert curve.score(679) < 50.0 <= curve.score(678)
    assert curve.first_below(50.0, 0, 678) is None
    assert curve.first_below(50.0, 0, 679) == 679  # the crossing at the very end of the range
    assert curve.first_below(50.0, 700, 800) == 700  # already below at lo
    assert curve.first_below(90.0, 0, 10) == 0


def test_first_below_closed_form_several_terms_one_half_life() -> None:
    terms = [Term("a", 30.0, 777, None), Term("b", 25.0, 777, 40.0), Term("c", 0.5, 777, None)]
    curve = Curve(terms, landmark_ms=-300)
    for threshold in (55.0, 40.0, 12.5, 0.01):
        assert uses_closed_form(curve, threshold, 0, 3000)
        assert curve.first_below(threshold, 0, 3000) == brute_first_below(curve, threshold, 0, 3000)


@pytest.mark.parametrize("half_life", [1, 2, 3, 7, 100, 999])
def test_first_below_closed_form_tiny_half_lives(half_life: int) -> None:
    curve = Curve([Term("p", 1000.0, half_life, None)], landmark_ms=5)
    for threshold in (999.0, 500.0, 3.0, 1e-6):
        expected = brute_first_below(curve, threshold, 0, 2000)
        assert curve.first_below(threshold, 0, 2000) == expected


def test_first_below_with_a_tiny_positive_threshold() -> None:
    curve = Curve([Term("t", 112.0, 3, None)], landmark_ms=0)
    threshold = 6.2227110067240184e-307  # found by hypothesis
    assert curve.first_below(threshold, 0, 0) is None
    expected = brute_first_below(curve, threshold, 0, 5000)
    assert expected is not None
    assert curve.first_below(threshold, 0, 5000) == expected


def test_closed_form_not_used_when_it_does_not_apply() -> None:
    mixed = Curve([Term("a", 30.0, 100, None), Term("b", 30.0, 200, None)], landmark_ms=0)
    negative = Curve([Term("a", 30.0, 100, None), Term("b", -3.0, 100, None)], landmark_ms=0)
    capped = Curve([Term("a", 300.0, 100, 50.0)], landmark_ms=0)
    single = Curve([Term("a", 30.0, 100, None)], landmark_ms=0)
    assert not uses_closed_form(mixed, 10.0, 0, 1000)
    assert not uses_closed_form(negative, 10.0, 0, 1000)
    assert not uses_closed_form(capped, 10.0, 0, 1000)  # cap binds at lo
    assert uses_closed_form(capped, 10.0, 300, 1000)  # 300 * 2**-3 = 37.5 < 50: not binding
    assert not uses_closed_form(single, 0.0, 0, 1000)
    assert not uses_closed_form(single, -1.0, 0, 1000)


def test_closed_form_at_realistic_times_matches_branch_and_bound() -> None:
    """Epoch-sized timestamps and a 14-day half-life: the two methods agree to the ms and
    the answer is exact: score(t_c) < cool <= score(t_c - 1)."""
    rng = random.Random(7)
    for _ in range(50):
        half_life = rng.choice([HOUR_MS, 14 * DAY_MS, 30 * DAY_MS, 12_345_679])
        landmark = BASE_MS + rng.randrange(0, 30 * DAY_MS)
        terms = [Term(f"t{i}", rng.uniform(1, 60), half_life, None) for i in range(3)]
        curve = Curve(terms, landmark)
        lo = landmark + rng.randrange(0, 3 * half_life)
        hi = lo + 40 * half_life
        threshold = rng.uniform(1, 60)
        closed = curve.first_below(threshold, lo, hi)
        searched = curve._search(threshold, lo, hi)
        assert closed == searched
        assert closed is not None
        assert curve.score(closed) < threshold
        if closed > lo:
            assert curve.score(closed - 1) >= threshold


# --------------------------------------------------------------------------- branch-and-bound


def test_first_below_dip_below_and_back_up() -> None:
    """Mixed half-lives with a negative rule: the score dips below the threshold and comes
    back above it before falling for good."""
    terms = [
        Term("fast", 100.0, 10, None),
        Term("slow", 60.0, 10_000, None),
        Term("neg", -60.0, 100, None),
    ]
    curve = Curve(terms, landmark_ms=0)
    scores = [curve.score(m) for m in range(0, 2001)]
    first_dip = next(m for m, s in enumerate(scores) if s < 40)
    back_up = next(m for m in range(first_dip, 2001) if scores[m] >= 40)
    assert back_up > first_dip  # it really comes back
    assert curve.first_below(40.0, 0, 2000) == first_dip
    assert curve.first_below(40.0, back_up, 2000) is None  # above 40 from there on
    assert curve.first_below(40.0, first_dip + 1, 2000) == first_dip + 1
    # Well past the dip, the slow rule alone decays below 40: found, exactly.
    far = curve.first_below(40.0, back_up, 100_000)
    assert far is not None
    assert far == brute_first_below(curve, 40.0, back_up, far)
    assert curve.score(far) < 40.0 <= curve.score(far - 1)


def test_first_below_finds_a_dip_one_millisecond_wide() -> None:
    terms = [
        Term("fast", 100.0, 10, None),
        Term("slow", 60.0, 10_000, None),
        Term("neg", -60.0, 100, None),
    ]
    curve = Curve(terms, landmark_ms=0)
    scores = {m: curve.score(m) for m in range(0, 3001)}
    bottom = min(scores, key=lambda m: scores[m])
    # A threshold just above the minimum: only the bottom millisecond is below it.
    threshold = math.nextafter(scores[bottom], math.inf)
    below = [m for m, s in scores.items() if s < threshold]
    assert below == [bottom]
    assert curve.first_below(threshold, 0, 3000) == bottom
    assert curve.first_below(threshold, bottom + 1, 3000) is None
    assert curve.first_below(scores[bottom], 0, 3000) is None  # strict: never below its min


def test_first_below_with_binding_caps() -> None:
    # Capped at 50 until 1000 * log2(400/50) = 3000 ms, then a plain exponential.
    curve = Curve([Term("opens", 400.0, 1000, 50.0), Term("neg", -5.0, 300, None)], 0)
    expected = brute_first_below(curve, 40.0, 0, 6000)
    assert expected is not None
    assert expected > 3000
    assert curve.first_below(40.0, 0, 6000) == expected


def test_first_below_capped_negative_rule() -> None:
    curve = Curve([Term("pos", 90.0, 2000, None), Term("neg", -500.0, 100, 40.0)], 0)
    # neg stays at -40 until 100 * log2(500/40) = 364 ms: the score is 90*2**(-t/2000) - 40.
    for threshold in (48.0, 45.0, 30.0):
        assert curve.first_below(threshold, 0, 4000) == brute_first_below(curve, threshold, 0, 4000)


def test_first_below_threshold_at_or_below_zero() -> None:
    # Positive part fades fast, negative part slowly: the score goes negative.
    curve = Curve([Term("pos", 50.0, 50, None), Term("neg", -20.0, 2000, None)], 0)
    for threshold in (0.0, -5.0, -19.0, -25.0):
        assert curve.first_below(threshold, 0, 3000) == brute_first_below(curve, threshold, 0, 3000)


@pytest.mark.parametrize("seed", range(6))
def test_first_below_random_curves_match_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(40):
        terms = [
            Term(
                f"t{i}",
                rng.choice([1, 1, -1]) * rng.uniform(0.5, 150),
                rng.choice([3, 10, 50, 200, 700]),
                rng.choice([None, None, 10.0, 40.0]),
            )
            for i in range(rng.randint(1, 5))
        ]
        curve = Curve(terms, landmark_ms=rng.randint(-100, 100))
        lo = rng.randint(0, 300)
        hi = lo + rng.randint(0, 1500)
        threshold = rng.uniform(-30, 120)
        assert curve.first_below(threshold, lo, hi) == brute_first_below(curve, threshold, lo, hi)


@pytest.mark.parametrize("seed", range(3))
def test_branch_and_bound_alone_matches_brute_force_on_single_half_life(seed: int) -> None:
    """The closed form's cases, searched by branch-and-bound instead: same answers."""
    rng = random.Random(100 + seed)
    for _ in range(40):
        h = rng.randint(2, 500)
        curve = Curve(
            [Term(f"t{i}", rng.uniform(1, 100), h, None) for i in range(3)],
            landmark_ms=rng.randint(-50, 50),
        )
        threshold = rng.uniform(0.5, 200)
        assert curve._search(threshold, 0, 2000) == brute_first_below(curve, threshold, 0, 2000)


def test_first_below_over_a_long_range_is_fast_and_exact() -> None:
    """A year of milliseconds, mixed half-lives and a negative rule (branch-and-bound)."""
    terms = [
        Term("a", 60.0, 14 * DAY_MS, None),
        Term("b", 40.0, 30 * DAY_MS, 30.0),
        Term("c", -25.0, 3 * DAY_MS, None),
    ]
    curve = Curve(terms, landmark_ms=BASE_MS)
    found = curve.first_below(50.0, BASE_MS, BASE_MS + 365 * DAY_MS)
    assert found is not None
    assert curve.score(found) < 50.0 <= curve.score(found - 1)


# --------------------------------------------------------------------------- horizon


def test_horizon_is_after_the_crossing_for_uncapped_terms() -> None:
    curve = Curve([Term("a", 80.0, 1000, None), Term("b", 30.0, 5000, None)], landmark_ms=0)
    horizon = curve.horizon_ms(0, 20.0)
    assert curve.score(horizon) < 20.0
    assert curve.first_below(20.0, 0, horizon) == brute_first_below(curve, 20.0, 0, horizon)


def test_horizon_when_threshold_is_not_positive() -> None:
    curve = Curve([Term("a", 80.0, 1000, None), Term("n", -30.0, 5000, None)], landmark_ms=0)
    assert curve.horizon_ms(10, 0.0) == 10 + 1100 * 5000
    assert curve.horizon_ms(10, -3.0) == 10 + 1100 * 5000


def test_horizon_with_a_binding_cap() -> None:
    # 2000 capped at 100: the term stays at 100 until 1000 * log2(2000/100) ms.
    curve = Curve([Term("opens", 2000.0, 1000, 100.0)], landmark_ms=0)
    horizon = curve.horizon_ms(0, 50.0)
    assert curve.score(horizon) < 50.0


# --------------------------------------------------------------------------- long spans


def test_rebase_threshold_is_64_half_lives() -> None:
    assert REBASE_AFTER_HALF_LIVES == 64.0


def test_events_over_5000_half_lives_stay_finite_and_exact() -> None:
    """Events spread over 5000 half-lives of a 1 h rule, arriving mostly in order with some
    late: no overflow, no inf/nan, the score matches the naive sum after every event."""
    rules = rules_from(
        [
            {"id": "pv", "event": "page_view", "points": 10, "half_life": "1h"},
            {"id": "pricing", "event": "page_view", "url_contains": "/pricing", "points": 25},
            {"id": "careers", "event": "page_view", "url_contains": "/careers", "points": -8},
        ],
        half_life="30d",
        hot=1e9,  # never hot: this test is about the arithmetic
        cool=1e9,
    )
    rng = random.Random(5000)
    span = 5000 * HOUR_MS
    times = sorted(BASE_MS + rng.randrange(span) for _ in range(1500))
    # Every 20th event arrives late (swapped with a later one).
    for i in range(0, len(times) - 10, 20):
        times[i], times[i + 7] = times[i + 7], times[i]
    urls = ["https://x.example/", "https://x.example/pricing", "https://x.example/careers"]
    events = [page_view(at_ms=t, url=rng.choice(urls)) for t in times]
    state = None
    landmarks = set()
    for i, event in enumerate(events):
        state = apply_event(state, event, rules).state
        landmarks.add(state.landmark_ms)
        assert all(math.isfinite(acc) for acc in state.sums.values())
        # No accumulator weight beyond 2**64 * (the points of ~all events).
        assert max(abs(acc) for acc in state.sums.values()) < 2.0**65 * 25 * len(events)
        if i % 25 == 0 or i == len(events) - 1:
            at = state.clock_ms
            expected = naive_score(events[: i + 1], rules, at)
            got = score_at(state, rules, at)
            assert math.isfinite(got)
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert state is not None
    assert len(landmarks) > 50  # re-based many times (5000 / 64 ~ 78)
    for later in (0, HOUR_MS // 3, 5 * HOUR_MS, 200 * HOUR_MS, 5000 * HOUR_MS):
        at = state.clock_ms + later
        got = score_at(state, rules, at)
        assert math.isfinite(got)
        assert got == pytest.approx(naive_score(events, rules, at), rel=1e-9, abs=1e-12)


def test_two_events_5000_half_lives_apart() -> None:
    rules = rules_from([{"id": "pv", "event": "page_view", "points": 10}], half_life="1h")
    first = apply_event(None, page_view(at_ms=BASE_MS), rules).state
    second = apply_event(first, page_view(at_ms=BASE_MS + 5000 * HOUR_MS), rules).state
    assert second.landmark_ms == BASE_MS + 5000 * HOUR_MS  # re-based to the new event
    assert score_at(second, rules, second.clock_ms) == pytest.approx(10.0, rel=1e-12)
    # And a very late event, 5000 half-lives before the clock: weighs (almost) nothing.
    third = apply_event(second, page_view(at_ms=BASE_MS + 1), rules).state
    assert math.isfinite(third.sums["pv"])
    assert score_at(third, rules, third.clock_ms) == pytest.approx(10.0, rel=1e-12)


def test_long_gap_inside_the_rebase_window_does_not_overflow() -> None:
    """Just under 64 half-lives between events: weights reach 2**63, still exact."""
    rules = rules_from([{"id": "pv", "event": "page_view", "points": 3}], half_life="1m")
    state = None
    events = [page_view(at_ms=BASE_MS + k * 63 * 60_000) for k in range(40)]
    for i, event in enumerate(events):
        state = apply_event(state, event, rules).state
        got = score_at(state, rules, state.clock_ms)
        expected = naive_score(events[: i + 1], rules, state.clock_ms)
        assert got == pytest.approx(expected, rel=1e-12)


def test_mixed_half_lives_rebase_on_the_shortest() -> None:
    rules = rules_from(
        [
            {"id": "short", "event": "page_view", "points": 5, "half_life": "1h"},
            {"id": "long", "event": "page_view", "points": 7, "half_life": "30d"},
        ]
    )
    state = None
    events = [page_view(at_ms=BASE_MS + k * 10 * HOUR_MS) for k in range(100)]
    for event in events:
        state = apply_event(state, event, rules).state
    assert state is not None
    assert state.landmark_ms > BASE_MS
    at = state.clock_ms + DAY_MS
    expected = naive_contributions(events, rules, at)
    got = {c.rule_id: c.points for c in explain(state, rules, at)}
    assert got == pytest.approx(expected, rel=1e-9)


def test_cool_due_is_exact_after_a_long_history() -> None:
    """A lead active for 5000 half-lives, then hot: cool_due_ms is exact to the ms."""
    rules = rules_from([{"id": "pv", "event": "page_view", "points": 10}], hot=60, cool=40)
    state = None
    for k in range(5000):
        state = apply_event(state, page_view(at_ms=BASE_MS + k * HOUR_MS), rules).state
    assert state is not None
    assert not state.hot  # steady state just after an event: 10 / (1 - 1/2) = 20
    burst_at = state.clock_ms + 1
    for _ in range(5):
        state = apply_event(state, page_view(at_ms=burst_at), rules).state
    assert state.hot  # 20 + 50
    due = cool_due_ms(state, rules)
    assert due is not None
    assert score_at(state, rules, due) < 40 <= score_at(state, rules, due - 1)


@pytest.mark.parametrize("seed", range(40))
def test_newton_path_matches_a_scan_for_positive_mixed_half_lives(seed: int) -> None:
    """Several half-lives, positive and uncapped: the Newton path (not the closed form,
    not the search) must find exactly the first millisecond a scan finds."""
    rnd = random.Random(seed)
    terms = [
        Term(f"r{i}", rnd.uniform(1, 50), rnd.choice([300, 1_000, 2_500, 7_000]), None)
        for i in range(rnd.randint(2, 5))
    ]
    curve = Curve(terms, landmark_ms=0)
    lo, hi = 1, 40_000
    threshold = rnd.uniform(0.5, curve.score(lo) * 1.2)
    assert (
        curve._closed_form(threshold, lo, hi) is decay_module.NOT_APPLICABLE
        or len({t.half_life_ms for t in terms}) == 1
    )
    assert curve._newton(threshold, lo, hi) == brute_first_below(curve, threshold, lo, hi)
    assert curve.first_below(threshold, lo, hi) == brute_first_below(curve, threshold, lo, hi)
