"""A replay's output files, written into ``--out``: per rules file ``hot.jsonl`` (the
records the worker would publish) and ``scores.csv`` (every lead at the end time), the
backtest metrics when conversions are given, ``status_diff.csv`` for two rules files, and
``summary.json`` + ``report.html`` (:mod:`streams.replay.report`) over all of it.

Definitions (docs/replay.md has the long version):

* **end time**: ``--at`` if given, else the latest ``occurred_at`` replayed;
* **cut-off** (ranking metrics): the scores are taken when the replay first reaches an
  event later than the cut-off (default: the end time): what the live worker knew then;
* ``hot.jsonl`` is ordered by ``occurred_at`` then lead (each lead's records keep their
  order): the live order depends on its batching, the set does not. ``emitted_at`` is the
  replay's wall clock.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from schemas.times import datetime_to_ms, format_duration_ms, format_duration_rough, format_ms
from scoring import backtest
from scoring.crossings import ERASED, MERGED

from .charts import ReportRun
from .reading import ReadStats
from .report import TOP_LEADS, render_report
from .results import Replay, RuleRun

#: Top reasons written per lead in ``scores.csv``.
SCORE_REASONS = 3
#: Columns of ``status_diff.csv`` (+ ``first_conversion`` with conversions).
DIFF_FIELDS = (
    "lead_id",
    "hot_at_end_a",
    "hot_at_end_b",
    "hot_events_a",
    "hot_events_b",
    "first_hot_a",
    "first_hot_b",
    "score_a",
    "score_b",
)


@dataclass(frozen=True, slots=True)
class RunOutputs:
    """Where one rule set's files go, and its label in the summary and the report."""

    label: str
    rules_file: str
    directory: Path


def _time(ms: int | None) -> str | None:
    """:func:`schemas.times.format_ms`, None for no time."""
    return None if ms is None else format_ms(ms)


def write_hot(run: RuleRun, path: Path, emitted_at: datetime) -> None:
    """``hot.jsonl``: every crossing exactly as the worker publishes it."""
    with path.open("w", encoding="utf-8") as handle:
        for crossing in run.sorted_crossings():
            handle.write(crossing.to_record(emitted_at).model_dump_json())
            handle.write("\n")


def lead_rows(run: RuleRun, at_ms: int) -> list[dict[str, Any]]:
    """Per lead at ``at_ms``: score, grade, hot, top reasons; highest score first. An
    erased lead (a tombstone: no events since its erasure) has no row."""
    rows: list[dict[str, Any]] = []
    for lead_id, score, parts, grade, hot, applied, clock in run.leads.rows(at_ms, SCORE_REASONS):
        if applied == 0:
            continue
        rows.append(
            {
                "lead_id": lead_id,
                "score": score,
                "grade": grade or "",
                "hot": hot,
                "events": applied,
                "last_event_at": format_ms(clock),
                "top_reasons": "; ".join(f"{rule_id} {points:+.2f}" for rule_id, points in parts),
            }
        )
    rows.sort(key=lambda r: (-r["score"], r["lead_id"]))
    return rows


def write_scores(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """``scores.csv`` from :func:`lead_rows` (scores rounded to 4 decimals)."""
    fields = ["lead_id", "score", "grade", "hot", "events", "last_event_at", "top_reasons"]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        writer.writerows(
            [
                row["lead_id"],
                f"{row['score']:.4f}",
                row["grade"],
                "true" if row["hot"] else "false",
                row["events"],
                row["last_event_at"],
                row["top_reasons"],
            ]
            for row in rows
        )


def metrics_dict(result: backtest.Backtest) -> dict[str, Any]:
    """JSON form of one rule set's backtest."""
    hot, ranking = result.hot, result.ranking
    lead_time = hot.median_lead_time_ms
    return {
        "window": format_duration_ms(result.window_ms),
        "period": {
            "start": format_ms(result.period.start_ms),
            "end": format_ms(result.period.end_ms),
        },
        "hot_events": hot.hot_events,
        "hot_events_converted": hot.hot_events_converted,
        "precision": hot.precision,
        "hot_events_window_truncated": hot.hot_events_window_truncated,
        "conversions": hot.conversions,
        "conversions_caught": hot.conversions_caught,
        "recall": hot.recall,
        "conversions_lookback_truncated": hot.conversions_lookback_truncated,
        "median_lead_time_s": None if lead_time is None else lead_time / 1000,
        "median_lead_time": None if lead_time is None else format_duration_rough(lead_time),
        "ranking": {
            "cutoff": format_ms(ranking.cutoff_ms),
            "outcome_end": format_ms(ranking.outcome_end_ms),
            "leads": ranking.leads,
            "converted": ranking.converted,
            "base_rate": ranking.base_rate,
            "converted_unknown_at_cutoff": ranking.converted_unknown_at_cutoff,
            "auc": ranking.auc,
            "deciles": [
                {
                    "decile": d.decile,
                    "leads": d.leads,
                    "converted": d.converted,
                    "rate": d.rate,
                    "lift": d.lift,
                    "min_score": d.min_score,
                    "max_score": d.max_score,
                }
                for d in ranking.deciles
            ],
        },
    }


def _hot_times(run: RuleRun) -> dict[str, list[int]]:
    """Lead id -> the times it became hot."""
    times: dict[str, list[int]] = {}
    for c in run.crossings:
        if c.kind == "lead_became_hot":
            times.setdefault(c.lead_id, []).append(c.occurred_at_ms)
    return times


def status_differences(
    a: RuleRun,
    b: RuleRun,
    rows_a: Sequence[Mapping[str, Any]],
    rows_b: Sequence[Mapping[str, Any]],
    conversions: Mapping[str, Sequence[int]] | None,
) -> list[dict[str, Any]]:
    """Leads whose status differs between two runs: hot at the end in one only, or hot at
    some point in one only. Sorted by the larger of the two scores, highest first."""
    hot_a, hot_b = _hot_times(a), _hot_times(b)
    score_a = {r["lead_id"]: r["score"] for r in rows_a}
    score_b = {r["lead_id"]: r["score"] for r in rows_b}
    diffs = []
    hot_end_b = b.leads.hot()
    for lead_id, hot_end_a in a.leads.hot().items():
        ever_a, ever_b = lead_id in hot_a, lead_id in hot_b
        if hot_end_a == hot_end_b[lead_id] and ever_a == ever_b:
            continue
        row: dict[str, Any] = {
            "lead_id": lead_id,
            "hot_at_end_a": hot_end_a,
            "hot_at_end_b": hot_end_b[lead_id],
            "hot_events_a": len(hot_a.get(lead_id, ())),
            "hot_events_b": len(hot_b.get(lead_id, ())),
            "first_hot_a": format_ms(min(hot_a[lead_id])) if ever_a else None,
            "first_hot_b": format_ms(min(hot_b[lead_id])) if ever_b else None,
            "score_a": score_a[lead_id],
            "score_b": score_b[lead_id],
        }
        if conversions is not None:
            times = conversions.get(lead_id)
            row["first_conversion"] = format_ms(times[0]) if times else None
        diffs.append(row)
    diffs.sort(key=lambda r: (-max(r["score_a"], r["score_b"]), r["lead_id"]))
    return diffs


def _write_csv(rows: Sequence[Mapping[str, Any]], path: Path, fields: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: (f"{v:.4f}" if isinstance(v, float) else ("" if v is None else v))
                    for k, v in row.items()
                }
            )


def report_run(label: str, run: RuleRun, rows: Sequence[Mapping[str, Any]]) -> ReportRun:
    """What the report's charts and tables need from a run and its :func:`lead_rows`."""
    timeline: list[tuple[int, int]] = []
    hot = 0
    for crossing in run.sorted_crossings():
        if crossing.kind in (ERASED, MERGED):  # not crossings (an erased hot lead cooled first)
            continue
        hot += 1 if crossing.kind == "lead_became_hot" else -1
        timeline.append((crossing.occurred_at_ms, hot))
    return ReportRun(
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


def _backtest(
    replay: Replay,
    run: RuleRun,
    conversions: Mapping[str, Sequence[int]],
    window_ms: int,
    period: backtest.Period,
    cutoff_ms: int,
) -> dict[str, Any]:
    """One rule set's metrics (JSON form): its hot events and its scores at the cut-off."""
    assert replay.first_event_ms is not None
    result = backtest.backtest(
        hot_events=[
            (c.lead_id, c.occurred_at_ms) for c in run.crossings if c.kind == "lead_became_hot"
        ],
        scores_at_cutoff=run.scores_at(cutoff_ms, run.snapshot),
        cutoff_ms=cutoff_ms,
        conversions=conversions,
        window_ms=window_ms,
        period=period,
        first_event_ms=replay.first_event_ms,
    )
    return metrics_dict(result)


def _run_summary(
    run: RuleRun, where: RunOutputs, out_dir: Path, metrics: dict[str, Any] | None
) -> dict[str, Any]:
    """One rule set's part of ``summary.json``."""
    kinds = Counter(c.kind for c in run.crossings)
    relative = where.directory.relative_to(out_dir)
    return {
        "label": where.label,
        "rules_file": where.rules_file,
        "rules_version": run.rules.version,
        "thresholds": {"hot": run.rules.thresholds.hot, "cool": run.rules.thresholds.cool},
        "applied": run.applied,
        "duplicates": run.duplicates,
        "leads": len(run.leads),
        "leads_hot_at_end": sum(run.leads.hot().values()),
        "leads_ever_hot": len({c.lead_id for c in run.crossings if c.kind == "lead_became_hot"}),
        "crossings": {
            "lead_became_hot": kinds["lead_became_hot"],
            "lead_cooled": kinds["lead_cooled"],
            "lead_cooled_by_decay": sum(
                1 for c in run.crossings if c.kind == "lead_cooled" and c.trigger_event_id is None
            ),
            "cooled_at_end": run.cooled_at_end,
            "lead_erased": kinds[ERASED],
            "lead_merged": kinds[MERGED],
        },
        "files": {"hot": str(relative / "hot.jsonl"), "scores": str(relative / "scores.csv")},
        "metrics": metrics,
    }


def _summary(
    replay: Replay,
    stats: ReadStats,
    sources: Sequence[str],
    emitted_at: datetime,
    window_ms: int,
    conversions: Mapping[str, Sequence[int]] | None,
) -> dict[str, Any]:
    """``summary.json`` without its ``runs``, ``status_differences`` and ``timing``."""
    end_ms = replay.end_ms
    cutoff_ms = replay.cutoff_ms if replay.cutoff_ms is not None else end_ms
    first = replay.runs[0]
    return {
        "generated_at": format_ms(datetime_to_ms(emitted_at)),
        "sources": list(sources),
        "counts": {
            "records": stats.records,
            "blank_lines": stats.blank_lines,
            "valid_events": stats.valid,
            "bad": stats.bad,
            "after_at_ignored": replay.after_at,
            "applied": first.applied,
            "duplicates": first.duplicates,
            "leads": len(first.leads),
        },
        "bad_by_kind": dict(sorted(stats.bad_by_kind.items())),
        "bad_records": [r.to_dict() for r in stats.bad_records],
        "bad_records_listed": len(stats.bad_records),
        "time": {
            "first_event_at": _time(replay.first_event_ms),
            "last_event_at": _time(replay.last_event_ms),
            "at": _time(replay.at_ms),
            "end_at": _time(end_ms),
            "cutoff_at": _time(cutoff_ms),
            "note": (
                f"events that occurred after --at were ignored ({replay.after_at})"
                if replay.at_ms is not None
                else "end time = the latest occurred_at replayed"
            ),
        },
        "window": format_duration_ms(window_ms),
        "conversions": None
        if conversions is None
        else {"leads": len(conversions), "conversions": sum(len(t) for t in conversions.values())},
    }


def write_outputs(
    replay: Replay,
    stats: ReadStats,
    out_dir: Path,
    outputs: Sequence[RunOutputs],
    *,
    sources: Sequence[str],
    conversions: Mapping[str, Sequence[int]] | None = None,
    window_ms: int = 7 * 86_400_000,
    period: backtest.Period | None = None,
    emitted_at: datetime | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Write every output file of a replay into ``out_dir`` and return the summary.

    ``outputs`` names each run of ``replay`` (same order). Metrics are computed when
    ``conversions`` are given, over ``period`` (default: the replayed span). ``started``
    (a :func:`time.perf_counter` value) gives ``timing.total_s``.
    """
    output_started = time.perf_counter()
    emitted_at = emitted_at or datetime.now(UTC)
    out_dir.mkdir(parents=True, exist_ok=True)
    end_ms = replay.end_ms
    cutoff_ms = replay.cutoff_ms if replay.cutoff_ms is not None else end_ms
    if period is None and replay.first_event_ms is not None and end_ms is not None:
        period = backtest.Period(replay.first_event_ms, end_ms)

    summary = _summary(replay, stats, sources, emitted_at, window_ms, conversions)
    summary["runs"] = []
    report_runs: list[ReportRun] = []
    all_rows: list[list[dict[str, Any]]] = []
    for run, where in zip(replay.runs, outputs, strict=True):
        where.directory.mkdir(parents=True, exist_ok=True)
        write_hot(run, where.directory / "hot.jsonl", emitted_at)
        rows = lead_rows(run, end_ms) if end_ms is not None else []
        write_scores(rows, where.directory / "scores.csv")
        all_rows.append(rows)
        metrics = None
        if conversions is not None and period is not None and cutoff_ms is not None:
            metrics = _backtest(replay, run, conversions, window_ms, period, cutoff_ms)
        summary["runs"].append(_run_summary(run, where, out_dir, metrics))
        report_runs.append(report_run(where.label, run, rows))

    summary["status_differences"] = None
    diff_rows: list[dict[str, Any]] = []
    if len(replay.runs) == 2:
        run_a, run_b = replay.runs
        diff_rows = status_differences(run_a, run_b, all_rows[0], all_rows[1], conversions)
        fields = [*DIFF_FIELDS] + (["first_conversion"] if conversions is not None else [])
        _write_csv(diff_rows, out_dir / "status_diff.csv", fields)
        summary["status_differences"] = {"leads": len(diff_rows), "file": "status_diff.csv"}

    total = None if started is None else time.perf_counter() - started
    summary["timing"] = {
        "read_validate_s": round(stats.seconds, 3),
        "apply_s": round(replay.apply_seconds, 3),
        "outputs_s": round(time.perf_counter() - output_started, 3),
        "total_s": None if total is None else round(total, 3),
        "records_per_s": None if not total else round(stats.records / total),
    }
    (out_dir / "report.html").write_text(
        render_report(summary, report_runs, diff_rows), encoding="utf-8"
    )
    (out_dir / "summary.json").write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n"
    )
    return summary
