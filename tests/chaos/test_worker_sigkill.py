"""Crash test: SIGKILL the worker at many random moments while it works through a large log,
restart it each time, and check the end result against the in-memory replay.

What must hold however the kills fall (``streams/live/processor.py``: acked dead letters, atomic
per-lead state (dedupe window included) + outbox in Redis, acked crossings, outbox relay at start):

(a) every lead's score in Redis equals the MemoryStore replay of the same log;
(b) no event applied twice, none lost: the applied counts add up to what the replay
    applied (each distinct (lead_id, event_id) once, and a re-send again only a whole dedupe
    window after its original), and the dedupe windows equal the replay's;
(c) the hot topic holds every replayed lead_became_hot / lead_cooled (same id, same payload
    but ``emitted_at``) and nothing else;
(d) physical duplicates on the hot topic (the same crossing produced twice: a crash between
    the broker's ack and the outbox delete) are counted and reported; they are harmless to
    consumers that de-duplicate on ``event_id``.

Event times lie in 2030, so the live cooling sweep (wall clock) never fires: the replay's
coolings are exactly those detected at events.

Knobs (environment, read by this test only): CRASH_TEST_EVENTS (default 100000),
CRASH_TEST_LEADS (5000), CRASH_TEST_KILLS (12), CRASH_TEST_SEED (kill moments; random by
default, printed).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from typing import Any

import pytest

from scoring.rules import RuleSet
from scoring.state_machine import score_at
from tests.chaos.report import Row, add_row
from tests.integration.worker_harness import (
    FUTURE_MS,
    WorkerStack,
    committed_total,
    cool_due_entries,
    crossing_payload,
    encode,
    end_offsets,
    now_ms,
    outbox_size,
    read_states,
    record_payload,
    replay,
    stored_lead_ids,
)
from tests.strategies import DAY_MS, generate_event_log

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(480)]

N_EVENTS = int(os.environ.get("CRASH_TEST_EVENTS", "100000"))
N_LEADS = int(os.environ.get("CRASH_TEST_LEADS", "5000"))
KILLS = int(os.environ.get("CRASH_TEST_KILLS", "12"))
PARTITIONS = 4
LOG_SEED = 20_301
#: The consumer group forgets a SIGKILLed member only after its session timeout; with
#: faust's default (60 s) every restart would wait a minute before getting partitions.
#: 6 s is the broker's minimum (the worker's default is 10 s).
FAST_REJOIN = {"LEADSCORE_BROKER_SESSION_TIMEOUT": "6", "LEADSCORE_BROKER_HEARTBEAT_INTERVAL": "1"}


def test_sigkill_at_random_moments_loses_nothing_and_applies_nothing_twice(
    stack: WorkerStack,
    rules: RuleSet,
    record_property: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def report(name: str, value: Any, text: str | None = None) -> None:
        """Record a figure (junit-xml property) and print it past pytest's capture."""
        record_property(name, value)
        with capsys.disabled():
            print(f"\ncrash-test: {text or f'{name} = {value}'}", end="", flush=True)

    started = time.monotonic()
    seed = int(os.environ.get("CRASH_TEST_SEED") or random.SystemRandom().randrange(10**6))
    rng = random.Random(seed)
    report("kill_seed", seed, f"kill-moment seed {seed} (CRASH_TEST_SEED={seed} repeats it)")

    # ---------------------------------------------------------------- the log, produced
    events = generate_event_log(
        LOG_SEED,
        N_EVENTS,
        N_LEADS,
        start_ms=FUTURE_MS,
        span_ms=45 * DAY_MS,
        late_fraction=0.05,
        duplicate_fraction=0.02,
        buying_fraction=0.15,
        lead_prefix="crash-",
    )
    records = [encode(e) for e in events]
    distinct = {(e["lead_id"], e["event_id"]) for e in events}
    report(
        "log",
        len(events),
        f"{len(events)} events, {len({e['lead_id'] for e in events})} leads, "
        f"{len(events) - len(distinct)} re-sent duplicates",
    )
    stack.make_topics(partitions=PARTITIONS)
    t = time.monotonic()
    stack.produce(records)
    report("produce_seconds", round(time.monotonic() - t, 2))
    total = sum(end_offsets(stack.bootstrap, stack.input_topic).values())
    assert total == len(events)

    # ---------------------------------------------------------------- kill, restart, repeat
    config = stack.config(sweep_interval=1.0, extra_env=FAST_REJOIN)
    targets = sorted(rng.uniform(0.02, 0.97) for _ in range(KILLS))
    kills: list[str] = []
    processing_started = time.monotonic()
    for target in targets:
        base = committed_total(stack.bootstrap, config.app_id, stack.input_topic)
        worker = stack.start(config, ready=False)
        if base / total >= target or rng.random() < 0.25:
            # Already past this point (or 1 time in 4 anyway): kill somewhere in start-up
            # or the first batches (group join, outbox relay, redelivered batch).
            delay = rng.uniform(0.5, 6.0)
            time.sleep(delay)
            phase = f"{delay:.1f}s after start"
        else:
            progress = base / total
            while progress < target:
                if not worker.alive:
                    raise AssertionError(f"worker died on its own\n{worker.log_tail()}")
                try:
                    consumed = worker.metrics().get("leadscore_events_consumed_total", 0.0)
                except OSError:
                    consumed = 0.0
                progress = (base + consumed) / total
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.3))  # anywhere inside a batch
            phase = f"at {progress:.0%} consumed"
        assert worker.alive, f"worker exited before its kill\n{worker.log_tail()}"
        worker.kill()
        kills.append(phase)
    report("kills", len(kills), f"{len(kills)} SIGKILLs: {', '.join(kills)}")

    # ---------------------------------------------------------------- let it finish
    final = stack.start(config, ready=False)
    deadline = time.monotonic() + 300
    while committed_total(stack.bootstrap, config.app_id, stack.input_topic) < total:
        assert final.alive, final.log_tail()
        assert time.monotonic() < deadline, f"not finished after 300s\n{final.log_tail()}"
        time.sleep(0.5)
    processing_seconds = time.monotonic() - processing_started
    while outbox_size(stack.redis_url, stack.key_prefix):  # relay of a last crash's outbox
        assert time.monotonic() < deadline, "outbox never emptied"
        time.sleep(0.2)
    # The last killed worker may have committed everything already: the final one can get
    # here before its web server is up.
    final.wait_healthy()
    final_metrics = final.metrics()
    assert final.stop() == 0
    recovery_s = time.monotonic() - processing_started
    report(
        "processing_seconds",
        round(processing_seconds, 1),
        f"processing incl. {len(kills)} restarts: {processing_seconds:.1f}s = "
        f"{total / processing_seconds:,.0f} events/s",
    )
    report("final_run_duplicates", final_metrics.get("leadscore_events_duplicate_total", 0))

    # ---------------------------------------------------------------- (a) scores
    t = time.monotonic()
    store, crossings = replay([value for _, value in records], rules, until_ms=now_ms())
    report("replay_seconds", round(time.monotonic() - t, 2))
    leads = set(store.states)
    assert stored_lead_ids(stack.redis_url, stack.key_prefix) == leads
    states = read_states(stack.redis_url, stack.key_prefix, rules, leads)
    at_ms = max(s.clock_ms for s in store.states.values()) + DAY_MS
    worst = 0.0
    exact = 0
    mismatched = []
    for lead in sorted(leads):
        live = score_at(states[lead], rules, at_ms)
        want = score_at(store.states[lead], rules, at_ms)
        diff = abs(live - want)
        worst = max(worst, diff)
        exact += live == want
        if diff > 1e-9 * max(1.0, abs(want)):
            mismatched.append((lead, live, want))
    report(
        "score_max_abs_diff",
        worst,
        f"(a) scores of {len(leads)} leads: {exact} bit-identical, max |diff| {worst:.3g}, "
        f"{len(mismatched)} beyond 1e-9",
    )
    assert not mismatched, mismatched[:10]
    assert {lead: s.hot for lead, s in states.items()} == {
        lead: s.hot for lead, s in store.states.items()
    }

    # ---------------------------------------------------------------- (b) applied once
    applied = sum(s.events_applied for s in states.values())
    remembered = sum(len(s.recent_ids) // 16 for s in states.values())
    report(
        "events_applied",
        applied,
        f"(b) applied {applied}, ids in dedupe windows {remembered}, "
        f"distinct (lead, event) in log {len(distinct)}",
    )
    want_applied = {lead: s.events_applied for lead, s in store.states.items()}
    got_applied = {lead: s.events_applied for lead, s in states.items()}
    published = [record_payload(r) for r in stack.read_hot()]
    ids = [p["event_id"] for p in published]
    add_row(
        Row(
            f"worker SIGKILLed {len(kills)} times at random moments, restarted each time",
            len(events),
            f"{len(kills)} / {len(kills)} / 0",
            sum(max(0, n - got_applied.get(lead, 0)) for lead, n in want_applied.items()),
            sum(max(0, got_applied.get(lead, 0) - n) for lead, n in want_applied.items()),
            f"{len(crossings)} / {len(set(ids))} / {len(ids) - len(set(ids))}",
            recovery_s,
        )
    )
    # Each distinct event once, and a re-send again only when it came after its lead's
    # clock had moved a whole dedupe window past it: exactly what the reference applied.
    assert applied == sum(s.events_applied for s in store.states.values())
    assert applied >= len(distinct)
    # The dedupe windows hold what the reference store holds, no more (bounded, exact).
    assert {lead: s.recent_ids for lead, s in states.items()} == {
        lead: s.recent_ids for lead, s in store.states.items()
    }
    assert {lead: s.events_applied for lead, s in states.items()} == {
        lead: s.events_applied for lead, s in store.states.items()
    }
    due = cool_due_entries(stack.redis_url, stack.key_prefix)
    assert due == {lead: float(ms) for lead, ms in store.cool_due_index().items()}

    # ---------------------------------------------------------------- (c) + (d) hot topic
    expected = {c.event_id: crossing_payload(c) for c in crossings}
    copies = Counter(p["event_id"] for p in published)
    physical_duplicates = len(published) - len(copies)
    missing = set(expected) - set(copies)
    unexpected = set(copies) - set(expected)
    wrong = [p for p in published if p["event_id"] in expected and p != expected[p["event_id"]]]
    report("hot_records_expected", len(expected))
    report(
        "hot_records_published",
        len(published),
        f"(c) hot topic: {len(published)} records, {len(copies)} distinct, expected "
        f"{len(expected)}; missing {len(missing)}, unexpected {len(unexpected)}, "
        f"payload mismatches {len(wrong)}",
    )
    report(
        "hot_physical_duplicates",
        physical_duplicates,
        f"(d) physical duplicates on the hot topic: {physical_duplicates}",
    )
    # Per lead, the first copy of each crossing comes in the replay's order.
    first_order: dict[str, list[str]] = {}
    for p in published:
        ids = first_order.setdefault(p["lead_id"], [])
        if p["event_id"] not in ids:
            ids.append(p["event_id"])
    expected_order: dict[str, list[str]] = {}
    for c in crossings:
        expected_order.setdefault(c.lead_id, []).append(c.event_id)
    out_of_order = sorted(
        lead for lead in expected_order if first_order.get(lead) != expected_order[lead]
    )
    report(
        "hot_leads_out_of_order",
        len(out_of_order),
        f"leads whose crossings came out of order: {len(out_of_order)} {out_of_order[:5]}",
    )
    assert not missing
    assert not unexpected
    assert not wrong, wrong[:3]
    assert set(copies) == set(expected)
    assert not out_of_order

    wall = time.monotonic() - started
    report(
        "wall_seconds",
        round(wall, 1),
        f"total wall time {wall:.1f}s; {total / processing_seconds:,.0f} events/s "
        f"through {len(kills)} kills",
    )
