"""``report.html`` of a replay: one self-contained page (inline CSS and SVG, no script, no
network) with the numbers of ``summary.json`` as tables, and the charts of
:mod:`streams.replay.charts`.

:func:`render_report` takes the summary dict (so the page and ``summary.json`` always show
the same numbers) plus the per-run series the charts need (:class:`ReportRun`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from schemas.times import parse_time_ms

from .charts import COLOURS, ReportRun, hot_over_time, lift_chart, score_histogram

#: Rows of the report's tables: top leads per rule set, leads that differ, bad records.
TOP_LEADS = 15
DIFF_ROWS = 50
BAD_ROWS = 20


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
            hot_over_time(runs, _ms(times["first_event_at"]), _ms(times["end_at"])),
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


def _ms(text: str | None) -> int | None:
    """A time of the summary (``None`` for no time) as ms."""
    return None if text is None else parse_time_ms(text)


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
