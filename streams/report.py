"""``report.html`` of a replay: one self-contained page (inline CSS and SVG, no script, no
network) with the numbers of ``summary.json`` as tables and four charts: score
distribution, lift by score decile, leads hot over time, and rule set A against B.

:func:`render_report` takes the summary dict (so the page and ``summary.json`` always show
the same numbers) plus the per-run series the charts need (:class:`ReportRun`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .replay import RuleRun

#: Colours of rule set A and B (colour-blind safe pair), and of the thresholds.
COLOURS = ("#2563eb", "#ea580c")
HOT_COLOUR = "#dc2626"
COOL_COLOUR = "#64748b"
#: Most points drawn per time series (longer ones are thinned, keeping the peaks).
MAX_POINTS = 1500
TOP_LEADS = 15
DIFF_ROWS = 50
BAD_ROWS = 20

# Chart geometry (SVG user units).
WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 58, 16, 16, 40


@dataclass(frozen=True, slots=True)
class ReportRun:
    """What the charts need from one rule set's replay."""

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

    @classmethod
    def build(cls, label: str, run: RuleRun, rows: Sequence[Mapping[str, Any]]) -> ReportRun:
        """From a replay's run and its :func:`streams.replay.lead_rows`."""
        timeline: list[tuple[int, int]] = []
        hot = 0
        for crossing in run.sorted_crossings():
            hot += 1 if crossing.kind == "lead_became_hot" else -1
            timeline.append((crossing.occurred_at_ms, hot))
        return cls(
            label=label,
            rules_version=run.rules.version,
            hot=run.rules.thresholds.hot,
            cool=run.rules.thresholds.cool,
            scores=tuple(r["score"] for r in rows),
            hot_timeline=tuple(timeline),
            top_leads=tuple(
                (r["lead_id"], r["score"], r["grade"], r["hot"], r["top_reasons"])
                for r in rows[:TOP_LEADS]
            ),
        )


# --------------------------------------------------------------------------- formatting


def _num(value: Any, digits: int = 3) -> str:
    """Numbers for tables: ints with thousands separators, ratios with ``digits``."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return escape(str(value))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


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
    return [
        (t, datetime.fromtimestamp(t / 1000, tz=UTC).strftime(spec))
        for t in range(first, hi + 1, step)
    ]


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


# --------------------------------------------------------------------------- tables


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """An HTML table; cells are HTML already (escape text first). An all-empty header
    is left out."""
    head = "".join(
        f'<th class="{"num" if i >= numeric_from else ""}">{escape(h)}</th>'
        for i, h in enumerate(header)
    )
    if not any(header):
        return f"<table><tbody>{_rows(rows, numeric_from)}</tbody></table>"
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{_rows(rows, numeric_from)}</tbody></table>"
    )


def _rows(rows: Sequence[Sequence[str]], numeric_from: int) -> str:
    return "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if i >= numeric_from else ""}">{cell}</td>'
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )


def _metric_rows(summary_runs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Rows of the side-by-side metrics table: a label, then one cell per rule set."""

    def cells(run: Mapping[str, Any]) -> list[str]:
        crossings = run["crossings"]
        values = [
            escape(run["rules_version"]),
            f"{run['thresholds']['hot']:g} / {run['thresholds']['cool']:g}",
            _num(crossings["lead_became_hot"]),
            f"{_num(crossings['lead_cooled'])} ({_num(crossings['lead_cooled_by_decay'])})",
            _num(run["leads_ever_hot"]),
            _num(run["leads_hot_at_end"]),
        ]
        m = run.get("metrics")
        if m:
            r = m["ranking"]
            top = r["deciles"][0]["lift"] if r["deciles"] else None
            values += [
                f"<b>{_pct(m['precision'])}</b> "
                f"({_num(m['hot_events_converted'])} of {_num(m['hot_events'])})",
                f"<b>{_pct(m['recall'])}</b> "
                f"({_num(m['conversions_caught'])} of {_num(m['conversions'])})",
                escape(m["median_lead_time"] or "n/a"),
                f"<b>{_num(r['auc'])}</b>",
                _num(top, 2),
                f"{_num(r['leads'])} / {_num(r['converted'])}",
            ]
        return values

    labels = [
        "rules version",
        "hot / cool thresholds",
        "lead_became_hot events",
        "lead_cooled events (by decay)",
        "leads ever hot",
        "leads hot at the end",
    ]
    if all(run.get("metrics") for run in summary_runs):
        labels += [
            "precision of hot events",
            "recall of conversions",
            "median lead time (hot to conversion)",
            "ROC AUC of the score at the cut-off",
            "top-decile lift",
            "leads ranked / converted after the cut-off",
        ]
    columns = [cells(run) for run in summary_runs]
    return [[label, *(column[i] for column in columns)] for i, label in enumerate(labels)]


def _overview(summary: Mapping[str, Any]) -> str:
    """Key/value table: sources, time span, counts."""
    counts, times = summary["counts"], summary["time"]
    bad = _num(counts["bad"])
    if counts["bad"]:
        kinds = ", ".join(f"{escape(k)}: {v:,}" for k, v in summary["bad_by_kind"].items())
        bad += f" ({kinds})"
    rows = [
        ["sources", "<br>".join(escape(s) for s in summary["sources"])],
        ["events replayed", f"{_num(times['first_event_at'])} to {_num(times['last_event_at'])}"],
        ["end time", f"{_num(times['end_at'])} <span class=note>({escape(times['note'])})</span>"],
        ["records read", _num(counts["records"])],
        [
            "valid events / applied / duplicates",
            f"{_num(counts['valid_events'])} / {_num(counts['applied'])} / "
            f"{_num(counts['duplicates'])}",
        ],
        ["bad records", bad],
        ["leads", _num(counts["leads"])],
    ]
    conversions = summary.get("conversions")
    if conversions:
        rows.append(
            [
                "conversions",
                f"{_num(conversions['conversions'])} of {_num(conversions['leads'])} leads; "
                f"window {escape(summary['window'])}",
            ]
        )
    return _table(["", ""], rows, numeric_from=2)


def render_report(
    summary: Mapping[str, Any],
    runs: Sequence[ReportRun],
    differences: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The whole page: KPI tiles, then one card per table or chart."""
    times = summary["time"]
    srun = summary["runs"]
    compare = len(runs) > 1
    versions = " vs ".join(run["rules_version"] for run in srun)
    title = f"leadscore replay: {versions}"
    header = ["", *[f"{run['label']}: {run['rules_file']}" for run in srun]]
    cards = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">Generated {escape(summary["generated_at"])} with the engine code of '
        "the live worker. Numbers are also in <code>summary.json</code>; definitions in "
        "<code>docs/replay.md</code>.</p>",
        _kpis(srun),
        _card("Overview", _overview(summary)),
        _card(
            "Rule sets side by side" if compare else "Results", _table(header, _metric_rows(srun))
        ),
        _card("Score distribution at the end time", score_histogram(runs)),
        _card(
            "Leads hot over time",
            hot_over_time(runs, _parse_ms(times["first_event_at"]), _parse_ms(times["end_at"])),
        ),
    ]
    if summary.get("conversions"):
        cutoff = ((srun[0].get("metrics") or {}).get("ranking") or {}).get("cutoff")
        note = (
            f"Leads known at the cut-off {escape(str(cutoff))}, ranked by their score then; "
            f"converted = a conversion in the following {escape(summary['window'])}."
        )
        body = f'<p class="note">{note}</p>' + lift_chart(runs, srun) + _decile_table(srun)
        cards.append(_card("Lift by score decile", body))
    else:
        body = (
            '<p class="empty">No <code>--conversions</code> given: precision, recall, lift '
            "and AUC need them.</p>"
        )
        cards.append(_card("Backtest", body))
    if compare:
        heading = f"Leads whose status differs ({len(differences):,})"
        cards.append(_card(heading, _diff_table(differences, summary)))
    for i, run in enumerate(runs):
        heading = f"Top leads at the end time: {run.label} ({run.rules_version})"
        cards.append(_card(heading, _top_table(run, i)))
    listed = summary["bad_records"]
    if listed:
        heading = f"Bad records ({summary['counts']['bad']:,}; first {min(BAD_ROWS, len(listed))})"
        cards.append(_card(heading, _bad_table(listed)))
    return _PAGE.format(title=escape(title), css=_CSS, body="\n".join(cards))


def _kpis(srun: Sequence[Mapping[str, Any]]) -> str:
    tiles = []
    for i, s in enumerate(srun):
        m = s.get("metrics") or {}
        r = m.get("ranking") or {}
        values = [
            ("hot events", _num(s["crossings"]["lead_became_hot"])),
            ("hot at the end", _num(s["leads_hot_at_end"])),
        ]
        if m:
            values += [
                ("precision", _pct(m.get("precision"))),
                ("recall", _pct(m.get("recall"))),
                ("AUC", _num(r.get("auc"))),
            ]
        inner = "".join(f"<div><b>{v}</b><span>{escape(k)}</span></div>" for k, v in values)
        tiles.append(
            f'<div class="kpi" style="border-color:{COLOURS[i]}"><h3>{escape(s["label"])}: '
            f"{escape(s['rules_version'])}</h3><div class=row>{inner}</div></div>"
        )
    return f'<div class="kpis">{"".join(tiles)}</div>'


def _decile_table(srun: Sequence[Mapping[str, Any]]) -> str:
    header = ["decile"]
    columns = []
    for s in srun:
        deciles = ((s.get("metrics") or {}).get("ranking") or {}).get("deciles") or []
        header += [f"{s['label']} scores", f"{s['label']} converted", f"{s['label']} lift"]
        columns.append(deciles)
    n = max((len(c) for c in columns), default=0)
    rows = []
    for d in range(n):
        row = [str(d + 1)]
        for deciles in columns:
            if d < len(deciles):
                x = deciles[d]
                row += [
                    f"{x['min_score']:.1f} to {x['max_score']:.1f}",
                    f"{x['converted']:,} of {x['leads']:,}",
                    _num(x["lift"], 2),
                ]
            else:
                row += ["", "", ""]
        rows.append(row)
    return _table(header, rows)


def _diff_table(differences: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    if not differences:
        return '<p class="empty">No lead differs: both rule sets make the same leads hot.</p>'
    conv = summary.get("conversions") is not None
    header = [
        "lead",
        "hot at end A",
        "hot at end B",
        "hot events A",
        "hot events B",
        "score A",
        "score B",
    ]
    header += ["first conversion"] if conv else []
    rows = []
    for d in differences[:DIFF_ROWS]:
        row = [
            escape(d["lead_id"]),
            _num(d["hot_at_end_a"]),
            _num(d["hot_at_end_b"]),
            _num(d["hot_events_a"]),
            _num(d["hot_events_b"]),
            _num(d["score_a"], 2),
            _num(d["score_b"], 2),
        ]
        if conv:
            row.append(escape(d.get("first_conversion") or ""))
        rows.append(row)
    more = (
        f'<p class="note">First {DIFF_ROWS} of {len(differences):,} by score; all in '
        "<code>status_diff.csv</code>.</p>"
        if len(differences) > DIFF_ROWS
        else ""
    )
    return _table(header, rows) + more


def _top_table(run: ReportRun, index: int) -> str:
    if not run.top_leads:
        return '<p class="empty">No lead.</p>'
    rows = [
        [
            escape(lead),
            f'<span class="bar" style="--w:{max(0.0, min(1.0, score / (run.hot * 1.5 or 1))):.3f};'
            f'--c:{COLOURS[index]}"></span>{score:,.2f}',
            escape(grade or "-"),
            '<span class="hot">hot</span>' if hot else "",
            escape(reasons),
        ]
        for lead, score, grade, hot, reasons in run.top_leads
    ]
    return _table(["lead", "score", "grade", "", "top reasons"], rows, numeric_from=1)


def _bad_table(records: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for r in records[:BAD_ROWS]:
        where = (
            f"line {r['line']}"
            if "line" in r
            else f"partition {r['partition']} offset {r['offset']}"
        )
        rows.append([escape(f"{r['source']} {where}"), escape(r["kind"]), escape(r["error"])])
    return _table(["where", "kind", "error"], rows, numeric_from=9)


def _card(title: str, body: str) -> str:
    return f'<section class="card"><h2>{escape(title)}</h2>{body}</section>'


def _parse_ms(text: str | None) -> int | None:
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return round(value.timestamp() * 1000)


_CSS = """
:root { --fg:#0f172a; --muted:#64748b; --line:#e2e8f0; --bg:#f8fafc; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1040px; margin:0 auto; padding:28px 20px 60px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:16px; margin:0 0 12px; }
h3 { font-size:13px; margin:0 0 8px; color:var(--muted); font-weight:600; }
.sub, .note { color:var(--muted); margin:0 0 16px; }
.note { font-size:12px; margin:6px 0 10px; }
.card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 20px;
  margin:16px 0; box-shadow:0 1px 2px rgba(15,23,42,.04); }
.kpis { display:grid; grid-template-columns:repeat(auto-fit,minmax(300px,1fr)); gap:16px; }
.kpi { background:#fff; border:1px solid var(--line); border-top:4px solid; border-radius:10px;
  padding:14px 18px; }
.kpi .row { display:flex; gap:22px; flex-wrap:wrap; }
.kpi b { display:block; font-size:22px; font-variant-numeric:tabular-nums; }
.kpi span { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { font-size:12px; color:var(--muted); font-weight:600; background:#f1f5f9; }
td.num, th.num { text-align:right; }
tbody tr:hover { background:#f8fafc; }
code { background:#f1f5f9; padding:1px 4px; border-radius:4px; font-size:12px; }
svg { width:100%; height:auto; display:block; margin-top:4px; }
svg .grid { stroke:#eef2f7; } svg .axisline { stroke:#94a3b8; }
svg .tick { font-size:11px; fill:#64748b; } svg .axis { font-size:12px; fill:#334155; }
.legend { display:flex; gap:18px; flex-wrap:wrap; font-size:12px; color:#334155; margin-top:6px; }
.legend i { display:inline-block; width:14px; height:10px; margin-right:6px; border-radius:2px;
  vertical-align:middle; border:2px solid transparent; }
.legend i.dash { height:0; border-width:0 0 2px; border-style:dashed; border-radius:0; }
.empty { color:var(--muted); font-style:italic; }
.hot { background:#fee2e2; color:#b91c1c; border-radius:9px; padding:1px 8px; font-size:12px; }
.bar { display:inline-block; width:60px; height:8px; margin-right:8px; border-radius:4px;
  background:linear-gradient(90deg,var(--c) calc(var(--w)*100%),#e2e8f0 0); }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body><main>
{body}
</main></body>
</html>
"""
