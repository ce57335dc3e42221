"""The SVG charts of ``report.html``: score distribution, lift by score decile, leads hot
over time. Each chart is a function of :class:`ReportRun` s (plain data, one per rules
file) returning inline SVG plus its legend; no script, no network."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from schemas.times import ms_to_datetime

#: Colours of rule set A and B (colour-blind safe pair), and of the thresholds.
COLOURS = ("#2563eb", "#ea580c")
HOT_COLOUR = "#dc2626"
COOL_COLOUR = "#64748b"
#: Most points drawn per time series (longer ones are thinned, keeping the peaks).
MAX_POINTS = 1500

# Chart geometry (SVG user units).
WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 58, 16, 16, 40


@dataclass(frozen=True, slots=True)
class ReportRun:
    """What the report needs from one rule set's replay (built by
    :func:`streams.replay.outputs.report_run`)."""

    label: str
    rules_version: str
    hot: float
    cool: float
    #: Every lead's score at the end time.
    scores: tuple[float, ...]
    #: ``(ms, number of hot leads just after)`` at every crossing, in time order.
    hot_timeline: tuple[tuple[int, int], ...]
    #: The highest-scoring leads: lead id, score, grade, hot, top reasons.
    top_leads: tuple[tuple[str, float, str, bool, str], ...]


# --------------------------------------------------------------------------- scales


def _nice_step(span: float, target: int) -> float:
    """A 1/2/5 x 10^k step giving about ``target`` ticks over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / target
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


_TIME_STEPS_MS = [
    m * 60_000 for m in (1, 5, 15, 30, 60, 180, 360, 720, 1440, 2880, 10_080, 43_200, 131_400)
]


def _time_ticks(lo: int, hi: int, target: int = 7) -> list[tuple[int, str]]:
    """Round times between ``lo`` and ``hi`` (ms), labelled as precisely as the step needs."""
    step = next((s for s in _TIME_STEPS_MS if (hi - lo) / s <= target), _TIME_STEPS_MS[-1])
    first = (lo // step + 1) * step
    if step < 86_400_000:
        spec = "%d %b %H:%M"
    elif hi - lo > 200 * 86_400_000:
        spec = "%d %b %Y"
    else:
        spec = "%d %b"
    return [(t, ms_to_datetime(t).strftime(spec)) for t in range(first, hi + 1, step)]


# --------------------------------------------------------------------------- SVG


class _Frame:
    """Maps data to the plot area of one chart and draws its axes."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, *, log_y: bool = False):
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1)
        self.log_y = log_y
        self.y0, self.y1 = (self._ty(y0), self._ty(y1))
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1

    def _ty(self, y: float) -> float:
        return math.log10(1 + y) if self.log_y else y

    def x(self, value: float) -> float:
        return LEFT + (value - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        t = (self._ty(value) - self.y0) / (self.y1 - self.y0)
        return HEIGHT - BOTTOM - t * (HEIGHT - TOP - BOTTOM)

    def y_axis(self, label: str) -> str:
        parts = []
        if self.log_y:
            ticks = [0.0] + [
                10.0**k for k in range(0, int(self.y1) + 2) if self._ty(10.0**k) <= self.y1
            ]
        else:
            step = _nice_step(self.y1 - self.y0, 5)
            start = math.ceil(self.y0 / step) * step
            ticks = [start + i * step for i in range(int((self.y1 - start) / step) + 1)]
        for tick in ticks:
            y = self.y(tick)
            text = f"{tick:,.0f}" if tick == int(tick) else f"{tick:g}"
            parts.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{text}</text>'
            )
        parts.append(
            f'<text x="14" y="{(TOP + HEIGHT - BOTTOM) / 2:.0f}" class="axis" text-anchor="middle" '
            f'transform="rotate(-90 14 {(TOP + HEIGHT - BOTTOM) / 2:.0f})">{escape(label)}</text>'
        )
        return "".join(parts)

    def x_ticks(self, ticks: Sequence[tuple[float, str]], label: str) -> str:
        parts = [
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" '
            f'y2="{HEIGHT - BOTTOM}" class="axisline"/>'
        ]
        for value, text in ticks:
            x = self.x(value)
            base = HEIGHT - BOTTOM
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" class="axisline"/>'
                f'<text x="{x:.1f}" y="{base + 16}" class="tick" text-anchor="middle">'
                f"{escape(text)}</text>"
            )
        parts.append(
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 4}" class="axis" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
        return "".join(parts)


def _svg(body: str, title: str) -> str:
    return (
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _legend(runs: Sequence[ReportRun], extra: Sequence[tuple[str, str, bool]] = ()) -> str:
    items = [
        f'<span><i style="background:{COLOURS[i]}"></i>{escape(r.label)}: '
        f"{escape(r.rules_version)}</span>"
        for i, r in enumerate(runs)
    ]
    items += [
        f'<span><i class="{"dash" if dashed else ""}" style="border-color:{colour};'
        f'background:{"transparent" if dashed else colour}"></i>{escape(text)}</span>'
        for text, colour, dashed in extra
    ]
    return f'<div class="legend">{"".join(items)}</div>'


def score_histogram(runs: Sequence[ReportRun], bins: int = 30) -> str:
    """Leads per score bucket at the end time (log scale), with the thresholds. The range
    stops at the 99th percentile (at least twice the hot threshold); the last bucket
    holds every higher score."""
    scores = sorted(s for r in runs for s in r.scores)
    if not scores:
        return '<p class="empty">No lead was scored.</p>'
    lo = min(0.0, scores[0])
    p99 = scores[min(len(scores) - 1, int(len(scores) * 0.99))]
    hi = min(scores[-1], max(p99, 2 * max(r.hot for r in runs)))
    hi = max(hi, max(r.hot for r in runs) * 1.1, lo + 1)
    width = (hi - lo) / bins
    counts = []
    for run in runs:
        row = [0] * bins
        for s in run.scores:
            row[max(0, min(bins - 1, int((s - lo) / width)))] += 1
        counts.append(row)
    frame = _Frame(lo, hi, 0, max(max(row) for row in counts), log_y=True)
    parts = [frame.y_axis("leads (log scale)")]
    bar = (frame.x(lo + width) - frame.x(lo)) / len(runs)
    for i, row in enumerate(counts):
        for b, count in enumerate(row):
            if count:
                x = frame.x(lo + b * width) + i * bar
                y = frame.y(count)
                upper = f"{lo + (b + 1) * width:.1f}" if b < bins - 1 else "more"
                parts.append(
                    f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" '
                    f'height="{HEIGHT - BOTTOM - y:.1f}" fill="{COLOURS[i]}">'
                    f"<title>{escape(runs[i].label)}: {count:,} leads with score "
                    f"{lo + b * width:.1f} to {upper}</title></rect>"
                )
    seen = set()
    for run in runs:
        for value, colour in ((run.hot, HOT_COLOUR), (run.cool, COOL_COLOUR)):
            if value in seen:
                continue
            seen.add(value)
            x = frame.x(value)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
                f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="5 4"/>'
            )
    step = _nice_step(hi - lo, 8)
    ticks = [(v, f"{v:g}") for v in _frange(math.ceil(lo / step) * step, hi, step)]
    label = "score at the end time" + (
        f" (last bar: {hi - width:,.1f} and above)" if scores[-1] > hi else ""
    )
    parts.append(frame.x_ticks(ticks, label))
    legend = _legend(
        runs, [("hot threshold", HOT_COLOUR, True), ("cool threshold", COOL_COLOUR, True)]
    )
    return _svg("".join(parts), "score distribution") + legend


def _frange(start: float, stop: float, step: float) -> list[float]:
    count = int((stop - start) / step + 1e-9) + 1
    return [round(start + i * step, 10) for i in range(max(count, 0))]


def lift_chart(runs: Sequence[ReportRun], summary_runs: Sequence[Mapping[str, Any]]) -> str:
    """Lift per score decile (decile 1 = highest scores), one bar per rule set."""
    deciles = [(s.get("metrics") or {}).get("ranking", {}).get("deciles", []) for s in summary_runs]
    lifts = [[d["lift"] or 0.0 for d in row] for row in deciles]
    if not any(lifts) or not any(v for row in lifts for v in row):
        return (
            '<p class="empty">No lift to show: no lead converted in the outcome window after '
            "the cut-off (see the ranking table).</p>"
        )
    n = max(len(row) for row in lifts)
    frame = _Frame(0, n, 0, max(1.5, max(v for row in lifts for v in row) * 1.1))
    parts = [frame.y_axis("lift (x base rate)")]
    slot = frame.x(1) - frame.x(0)
    bar = slot * 0.8 / len(lifts)
    for i, row in enumerate(lifts):
        for d, value in enumerate(row):
            x = frame.x(d) + slot * 0.1 + i * bar
            y = frame.y(value)
            info = deciles[i][d]
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 1:.1f}" '
                f'height="{HEIGHT - BOTTOM - y:.1f}" fill="{COLOURS[i]}"><title>'
                f"{escape(runs[i].label)} decile {d + 1}: lift {value:.2f}, "
                f"{info['converted']} of {info['leads']:,} converted</title></rect>"
            )
    y1 = frame.y(1)
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y1:.1f}" y2="{y1:.1f}" '
        f'stroke="{COOL_COLOUR}" stroke-dasharray="5 4"/>'
    )
    parts.append(frame.x_ticks([(d + 0.5, str(d + 1)) for d in range(n)], "score decile"))
    return _svg("".join(parts), "lift by decile") + _legend(
        runs, [("no lift (1x)", COOL_COLOUR, True)]
    )


def _thin(points: Sequence[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """At most ~``limit`` points: per time bucket keep the first, the max and the last."""
    if len(points) <= limit:
        return list(points)
    lo, hi = points[0][0], points[-1][0]
    buckets = max(limit // 3, 1)
    size = (hi - lo) / buckets or 1
    kept: list[tuple[int, int]] = []
    current: list[tuple[int, int]] = []
    index = 0
    for point in points:
        b = min(int((point[0] - lo) / size), buckets - 1)
        if b != index and current:
            kept.extend(dict.fromkeys([current[0], max(current, key=lambda p: p[1]), current[-1]]))
            current = []
        index = b
        current.append(point)
    if current:
        kept.extend(dict.fromkeys([current[0], max(current, key=lambda p: p[1]), current[-1]]))
    return kept


def hot_over_time(runs: Sequence[ReportRun], start_ms: int | None, end_ms: int | None) -> str:
    """Number of hot leads over event time, one step line per rule set."""
    if start_ms is None or end_ms is None or not any(r.hot_timeline for r in runs):
        return '<p class="empty">No lead became hot.</p>'
    top = max((n for r in runs for _, n in r.hot_timeline), default=1)
    frame = _Frame(start_ms, max(end_ms, start_ms + 1), 0, max(top, 1) * 1.1)
    parts = [frame.y_axis("leads hot")]
    for i, run in enumerate(runs):
        path = [f"M{frame.x(start_ms):.1f},{frame.y(0):.1f}"]
        for at_ms, count in _thin(run.hot_timeline, MAX_POINTS):
            path.append(f"H{frame.x(at_ms):.1f}V{frame.y(count):.1f}")
        path.append(f"H{frame.x(end_ms):.1f}")
        parts.append(
            f'<path d="{"".join(path)}" fill="none" stroke="{COLOURS[i]}" stroke-width="1.6"/>'
        )
    parts.append(frame.x_ticks(_time_ticks(start_ms, end_ms), "event time (UTC)"))
    return _svg("".join(parts), "leads hot over time") + _legend(runs)
