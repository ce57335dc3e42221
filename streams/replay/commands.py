"""The click commands ``leadscore replay`` and ``leadscore calibrate`` (registered by
``streams/cli.py``): options in, errors as messages, work handed to
:func:`streams.replay.run.run_replay` (replay) or to :mod:`scoring.calibrate` plus the
reference path (calibrate); what they print is :mod:`streams.replay.console`."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from schemas.events import LeadEvent
from schemas.formats import INPUT_FORMATS, InputFormat
from schemas.times import format_duration_ms, format_ms, parse_duration_ms, parse_time_ms
from schemas.validation import MAX_EVENT_BYTES
from scoring import backtest
from scoring.identity import IDENTITY_RECORD_MAX_BYTES
from scoring.rules import RuleSet
from scoring.rules_file import RulesError, build_ruleset, load_rules, load_rules_document
from streams.settings import SettingsError, load_settings

from .console import print_calibration, print_summary
from .conversions import load_conversions
from .errors import ReplayError
from .outputs import RunOutputs, write_outputs
from .reading import ReadStats, read_events
from .reference import replay_events
from .run import run_replay
from .sources import Source, open_source


def _kafka_config() -> Mapping[str, Any]:
    """Client configuration for ``kafka:TOPIC`` sources (LEADSCORE_* settings)."""
    # Imported here: streams.kafka loads the Kafka client, which file replays and
    # `leadscore --help` do not need.
    from streams.kafka import confluent_config  # noqa: PLC0415

    try:
        return confluent_config(load_settings())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _max_clock_skew(specs: Sequence[str]) -> int | None:
    """The worker's clock-skew policy (LEADSCORE_MAX_CLOCK_SKEW) for Kafka sources, so a
    replay rejects what the worker rejected."""
    if not any(s.startswith("kafka:") for s in specs):
        return None
    try:
        return load_settings().max_clock_skew
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _max_event_bytes(specs: Sequence[str], given: int | None) -> int:
    """``--max-event-bytes``, else the worker's setting for Kafka sources, else 64 KiB."""
    if given is not None:
        return given
    if any(s.startswith("kafka:") for s in specs):
        try:
            return load_settings().max_event_bytes
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None
    return MAX_EVENT_BYTES


def _time(text: str | None, option: str) -> int | None:
    """An RFC 3339 option (``--at``...) as ms; a bad one is a usage error naming it."""
    if text is None:
        return None
    try:
        return parse_time_ms(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _window(text: str) -> int:
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--window") from None


def _rules(path: Path) -> RuleSet:
    try:
        return load_rules(path)
    except RulesError as exc:
        raise click.ClickException(f"invalid rules file:\n{exc}") from None


def _sources(
    specs: Sequence[str],
    from_ms: int | None,
    to_ms: int | None,
    input_format: InputFormat = "leadscore",
) -> list[Source]:
    if (from_ms is not None or to_ms is not None) and not any(
        s.startswith("kafka:") for s in specs
    ):
        raise click.UsageError("--from/--to select a Kafka range: use them with kafka:TOPIC")
    try:
        return [
            open_source(
                s,
                from_ms=from_ms,
                to_ms=to_ms,
                kafka_config=_kafka_config,
                max_clock_skew_ms=_max_clock_skew(specs),
                input_format=input_format,
            )
            for s in specs
        ]
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from None


F = TypeVar("F", bound=Callable[..., Any])

# Options both commands share.
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_from_option = click.option(
    "--from",
    "from_text",
    metavar="TIME",
    help="kafka: sources: first message time (default: the oldest).",
)
_to_option = click.option(
    "--to",
    "to_text",
    metavar="TIME",
    help="kafka: sources: end message time, excluded (default: now).",
)
_progress_option = click.option(
    "--progress/--no-progress", default=True, help="Progress bar on stderr."
)
_format_option = click.option(
    "--format",
    "input_format",
    type=click.Choice(INPUT_FORMATS),
    default="leadscore",
    show_default=True,
    envvar="LEADSCORE_INPUT_FORMAT",
    help="What the records are: leadscore events, or Segment-spec messages "
    "(LEADSCORE_INPUT_FORMAT, as the worker).",
)


def _rules_option(help_text: str) -> Callable[[F], F]:
    return click.option("--rules", "rules_path", required=True, type=_FILE, help=help_text)


# ---------------------------------------------------------------------------- replay


@click.command()
@click.argument("sources", nargs=-1, required=True)
@_rules_option("Rules file to score with (A).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (created; files in it are replaced).",
)
@click.option(
    "--conversions",
    type=_FILE,
    help="CSV or JSONL with lead_id, converted_at: adds precision, recall, lift, AUC.",
)
@click.option(
    "--compare",
    "compare_path",
    type=_FILE,
    help="A second rules file (B): replayed on the same events, compared side by side.",
)
@click.option(
    "--at",
    "at_text",
    metavar="TIME",
    help="End time (RFC 3339); events that occurred later are ignored.",
)
@click.option(
    "--cutoff",
    "cutoff_text",
    metavar="TIME",
    help="Time at which leads are ranked for lift/AUC (default: the end time).",
)
@click.option(
    "--window",
    metavar="DURATION",
    default="7d",
    show_default=True,
    help="How long after becoming hot (or after the cut-off) a conversion counts.",
)
@_from_option
@_to_option
@click.option(
    "--max-event-bytes", type=int, help="Largest accepted event (default: as the worker)."
)
@click.option(
    "--control",
    "control_specs",
    multiple=True,
    metavar="SOURCE",
    help="Control events (kafka:lead-control, or a JSONL file of them; leadscore adjust, "
    "reset, erase) merged in by event time, as the worker meets them.",
)
@_format_option
@click.option(
    "--merge-identities/--no-merge-identities",
    "merge_identities",
    default=None,
    envvar="LEADSCORE_IDENTITY_MERGES",
    help="Merge identities as the worker does: route events to their known lead (anonymous "
    "ids linked by a Segment identify with both ids, alias or lead_linked events) "
    "[default: on for --format segment] (LEADSCORE_IDENTITY_MERGES). Off for a replay of "
    "the worker's identity topic (its events are routed already).",
)
@click.option(
    "--routed",
    is_flag=True,
    help="The sources are the worker's identity topic (kafka:<app id>-identity, leadscore "
    "format whatever --format says): events routed already, identity events applied where "
    "they stand, as live.",
)
@_progress_option
def replay(
    sources: tuple[str, ...],
    rules_path: Path,
    out_dir: Path,
    conversions: Path | None,
    compare_path: Path | None,
    at_text: str | None,
    cutoff_text: str | None,
    window: str,
    from_text: str | None,
    to_text: str | None,
    max_event_bytes: int | None,
    control_specs: tuple[str, ...],
    input_format: InputFormat,
    merge_identities: bool | None,
    routed: bool,
    progress: bool,
) -> None:
    """Replay event logs through the live engine (in memory) and backtest the rules.

    SOURCES are JSONL event files (.gz too) or kafka:TOPIC. Writes to --out: hot.jsonl
    (the lead_became_hot / lead_cooled records the worker would publish), scores.csv
    (every lead at the end time), summary.json and report.html. Bad lines are counted and
    listed with their line number, never fatal.

    \b
    Examples:
      leadscore replay examples/events.jsonl --rules scoring/default_rules.yaml --out out/
      leadscore replay events.jsonl.gz --rules new.yaml --compare old.yaml \\
          --conversions conversions.csv --window 14d --out out/
      leadscore replay kafka:lead-events --from 2026-11-01T00:00:00Z --rules r.yaml --out out/
      leadscore replay kafka:lead-events --control kafka:lead-control --rules r.yaml --out out/
      leadscore replay examples/segment/events.jsonl --format segment \\
          --rules examples/segment/rules.yaml --out out/segment
      leadscore replay kafka:leadscore-identity --routed --rules r.yaml --out out/
    """
    started = time.perf_counter()
    at_ms = _time(at_text, "--at")
    cutoff_ms = _time(cutoff_text, "--cutoff")
    window_ms = _window(window)
    rulesets = [(_rules(rules_path), str(rules_path))]
    if compare_path is not None:
        rulesets.append((_rules(compare_path), str(compare_path)))
    from_ms, to_ms = _time(from_text, "--from"), _time(to_text, "--to")
    if routed:
        input_format = "leadscore"  # (what the worker writes to its identity topic)
    opened = _sources(sources, from_ms, to_ms, input_format)
    control: list[Source] = []  # (leadscore's format; --from/--to apply to kafka: ones)
    for spec in control_specs:
        kafka = spec.startswith("kafka:")
        control += _sources([spec], from_ms if kafka else None, to_ms if kafka else None)
    try:
        summary = run_replay(
            opened,
            rulesets,
            out_dir,
            conversions_path=conversions,
            at_ms=at_ms,
            cutoff_ms=cutoff_ms,
            window_ms=window_ms,
            max_event_bytes=(
                max(IDENTITY_RECORD_MAX_BYTES, max_event_bytes or 0)
                if routed
                else _max_event_bytes(sources, max_event_bytes)
            ),
            progress=progress,
            control=control,
            merge_identities=(
                input_format == "segment" if merge_identities is None else merge_identities
            ),
            routed=routed,
        )
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from None
    print_summary(summary, out_dir, time.perf_counter() - started)


# ---------------------------------------------------------------------------- calibrate


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--conversions", required=True, type=_FILE, help="CSV or JSONL with lead_id, converted_at."
)
@_rules_option("Base rules: their rules and conditions are kept, their points re-learned.")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="New rules file to write.",
)
@click.option(
    "--until",
    "until_text",
    metavar="TIME",
    help="Train on events and conversions up to this time (default: 70% of the span).",
)
@click.option(
    "--window",
    metavar="DURATION",
    default="7d",
    show_default=True,
    help="A sample is positive when the lead converts within this window.",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the held-out backtest (report.html, summary.json...) here.",
)
@_from_option
@_to_option
@click.option("--seed", default=0, show_default=True, help="Seed of the sampled times.")
@_format_option
@_progress_option
def calibrate(
    sources: tuple[str, ...],
    conversions: Path,
    rules_path: Path,
    out_path: Path,
    until_text: str | None,
    window: str,
    report_dir: Path | None,
    from_text: str | None,
    to_text: str | None,
    seed: int,
    input_format: InputFormat,
    progress: bool,
) -> None:
    """Learn the points of each rule from history, and backtest them on held-out data.

    Fits a regularised logistic regression of "converts within --window" on each rule's
    decayed contribution (training data: events and conversions up to --until only), and
    writes --out: the base rules with new points, scaled so that the hot threshold flags as
    many leads as before, and the version suffixed "-calibrated". Then replays all events
    with both files and prints their metrics on the held-out period (after --until).

    \b
    Example:
      leadscore calibrate events.jsonl --conversions conversions.csv \\
          --rules base.yaml --out calibrated.yaml --window 1d
    """
    started = time.perf_counter()
    window_ms = _window(window)
    base = _rules(rules_path)
    try:
        # The rules loader, not yaml.safe_load: country NO must stay the text "NO".
        base_doc = load_rules_document(rules_path)
    except RulesError as exc:  # load_rules just read it: unlikely
        raise click.ClickException(str(exc)) from None
    opened = _sources(sources, _time(from_text, "--from"), _time(to_text, "--to"), input_format)
    stats = ReadStats()
    events, conv = _history(opened, sources, conversions, stats, progress)
    first = min(e.occurred_at_ms for e in events)
    until_ms = _until(events, first, until_text)

    # scoring.calibrate imports numpy: loaded only when calibrating, not for every
    # `leadscore` command.
    from scoring.calibrate import (  # noqa: PLC0415
        CalibrationError,
        calibrate_points,
        calibrated_document,
    )

    try:
        result = calibrate_points(
            events, conv, base, until_ms=until_ms, window_ms=window_ms, seed=seed
        )
    except CalibrationError as exc:
        raise click.ClickException(str(exc)) from None
    doc = calibrated_document(base_doc, result)
    try:
        new_rules = build_ruleset(doc, source=str(out_path))
    except RulesError as exc:  # would be a bug: same rules, finite points
        raise click.ClickException(f"calibrated rules are invalid:\n{exc}") from None
    header = (
        f"# Calibrated by `leadscore calibrate` from {rules_path} on {', '.join(sources)}\n"
        f"# with {conversions}: trained on {format_ms(first)} .. {format_ms(until_ms)}, "
        f"window {format_duration_ms(window_ms)}.\n"
        "# Rules and conditions are the base file's; only points (caps scaled with them)\n"
        "# and the version changed.\n"
    )
    out_path.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))

    # Held-out backtest: replay everything with both files, count only after --until.
    replayed = replay_events([events], [base, new_rules], cutoff_ms=until_ms)
    assert replayed.end_ms is not None
    with tempfile.TemporaryDirectory(prefix="leadscore-calibrate-") as scratch:
        target = report_dir or Path(scratch)  # without --report-dir only the numbers are kept
        summary = write_outputs(
            replayed,
            stats,
            target,
            [
                RunOutputs("A", str(rules_path), target),
                RunOutputs("B", str(out_path), target / "compare"),
            ],
            sources=[s.name for s in opened],
            conversions=conv,
            window_ms=window_ms,
            period=backtest.Period(until_ms + 1, replayed.end_ms),
        )
    seconds = time.perf_counter() - started
    print_calibration(result.describe(), summary, out_path, report_dir, seconds)


def _history(
    opened: Sequence[Source],
    specs: Sequence[str],
    conversions: Path,
    stats: ReadStats,
    progress: bool,
) -> tuple[list[LeadEvent], dict[str, list[int]]]:
    """Every valid event of the sources (at least one), and the conversions by lead."""
    try:
        conv = backtest.index_conversions(load_conversions(conversions))
        max_bytes = _max_event_bytes(specs, None)
        events = [
            e
            for chunk in read_events(opened, stats, max_event_bytes=max_bytes, progress=progress)
            for e in chunk
        ]
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from None
    if not events:
        raise click.ClickException("no valid event in the sources")
    return events, conv


def _until(events: Sequence[LeadEvent], first: int, until_text: str | None) -> int:
    """``--until``, by default 70% of the events' span; it must lie inside the span."""
    last = max(e.occurred_at_ms for e in events)
    until_ms = _time(until_text, "--until")
    if until_ms is None:
        until_ms = first + (last - first) * 7 // 10
    if not first < until_ms < last:
        raise click.BadParameter(
            f"must lie inside the events' span {format_ms(first)} .. {format_ms(last)}",
            param_hint="--until",
        )
    return until_ms
