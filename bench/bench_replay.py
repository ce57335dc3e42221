"""Replay throughput: generate a deterministic event log (default 1M events) and time
``leadscore replay`` on it, in process, on one core.

    .venv/bin/python bench/bench_replay.py                 # 1M events, default rules
    .venv/bin/python bench/bench_replay.py --events 200000 --profile   # + cProfile top 25

Prints records/s for the whole command (read + validate + score + write the outputs) and
the split between the phases (from summary.json's ``timing``). The log: ``--leads``
leads with Zipf-like activity over 90 days, the event mix of a B2B website, 3% late
events (up to 2 days), 1% re-sent duplicates and 0.05% bad lines. The same arguments
always give the same file.
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import itertools
import pstats
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streams.replay.commands import replay  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=90)

#: (type, weight, extra fields) of the generated events.
MIX: list[tuple[str, float, dict[str, object]]] = [
    ("page_view", 40, {"url": "https://example.com/product", "session_id": "s-1"}),
    ("page_view", 8, {"url": "https://example.com/pricing", "session_id": "s-1"}),
    ("page_view", 2, {"url": "https://example.com/careers", "session_id": "s-1"}),
    ("email_open", 20, {"campaign_id": "weekly", "email_id": "e-1"}),
    ("email_click", 12, {"url": "https://example.com/blog", "campaign_id": "weekly"}),
    ("download", 6, {"asset_id": "roi-guide", "asset_type": "ebook"}),
    ("form_submit", 3, {"form_id": "newsletter"}),
    ("form_submit", 1, {"form_id": "demo"}),
    ("webinar", 2, {"webinar_id": "w-1", "status": "registered"}),
    ("webinar", 1, {"webinar_id": "w-1", "status": "attended"}),
    ("unsubscribe", 1, {"list_id": "weekly"}),
    ("lead_profile", 4, {"email": "x@acme.example", "company_size": "51-200", "country": "DE"}),
]
_ENVELOPE = b'{"event_id": "bad", "lead_id": "x", "occurred_at": '
BAD_LINES = [
    b'{"event_id": "bad", "type": "page_view"',  # truncated JSON
    _ENVELOPE + b'"2026-01-02T00:00:00Z", "type": "page_visit"}',  # unknown type
    _ENVELOPE + b'"2026-01-02T00:00:00", "type": "page_view", "url": "u"}',  # naive time
    b"not json at all",
]


def generate(path: Path, events: int, leads: int, seed: int) -> None:
    """Write the benchmark log (see the module docstring)."""
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(1.0 / (i + 1) ** 0.8 for i in range(leads)))
    lead_ids = [f"lead-{i:06d}" for i in range(leads)]
    rng.shuffle(lead_ids)
    kinds = list(itertools.accumulate(w for _, w, _ in MIX))
    step_ms = SPAN / timedelta(milliseconds=1) / events
    now = START
    recent: list[bytes] = []
    with path.open("wb") as out:
        for n in range(events):
            roll = rng.random()
            if roll < 0.0005:
                line = BAD_LINES[n % len(BAD_LINES)]
            elif roll < 0.0105 and recent:
                line = recent[rng.randrange(len(recent))]  # a re-sent duplicate
            else:
                now += timedelta(milliseconds=rng.expovariate(1 / step_ms))
                at = (
                    now - timedelta(milliseconds=rng.randrange(2 * 86_400_000))
                    if roll > 0.97
                    else now
                )
                lead = lead_ids[bisect.bisect(cumulative, rng.random() * cumulative[-1])]
                kind, _, fields = MIX[bisect.bisect(kinds, rng.random() * kinds[-1])]
                line = orjson.dumps(
                    {
                        "event_id": f"b-{seed}-{n:08d}",
                        "type": kind,
                        "lead_id": lead,
                        "occurred_at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                        **fields,
                    }
                )
                recent.append(line)
                if len(recent) > 1000:
                    recent.pop(0)
            out.write(line + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--leads", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rules", default=str(REPO / "scoring" / "default_rules.yaml"))
    parser.add_argument("--log", type=Path, help="Use (or create) this event log file.")
    parser.add_argument("--profile", action="store_true", help="Run under cProfile.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        log = args.log or Path(tmp) / "events.jsonl"
        if not log.exists():
            started = time.perf_counter()
            generate(log, args.events, args.leads, args.seed)
            print(
                f"generated {log} ({log.stat().st_size / 1e6:.0f} MB) in "
                f"{time.perf_counter() - started:.1f}s",
                file=sys.stderr,
            )
        out = Path(tmp) / "out"
        argv = [str(log), "--rules", args.rules, "--out", str(out), "--no-progress"]
        profiler = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        cpu_started = time.process_time()
        if profiler:
            profiler.enable()
        replay.main(argv, prog_name="leadscore replay", standalone_mode=False)
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        summary = orjson.loads((out / "summary.json").read_bytes())
        records = summary["counts"]["records"]
        timing = summary["timing"]
        print(
            f"\nreplay: {records:,} records in {seconds:.2f}s = {records / seconds:,.0f} records/s"
            f" (CPU {cpu_seconds:.2f}s: one thread, so one core)"
        )
        print(
            f"  read+validate {timing['read_validate_s']:.2f}s, "
            f"apply {timing['apply_s']:.2f}s, outputs {timing['outputs_s']:.2f}s; "
            f"{summary['counts']['leads']:,} leads, "
            f"{summary['runs'][0]['crossings']['lead_became_hot']:,} hot events"
        )
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
