"""Replay's native fast path (``replay_sources``) against the plain path (pydantic events
through ``MemoryStore``): same crossings, same lead rows, same counts, for random logs and
random rule sets, with bad lines, duplicates, profiles, ``--at`` and a cut-off."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas._native import Reader
from schemas.events import PROFILE_FIELDS
from schemas.times import ms_to_datetime, parse_time_ms
from schemas.validation import MAX_EVENT_BYTES
from scoring._native import LeadTable
from scoring.rules import RuleSet
from scoring.rules_file import default_rules_path, load_rules
from streams.replay.control import merge_control, read_control
from streams.replay.fast import replay_sources
from streams.replay.outputs import lead_rows
from streams.replay.reading import ReadStats, read_events
from streams.replay.reference import replay_events
from streams.replay.results import NEVER, Replay
from streams.replay.sources import FileSource
from tests.strategies import BASE_MS, DAY_MS, generate_event_log, rule_sets

Fit = tuple[float, bool]
BASE_DAY_MS = parse_time_ms("2026-01-02T00:00:00Z")
EXAMPLES = max(10, int(os.environ.get("PROPERTY_TEST_EXAMPLES", "150")) // 5)

BAD_LINES = [
    b'{"event_id": "bad", "type": "page_view"',
    b'{"event_id": "e", "lead_id": "x", "occurred_at": "2026-01-02T00:00:00", '
    b'"type": "page_view", "url": "u"}',
    b"   ",
    b"not json",
    # Valid, but declined by the fast path (lowercase z, -0): pydantic decides.
    b'{"event_id": "z1", "lead_id": "lead-00001", "occurred_at": "2026-01-02T00:00:00z", '
    b'"type": "page_view", "url": "https://example.com/pricing"}',
    b'{"event_id": "z2", "lead_id": "lead-00002", "occurred_at": "2026-01-02T00:00:00Z", '
    b'"type": "page_view", "url": "https://example.com/a", "properties": {"n": -0}}',
]


def test_the_reader_takes_event_types_and_profile_fields_from_python() -> None:
    """Nothing about profiles is hard-coded natively: the reader hands over the profile
    attributes it is told, in the order it is told."""
    rules = load_rules(default_rules_path())
    seen: list[tuple[object, ...]] = []

    def on_profile(lead: str, event_id: str, at_ms: int, values: tuple[object, ...]) -> Fit:
        seen.append((lead, event_id, at_ms, values))
        return (0.0, True)

    reader = Reader({"lead_profile": []}, "lead_profile", ["country", "email"])
    line = (
        b'{"event_id": "p1", "lead_id": "l", "occurred_at": "2026-01-02T00:00:00Z", '
        b'"type": "lead_profile", "email": "a@b.example", "country": "DE"}'
    )
    batch = reader.parse([line])
    table = LeadTable(rules.kernel, on_profile, 0)
    for signature, _, _ in batch.new_signatures():
        table.resolve(signature, [])
    assert table.apply(batch, 0, len(batch), NEVER)[:2] == (1, 0)
    assert seen == [("l", "p1", BASE_DAY_MS, ("DE", "a@b.example"))]
    assert set(PROFILE_FIELDS) >= {"country", "email"}


def _write(path: Path, seed: int, n: int, leads: int, span_ms: int) -> Path:
    rng = random.Random(seed)
    lines = [json.dumps(e).encode() for e in generate_event_log(seed, n, leads, span_ms=span_ms)]
    for bad in BAD_LINES:
        lines.insert(rng.randrange(len(lines) + 1), bad)
    path.write_bytes(b"\r\n".join(lines) + b"\n")
    return path


def _outputs(replay: Replay, stats: ReadStats) -> dict[str, Any]:
    runs = []
    for run in replay.runs:
        rows = lead_rows(run, replay.end_ms) if replay.end_ms is not None else []
        cut = replay.cutoff_ms if replay.cutoff_ms is not None else replay.end_ms
        runs.append(
            {
                "crossings": run.sorted_crossings(),
                "counts": (run.applied, run.duplicates, run.cooled_at_end),
                "rows": rows,
                "at_cutoff": None if cut is None else run.scores_at(cut, run.snapshot),
            }
        )
    return {
        "stats": (stats.records, stats.valid, stats.bad, stats.blank_lines),
        "bad": [r.to_dict() for r in stats.bad_records],
        "time": (replay.first_event_ms, replay.last_event_ms, replay.end_ms, replay.after_at),
        "runs": runs,
    }


def _both(
    log: Path, rulesets: list[RuleSet], chunk_bytes: int, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    slow_stats, fast_stats = ReadStats(), ReadStats()
    slow = replay_events(read_events([FileSource(log)], slow_stats), rulesets, **kwargs)
    fast = replay_sources([FileSource(log, chunk_bytes)], rulesets, fast_stats, **kwargs)
    return _outputs(slow, slow_stats), _outputs(fast, fast_stats)


def test_fast_path_equals_memory_store_on_a_realistic_log(tmp_path: Path) -> None:
    log = _write(tmp_path / "log.jsonl", 11, 6000, 150, 40 * DAY_MS)
    rules = load_rules(default_rules_path())
    slow, fast = _both(log, [rules], 50_000, cutoff_ms=BASE_MS + 20 * DAY_MS)
    assert slow == fast
    assert slow["runs"][0]["crossings"], "the log should make leads hot"
    assert slow["stats"][2] == 3  # bad lines; the blank one is counted apart
    assert slow["stats"][3] == 1


def test_fast_path_equals_memory_store_with_control_events(tmp_path: Path) -> None:
    """Adjustments and resets in a log (a replay of a file takes them inline) go through
    the same engine on both paths, at the same place in the log."""
    events = generate_event_log(5, 4000, 60, span_ms=30 * DAY_MS)
    rng = random.Random(5)
    for i in range(120):
        near = events[rng.randrange(len(events))]
        control: dict[str, Any] = {
            "event_id": f"ctl-{i}",
            "lead_id": near["lead_id"],
            "occurred_at": near["occurred_at"],
            "reason": "test",
            "author": "tests",
        }
        if i % 3:
            control |= {"type": "score_adjusted", "points": rng.choice([-35, 12.5, 40, 90])}
        elif i % 2:
            control |= {"type": "score_reset"}
        else:
            control |= {"type": "lead_erased"}
        events.insert(events.index(near) + 1, control)
    log = tmp_path / "control.jsonl"
    log.write_bytes(b"\n".join(json.dumps(e).encode() for e in events) + b"\n")
    rules = load_rules(default_rules_path())
    slow, fast = _both(log, [rules], 40_000)
    assert slow == fast
    by_control = {
        c.kind
        for c in slow["runs"][0]["crossings"]
        if (c.trigger_event_id or "").startswith("ctl-")
    }
    # the controls did something
    assert by_control == {"lead_became_hot", "lead_cooled", "lead_erased"}


@pytest.mark.parametrize(("at_day", "cutoff_day"), [(None, None), (None, 12), (20, None), (20, 9)])
def test_control_events_merged_by_time_agree_on_both_paths(
    tmp_path: Path, at_day: int | None, cutoff_day: int | None
) -> None:
    """``replay --control``: each control event goes in before the first input event
    dated after it (within --at), on the reference path (merge_control) and the native
    path (batches split there) alike; --at and the cut-off count them like events."""
    log = _write(tmp_path / "log.jsonl", 3, 3000, 50, 30 * DAY_MS)
    rng = random.Random(3)
    lines = []
    for i in range(90):
        kind = ("score_adjusted", "score_reset", "lead_erased")[i % 3]
        event: dict[str, Any] = {
            "event_id": f"ctl-{i}",
            "type": kind,
            "lead_id": f"lead-{rng.randrange(50):05d}",
            "occurred_at": ms_to_datetime(BASE_MS + rng.randrange(32 * DAY_MS)).isoformat(),
            "reason": "test",
            "author": "tests",
        }
        if kind == "score_adjusted":
            event["points"] = rng.choice([-30, 15, 45, 80])
        lines.append(json.dumps(event))
    lines.insert(40, '{"event_id": "x", "type": "page_view"}')  # not a control event
    control_file = tmp_path / "control.jsonl"
    control_file.write_text("\n".join(lines) + "\n")
    rules = load_rules(default_rules_path())
    at = None if at_day is None else BASE_MS + at_day * DAY_MS
    cutoff = None if cutoff_day is None else BASE_MS + cutoff_day * DAY_MS

    slow_stats, fast_stats = ReadStats(), ReadStats()
    control = read_control([FileSource(control_file)], slow_stats, MAX_EVENT_BYTES)
    assert len(control) == 90 and slow_stats.bad == 1
    batches = merge_control(read_events([FileSource(log)], slow_stats), control, at)
    slow = replay_events(batches, [rules], at_ms=at, cutoff_ms=cutoff)
    read_control([FileSource(control_file)], fast_stats, MAX_EVENT_BYTES)
    fast = replay_sources(
        [FileSource(log, 20_000)], [rules], fast_stats, at_ms=at, cutoff_ms=cutoff, control=control
    )
    assert _outputs(slow, slow_stats) == _outputs(fast, fast_stats)
    kinds = {c.kind for c in slow.runs[0].crossings if (c.trigger_event_id or "").startswith("ctl")}
    assert "lead_erased" in kinds


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    a=rule_sets(),
    b=rule_sets(version="prop-2"),
    seed=st.integers(0, 10_000),
    chunk_bytes=st.sampled_from([300, 4096, 1 << 22]),
    at_day=st.one_of(st.none(), st.integers(1, 3)),
    cutoff_hours=st.one_of(st.none(), st.integers(1, 60)),
)
def test_fast_path_equals_memory_store_for_random_rules(
    tmp_path: Path,
    a: RuleSet,
    b: RuleSet,
    seed: int,
    chunk_bytes: int,
    at_day: int | None,
    cutoff_hours: int | None,
) -> None:
    log = _write(tmp_path / f"log-{seed}.jsonl", seed, 400, 12, 3 * DAY_MS)
    at_ms = None if at_day is None else BASE_MS + at_day * DAY_MS
    cutoff_ms = None if cutoff_hours is None else BASE_MS + cutoff_hours * 3_600_000
    if at_ms is not None and cutoff_ms is not None and cutoff_ms > at_ms:
        cutoff_ms = at_ms
    slow, fast = _both(log, [a, b], chunk_bytes, at_ms=at_ms, cutoff_ms=cutoff_ms)
    assert slow == fast
