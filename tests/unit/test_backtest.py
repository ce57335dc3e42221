"""Backtest metrics (scoring/backtest.py): hand-checked examples, window edges, and ROC AUC
against its pairwise definition."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring.backtest import (
    HotMetrics,
    Period,
    backtest,
    hot_metrics,
    index_conversions,
    lift_by_decile,
    ranking_metrics,
    roc_auc,
)

W = 100  # window (ms) of the hand examples


EVERYTHING = Period(0, 1000)


def _hot(
    events: list[tuple[str, int]],
    conversions: list[tuple[str, int]],
    period: Period = EVERYTHING,
    first: int = 0,
    known_until: int = 10_000,
) -> HotMetrics:
    return hot_metrics(
        events,
        index_conversions(conversions),
        W,
        period,
        first_event_ms=first,
        conversions_known_until_ms=known_until,
    )


def test_index_conversions_sorts_and_dedupes() -> None:
    assert index_conversions([("a", 5), ("b", 1), ("a", 2), ("a", 5)]) == {"a": [2, 5], "b": [1]}


def test_precision_recall_and_lead_time_by_hand() -> None:
    # a is hot twice (only the 2nd is followed by its conversion at 150), b's conversion
    # comes too late, c never converts, d converts without ever being hot.
    m = _hot(
        [("a", 0), ("a", 100), ("b", 50), ("c", 500)],
        [("a", 150), ("b", 300), ("d", 20)],
    )
    assert (m.hot_events, m.hot_events_converted, m.precision) == (4, 1, 0.25)
    assert (m.conversions, m.conversions_caught) == (3, 1)
    assert m.recall == pytest.approx(1 / 3)
    # lead time: from the latest hot event before the conversion (a at 100) to it (150)
    assert m.lead_times_ms == (50,)
    assert m.median_lead_time_ms == 50.0


def test_window_edges_are_inclusive() -> None:
    assert _hot([("a", 0)], [("a", W)]).precision == 1.0  # exactly W later: counts
    assert _hot([("a", 0)], [("a", W + 1)]).precision == 0.0  # 1 ms too late
    assert _hot([("a", 10)], [("a", 10)]).precision == 1.0  # the same millisecond
    assert _hot([("a", 11)], [("a", 10)]).precision == 0.0  # hot after converting
    assert _hot([("a", 10)], [("a", 10 + W)]).recall == 1.0
    assert _hot([("a", 10)], [("a", 11 + W)]).recall == 0.0


def test_only_the_period_is_counted_but_windows_reach_outside() -> None:
    period = Period(100, 200)
    m = _hot([("a", 50), ("b", 150), ("c", 190)], [("b", 250), ("a", 120)], period=period)
    # hot events at 150 and 190 count; b's conversion at 250 (after the period) confirms it
    assert (m.hot_events, m.hot_events_converted) == (2, 1)
    # conversions: only a's at 120 is in the period; a was hot at 50, before the period
    assert (m.conversions, m.conversions_caught) == (1, 1)


def test_edges_of_the_data_are_counted_as_truncated() -> None:
    m = _hot([("a", 10), ("b", 950)], [("a", 30), ("b", 990)], first=0, known_until=1000)
    assert m.hot_events_window_truncated == 1  # b's window (950..1050) ends after 1000
    assert m.conversions_lookback_truncated == 1  # a's look-back (-70..30) starts before 0


def test_empty_inputs_give_none_not_errors() -> None:
    m = _hot([], [])
    assert (m.precision, m.recall, m.median_lead_time_ms) == (None, None, None)
    r = ranking_metrics({}, {}, cutoff_ms=0, window_ms=W)
    assert (r.auc, r.base_rate, r.deciles) == (None, None, ())


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([3.0, 2.0, 1.0], [True, False, False], 1.0),
        ([1.0, 2.0, 3.0], [True, False, False], 0.0),
        ([1.0, 1.0, 1.0, 1.0], [True, False, True, False], 0.5),
        ([2.0, 1.0, 1.0, 0.0], [True, True, False, False], 0.875),
        ([1.0, 2.0], [True, True], None),
        ([1.0, 2.0], [False, False], None),
    ],
)
def test_roc_auc_examples(scores: list[float], labels: list[bool], expected: float | None) -> None:
    assert roc_auc(scores, labels) == expected


@given(st.lists(st.tuples(st.integers(-3, 3).map(float), st.booleans()), min_size=2, max_size=40))
def test_roc_auc_equals_the_pairwise_definition(pairs: list[tuple[float, bool]]) -> None:
    scores = [s for s, _ in pairs]
    labels = [label for _, label in pairs]
    pos = [s for s, label in pairs if label]
    neg = [s for s, label in pairs if not label]
    auc = roc_auc(scores, labels)
    if not pos or not neg:
        assert auc is None
        return
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    assert auc == pytest.approx(wins / (len(pos) * len(neg)))


def test_roc_auc_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="length"):
        roc_auc([1.0], [True, False])


def test_lift_by_decile() -> None:
    ranked = [(f"lead-{i:03d}", float(100 - i)) for i in range(100)]
    positives = {"lead-000", "lead-001", "lead-050"}  # two in the top decile, one in the 6th
    deciles = lift_by_decile(ranked, positives)
    assert [d.leads for d in deciles] == [10] * 10
    assert [d.converted for d in deciles] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    overall = 3 / 100
    assert deciles[0].lift == pytest.approx(0.2 / overall)
    assert (deciles[0].max_score, deciles[0].min_score) == (100.0, 91.0)
    assert deciles[0].rate == 0.2


def test_lift_buckets_cover_every_lead_and_ties_break_by_lead_id() -> None:
    ranked = [(f"l{i}", 1.0) for i in range(23)]  # all tied: order by id
    deciles = lift_by_decile(ranked, {"l0"})
    assert sum(d.leads for d in deciles) == 23
    assert deciles[0].converted == 1  # "l0" sorts first
    assert [d.converted for d in lift_by_decile(ranked[:3], set())] == [0, 0, 0]  # n < 10


def test_ranking_uses_conversions_after_the_cutoff_within_the_window() -> None:
    scores = {"a": 5.0, "b": 1.0, "c": 3.0}
    conversions = index_conversions(
        [("a", 1000), ("b", 1000 + W), ("c", 1000 + W + 1), ("z", 1050)]
    )
    r = ranking_metrics(scores, conversions, cutoff_ms=1000, window_ms=W)
    # a converted AT the cut-off (already known then): not positive; b at the window's
    # end: positive; c one ms too late; z converts but was unknown at the cut-off.
    assert (r.leads, r.converted, r.converted_unknown_at_cutoff) == (3, 1, 1)
    assert r.auc == 0.0  # the only positive (b) has the lowest score
    assert (r.cutoff_ms, r.outcome_end_ms) == (1000, 1000 + W)


def test_backtest_combines_both_and_takes_conversions_as_known_up_to_the_last() -> None:
    conversions = index_conversions([("a", 500), ("b", 2000)])
    result = backtest(
        hot_events=[("a", 450), ("b", 1900)],
        scores_at_cutoff={"a": 1.0, "b": 2.0},
        cutoff_ms=1000,
        conversions=conversions,
        window_ms=W,
        period=Period(0, 1950),
        first_event_ms=0,
    )
    assert result.hot.precision == 1.0
    assert result.hot.hot_events_window_truncated == 0  # conversions known until 2000
    assert result.ranking.converted == 0  # nothing converts in (1000, 1100]
    assert result.window_ms == W
