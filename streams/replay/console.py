"""What ``leadscore replay`` and ``leadscore calibrate`` print: the replay's summary lines
and calibrate's base-versus-calibrated table with its one-line verdict. Everything comes
from the summary dict that ``summary.json`` holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from scoring import backtest


def print_summary(summary: Mapping[str, Any], out_dir: Path, seconds: float) -> None:
    counts = summary["counts"]
    click.echo(
        f"replayed {counts['records']:,} records in {seconds:.1f}s "
        f"({counts['records'] / max(seconds, 1e-9):,.0f}/s): {counts['applied']:,} applied, "
        f"{counts['duplicates']:,} duplicates, {counts['bad']:,} bad, "
        f"{counts['after_at_ignored']:,} after --at; {counts['leads']:,} leads"
    )
    times = summary["time"]
    if times["first_event_at"] is None:
        click.echo(f"no event replayed; end {times['end_at'] or 'n/a'}")
    else:
        span = f"{times['first_event_at']} .. {times['last_event_at']}"
        click.echo(f"events {span}; end {times['end_at']}")
    for run in summary["runs"]:
        c = run["crossings"]
        line = (
            f"{run['label']} {run['rules_version']}: {c['lead_became_hot']:,} hot, "
            f"{c['lead_cooled']:,} cooled; {run['leads_hot_at_end']:,} hot at the end"
        )
        m = run["metrics"]
        if m:
            line += (
                f"; precision {backtest.format_ratio(m['precision'])}, "
                f"recall {backtest.format_ratio(m['recall'])}, "
                f"AUC {backtest.format_ratio(m['ranking']['auc'])}"
            )
        click.echo(line)
    if summary["status_differences"]:
        click.echo(f"{summary['status_differences']['leads']:,} leads differ (status_diff.csv)")
    click.echo(f"wrote {out_dir}/report.html, summary.json, hot.jsonl, scores.csv")


def print_calibration(
    fit: Sequence[str],
    summary: Mapping[str, Any],
    out_path: Path,
    report_dir: Path | None,
    seconds: float,
) -> None:
    for line in fit:
        click.echo(line)
    a, b = summary["runs"]
    ma, mb = a["metrics"], b["metrics"]
    click.echo(
        f"\nheld-out period {ma['period']['start']} .. {ma['period']['end']} "
        f"(window {ma['window']}; ranking at {ma['ranking']['cutoff']}):"
    )
    rows = [
        ("", f"base {a['rules_version']}", f"calibrated {b['rules_version']}"),
        ("hot events", _int(ma["hot_events"]), _int(mb["hot_events"])),
        ("precision", _ratio(ma["precision"]), _ratio(mb["precision"])),
        ("recall", _ratio(ma["recall"]), _ratio(mb["recall"])),
        ("median lead time", ma["median_lead_time"] or "n/a", mb["median_lead_time"] or "n/a"),
        ("ROC AUC", _ratio(ma["ranking"]["auc"]), _ratio(mb["ranking"]["auc"])),
        ("top-decile lift", _lift(ma), _lift(mb)),
    ]
    for name, x, y in rows:
        click.echo(f"  {name:<18} {x:>22} {y:>26}")
    verdict = _verdict(ma, mb)
    click.echo(f"\n{verdict}")
    click.echo(f"wrote {out_path}" + (f" and {report_dir}/report.html" if report_dir else ""))
    click.echo(f"({seconds:.1f}s)")


def _int(value: int) -> str:
    return f"{value:,}"


def _ratio(value: float | None) -> str:
    return backtest.format_ratio(value)


def _lift(metrics: Mapping[str, Any]) -> str:
    deciles = metrics["ranking"]["deciles"]
    return backtest.format_ratio(deciles[0]["lift"], 2) if deciles else "n/a"


def _verdict(base: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """One honest line: better, worse or mixed on the held-out period."""
    pairs = [
        ("precision", base["precision"], new["precision"]),
        ("recall", base["recall"], new["recall"]),
        ("AUC", base["ranking"]["auc"], new["ranking"]["auc"]),
    ]
    known = [(n, x, y) for n, x, y in pairs if x is not None and y is not None]
    if not known:
        return "Not enough held-out conversions to compare the two rule sets."
    better = ", ".join(n for n, x, y in known if y > x)
    worse = ", ".join(n for n, x, y in known if y < x)
    where = "on the held-out period"
    if better and not worse:
        return f"The calibrated rules beat the base rules {where} (better: {better})."
    if worse and not better:
        return f"The calibrated rules do NOT beat the base rules {where} (worse: {worse})."
    if not better:
        return f"The calibrated rules perform the same as the base rules {where}."
    return f"Mixed result {where}: the calibrated rules are better on {better}, worse on {worse}."
