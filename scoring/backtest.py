"""Backtest metrics: how well hot events and scores predicted real conversions.

Pure functions over plain data (no I/O, no clock); ``streams/replay/outputs.py`` feeds them the
crossings and scores of a replay and the conversions read from a file. Definitions (see
also docs/replay.md); ``W`` is the window, all times are ms since the epoch:

* **precision** of hot events: the share of ``lead_became_hot`` events (at ``t``) followed
  by a conversion of the same lead in ``[t, t + W]``;
* **recall**: the share of conversions (at ``c``) preceded by a ``lead_became_hot`` of the
  same lead in ``[c - W, c]``;
* **lead time** of a caught conversion: ``c`` minus the latest ``lead_became_hot`` of that
  lead in ``[c - W, c]`` (how long sales had been warned); the median is reported;
* **ranking** at a cut-off ``T``: every lead known at ``T`` is ranked by its score at ``T``;
  it is *positive* when it converts in ``(T, T + W]``. ROC AUC (ties count one half) and
  the conversion rate by score decile, as lift over the overall rate.

Hot events and conversions are only counted inside an evaluation :class:`Period` (the
replayed span, or the held-apart part of it for ``calibrate``); the window may reach
outside the period (a hot event late in the period can be confirmed by a conversion after
it). Hot events whose window reaches past what the conversions cover, and conversions
whose look-back starts before the first event, are counted separately: near the edges of
the data a metric can only be lower than the truth, the same way for every rule set.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Number of score buckets in the lift table.
DECILES = 10


@dataclass(frozen=True, slots=True)
class Period:
    """An evaluation period ``[start_ms, end_ms]`` (both ends included)."""

    start_ms: int
    end_ms: int

    def __contains__(self, at_ms: object) -> bool:
        return isinstance(at_ms, int) and self.start_ms <= at_ms <= self.end_ms


@dataclass(frozen=True, slots=True)
class HotMetrics:
    """Precision, recall and lead time of ``lead_became_hot`` events in a period."""

    hot_events: int
    #: Hot events followed by a conversion of their lead within the window.
    hot_events_converted: int
    #: Hot events whose window ends after the last time the conversions cover.
    hot_events_window_truncated: int
    conversions: int
    #: Conversions preceded by a hot event of their lead within the window.
    conversions_caught: int
    #: Conversions whose look-back window starts before the first event of the log.
    conversions_lookback_truncated: int
    #: Lead time of each caught conversion (ms), in conversion order.
    lead_times_ms: tuple[int, ...]

    @property
    def precision(self) -> float | None:
        return _ratio(self.hot_events_converted, self.hot_events)

    @property
    def recall(self) -> float | None:
        return _ratio(self.conversions_caught, self.conversions)

    @property
    def median_lead_time_ms(self) -> float | None:
        return float(statistics.median(self.lead_times_ms)) if self.lead_times_ms else None


@dataclass(frozen=True, slots=True)
class Decile:
    """One score bucket of the ranked leads (decile 1 = the highest scores)."""

    decile: int
    leads: int
    converted: int
    min_score: float
    max_score: float
    #: Conversion rate of the bucket divided by the overall rate (None if no conversion).
    lift: float | None

    @property
    def rate(self) -> float | None:
        return _ratio(self.converted, self.leads)


@dataclass(frozen=True, slots=True)
class RankingMetrics:
    """How well the scores at a cut-off ranked the leads that then converted."""

    cutoff_ms: int
    #: The outcome window is ``(cutoff_ms, outcome_end_ms]``.
    outcome_end_ms: int
    leads: int
    converted: int
    #: Leads converting in the outcome window that had no event by the cut-off (not ranked).
    converted_unknown_at_cutoff: int
    auc: float | None
    deciles: tuple[Decile, ...]

    @property
    def base_rate(self) -> float | None:
        return _ratio(self.converted, self.leads)


@dataclass(frozen=True, slots=True)
class Backtest:
    """Every metric of one rule set's replay against the conversions."""

    window_ms: int
    period: Period
    hot: HotMetrics
    ranking: RankingMetrics


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# --------------------------------------------------------------------------- conversions


def index_conversions(pairs: Iterable[tuple[str, int]]) -> dict[str, list[int]]:
    """``(lead_id, converted_at_ms)`` pairs -> lead -> sorted distinct conversion times."""
    by_lead: dict[str, set[int]] = {}
    for lead_id, at_ms in pairs:
        by_lead.setdefault(lead_id, set()).add(at_ms)
    return {lead_id: sorted(times) for lead_id, times in by_lead.items()}


def _any_in(times: Sequence[int], lo: int, hi: int) -> int | None:
    """The first of the sorted ``times`` in ``[lo, hi]``, or None."""
    i = bisect.bisect_left(times, lo)
    return times[i] if i < len(times) and times[i] <= hi else None


def _last_in(times: Sequence[int], lo: int, hi: int) -> int | None:
    """The last of the sorted ``times`` in ``[lo, hi]``, or None."""
    i = bisect.bisect_right(times, hi)
    return times[i - 1] if i > 0 and times[i - 1] >= lo else None


# --------------------------------------------------------------------------- hot events


def hot_metrics(
    hot_events: Iterable[tuple[str, int]],
    conversions: Mapping[str, Sequence[int]],
    window_ms: int,
    period: Period,
    *,
    first_event_ms: int,
    conversions_known_until_ms: int,
) -> HotMetrics:
    """Precision / recall / lead time of ``hot_events`` (``(lead_id, became_hot_ms)``).

    ``conversions`` maps a lead to its sorted conversion times (:func:`index_conversions`).
    Only hot events and conversions inside ``period`` are counted. ``first_event_ms`` and
    ``conversions_known_until_ms`` only feed the ``*_truncated`` counts.
    """
    hot_by_lead: dict[str, list[int]] = {}
    counted = converted = truncated = 0
    for lead_id, at_ms in hot_events:
        hot_by_lead.setdefault(lead_id, []).append(at_ms)
        if at_ms not in period:
            continue
        counted += 1
        if _any_in(conversions.get(lead_id, ()), at_ms, at_ms + window_ms) is not None:
            converted += 1
        if at_ms + window_ms > conversions_known_until_ms:
            truncated += 1
    for hot_times in hot_by_lead.values():
        hot_times.sort()

    n_conversions = caught = lookback_truncated = 0
    lead_times: list[tuple[int, int]] = []
    for lead_id, conversion_times in conversions.items():
        for at_ms in conversion_times:
            if at_ms not in period:
                continue
            n_conversions += 1
            if at_ms - window_ms < first_event_ms:
                lookback_truncated += 1
            warned = _last_in(hot_by_lead.get(lead_id, ()), at_ms - window_ms, at_ms)
            if warned is not None:
                caught += 1
                lead_times.append((at_ms, at_ms - warned))
    lead_times.sort()
    return HotMetrics(
        hot_events=counted,
        hot_events_converted=converted,
        hot_events_window_truncated=truncated,
        conversions=n_conversions,
        conversions_caught=caught,
        conversions_lookback_truncated=lookback_truncated,
        lead_times_ms=tuple(lt for _, lt in lead_times),
    )


# --------------------------------------------------------------------------- ranking


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve: the probability that a random positive scores higher
    than a random negative, ties counting one half (Mann-Whitney U with mid-ranks).
    None when there are no positives or no negatives."""
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0  # sum of the (1-based, tie-averaged) ranks of the positives
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mid_rank = (i + j) / 2 + 1
        rank_sum += mid_rank * sum(1 for k in order[i : j + 1] if labels[k])
        i = j + 1
    u = rank_sum - positives * (positives + 1) / 2
    return u / (positives * negatives)


def lift_by_decile(
    ranked: Sequence[tuple[str, float]], positives: Iterable[str], buckets: int = DECILES
) -> tuple[Decile, ...]:
    """Conversion rate per score bucket. ``ranked`` is ``(lead_id, score)``; leads are
    sorted by score (highest first, ties by lead id) and cut into ``buckets`` groups of
    (nearly) equal size (one lead each when there are fewer leads). Lift = bucket rate /
    overall rate."""
    positive = set(positives)
    order = sorted(ranked, key=lambda item: (-item[1], item[0]))
    n = len(order)
    total = sum(1 for lead_id, _ in order if lead_id in positive)
    overall = total / n if n else 0.0
    result: list[Decile] = []
    count = min(buckets, n)  # fewer leads than buckets: one lead per bucket
    for b in range(count):
        part = order[b * n // count : (b + 1) * n // count]
        hits = sum(1 for lead_id, _ in part if lead_id in positive)
        result.append(
            Decile(
                decile=b + 1,
                leads=len(part),
                converted=hits,
                min_score=part[-1][1],
                max_score=part[0][1],
                lift=(hits / len(part)) / overall if overall > 0 else None,
            )
        )
    return tuple(result)


def ranking_metrics(
    scores: Mapping[str, float],
    conversions: Mapping[str, Sequence[int]],
    cutoff_ms: int,
    window_ms: int,
) -> RankingMetrics:
    """Rank the leads of ``scores`` (their scores at ``cutoff_ms``) against conversions in
    ``(cutoff_ms, cutoff_ms + window_ms]``."""
    end_ms = cutoff_ms + window_ms
    converters = {
        lead_id
        for lead_id, times in conversions.items()
        if _any_in(times, cutoff_ms + 1, end_ms) is not None
    }
    ranked = sorted(scores.items())
    labels = [lead_id in converters for lead_id, _ in ranked]
    return RankingMetrics(
        cutoff_ms=cutoff_ms,
        outcome_end_ms=end_ms,
        leads=len(ranked),
        converted=sum(labels),
        converted_unknown_at_cutoff=len(converters - scores.keys()),
        auc=roc_auc([score for _, score in ranked], labels),
        deciles=lift_by_decile(ranked, converters),
    )


def backtest(
    *,
    hot_events: Iterable[tuple[str, int]],
    scores_at_cutoff: Mapping[str, float],
    cutoff_ms: int,
    conversions: Mapping[str, Sequence[int]],
    window_ms: int,
    period: Period,
    first_event_ms: int,
) -> Backtest:
    """All metrics of one replay. The conversions are taken to be complete up to the later
    of the period's end and the last conversion listed."""
    last_conversion = max((times[-1] for times in conversions.values() if times), default=0)
    return Backtest(
        window_ms=window_ms,
        period=period,
        hot=hot_metrics(
            hot_events,
            conversions,
            window_ms,
            period,
            first_event_ms=first_event_ms,
            conversions_known_until_ms=max(period.end_ms, last_conversion),
        ),
        ranking=ranking_metrics(scores_at_cutoff, conversions, cutoff_ms, window_ms),
    )


def format_ratio(value: float | None, digits: int = 3) -> str:
    """``0.123`` / ``n/a``: for tables."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"
