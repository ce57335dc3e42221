"""Live/replay equivalence: the same event log sent through the live worker (the real
``leadscore worker`` process, real Kafka and Redis) and through ``leadscore replay`` (the
real command, as a subprocess) gives the same ``lead_became_hot`` / ``lead_cooled`` records,
every field but ``emitted_at`` equal, and the same final lead scores.

The log (:func:`tests.strategies.generate_event_log`: 20,000 messages, 800 leads, about 2%
exact re-sends) spans the 60 days that end one hour before the test starts. So, by the
wall clock, many leads that became hot early in it are already due to cool by decay: the
live cooling sweep emits those, while leads hot near its end are not due yet. The replay
runs with ``--at`` = the moment the worker stopped, so that its final ``cool_due`` covers
every cooling the live sweep emitted.

Two things keep live and replay comparable exactly, and why:

* **No late events** (``late_fraction=0``; checked): docs/architecture.md, "Live vs
  replay", a lead swept cool at ``t_c`` that then receives an event with
  ``occurred_at < t_c`` re-heats live but not in a replay in file order.
* **The sweep starts only once the backlog is applied.** Producing everything before the
  worker starts is *not* enough: a worker catching up on a backlog of past events *is*
  receiving events late with respect to the wall clock. With the sweep on from the start
  (tried: ``LEADSCORE_SWEEP_INTERVAL=1`` from the first second), it cools a lead at ``t_c``
  while that lead's next events (``occurred_at < t_c``) are still waiting in its partition,
  and they re-heat it afterwards. With this very log, 90 to 95 of the 169 leads with
  records differed (the live topic held 436-450 records, the replay 265; the numbers depend
  on timing), most of them with a lead_became_hot published after, yet occurring before,
  the sweep's lead_cooled. That is the documented limitation, not a bug of either side,
  so the live run is done in two phases on the same consumer group and Redis prefix:

  1. *catch-up*: a worker with the sweep interval at its maximum (1 h: Faust timers wait one
     interval before their first run, so no sweep happens) applies the whole backlog, then
     stops (SIGTERM, offsets committed);
  2. *sweeping*: a worker with ``LEADSCORE_SWEEP_INTERVAL=1`` starts on the same group,
     has nothing left to consume, and its sweeps emit the coolings due by the wall clock.
     It is stopped a few sweeps later; ``stopped_at`` (after it exited) is the ``--at`` of
     the replay.

Coolings that fall due between the worker's last sweep and ``stopped_at`` are in the
replay only. They are allowed, and only those: decay coolings (no trigger event) in the
last seconds before ``stopped_at`` (in practice none: a cooling time falls in a window of a
few seconds out of 60 days).
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.times import datetime_to_ms, format_ms
from scoring.profile import fit_grade
from scoring.rules import RuleSet
from scoring.rules_file import default_rules_path
from scoring.state_machine import score_at
from tests.integration.worker_harness import (
    REPO_ROOT,
    ReadRecord,
    WorkerStack,
    by_lead,
    encode,
    end_offsets,
    now_ms,
    read_states,
    record_payload,
    stored_lead_ids,
    to_iso,
)
from tests.strategies import DAY_MS, HOUR_MS, SECOND_MS, generate_event_log

pytestmark = pytest.mark.integration

SEED = 20_261
N_EVENTS = 20_000
N_LEADS = 800
SPAN_MS = 60 * DAY_MS
PARTITIONS = 4
SWEEP_INTERVAL = 1.0
#: LEADSCORE_SWEEP_INTERVAL's maximum: no sweep runs during the catch-up phase.
NO_SWEEP_INTERVAL = 3600.0
#: Sweeps the sweeping worker runs after its first cooling, before it is stopped.
SWEEPS_BEFORE_STOP = 3
#: How far before the stop the worker's last sweep may have been (its interval, plus
#: slack for a loaded machine); replay-only coolings must fall due after that.
LAST_SWEEP_SLACK_MS = round(3 * SWEEP_INTERVAL * SECOND_MS) + 2 * SECOND_MS
#: scores.csv has 4 decimals.
CSV_SCORE_TOLERANCE = 5e-5


def ms(text: str) -> int:
    return datetime_to_ms(datetime.fromisoformat(text))


def event_log(end_ms: int) -> list[dict[str, Any]]:
    """The generated log, moved in time so that its newest event occurred at ``end_ms``."""
    log = generate_event_log(SEED, N_EVENTS, N_LEADS, span_ms=SPAN_MS, late_fraction=0.0)
    times = [ms(e["occurred_at"]) for e in log]
    shift = end_ms - max(times)
    return [{**e, "occurred_at": to_iso(t + shift)} for e, t in zip(log, times, strict=True)]


def check_no_late_events(log: Sequence[Mapping[str, Any]]) -> None:
    """Precondition: per lead, the events applied (first of each id) are in time order."""
    seen: set[str] = set()
    clock: dict[str, int] = {}
    for e in log:
        if e["event_id"] in seen:
            continue  # a re-send: skipped as a duplicate, live and in the replay
        seen.add(e["event_id"])
        at = ms(e["occurred_at"])
        assert at >= clock.get(e["lead_id"], at), f"late event {e['event_id']}"
        clock[e["lead_id"]] = at


def payloads_by_id(payloads: Iterable[dict[str, Any]], where: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in payloads:
        assert p["event_id"] not in out, f"{where}: event_id {p['event_id']} twice"
        out[p["event_id"]] = p
    return out


def split_by_offsets(
    records: Sequence[ReadRecord], ends: Mapping[int, int]
) -> tuple[list[ReadRecord], list[ReadRecord]]:
    """Records written before the ``ends`` offsets were taken, and those written after."""
    before = [r for r in records if r.offset < ends.get(r.partition, 0)]
    after = [r for r in records if r.offset >= ends.get(r.partition, 0)]
    return before, after


def kinds(payloads: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """``lead_became_hot``, ``lead_cooled`` by an event, ``lead_cooled`` by decay."""
    count: Counter[str] = Counter()
    for p in payloads:
        if p["type"] == "lead_became_hot":
            count["hot"] += 1
        elif p["trigger_event_id"] is None:
            count["cooled by decay"] += 1
        else:
            count["cooled by an event"] += 1
    return count


def describe(live: Mapping[str, Any] | None, replayed: Mapping[str, Any] | None) -> str:
    if live is None or replayed is None:
        return json.dumps(live or replayed, sort_keys=True)
    fields = sorted(k for k in set(live) | set(replayed) if live.get(k) != replayed.get(k))
    diff = {k: {"live": live.get(k), "replay": replayed.get(k)} for k in fields}
    return f"{live['event_id']} lead {live['lead_id']} {live['type']}: {json.dumps(diff)}"


@pytest.mark.parametrize(
    "sweep_while_catching_up", [False, True], ids=["catch-up-then-sweep", "one-worker"]
)
def test_live_worker_and_replay_publish_the_same_hot_and_cooled_events(
    stack: WorkerStack, rules: RuleSet, tmp_path: Path, sweep_while_catching_up: bool
) -> None:
    """``one-worker``: a single worker with a 1 s sweep consumes the whole backlog, as after
    downtime. Its sweep may only cool a lead up to the event time its partition has been
    read to (streams.live.sweep.sweep_limit); without that limit the sweep
    cooled leads whose older events were still queued and they re-heated (90 of 169
    leads differed from the replay)."""
    started = time.monotonic()
    log = event_log(now_ms() - HOUR_MS)
    check_no_late_events(log)
    unique = {e["event_id"] for e in log}
    leads = {e["lead_id"] for e in log}
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in log))

    # The whole log is on the topic before any worker starts; key = lead_id keeps each
    # lead's messages in one partition, in log order (idempotent, acked producer).
    stack.make_topics(partitions=PARTITIONS)
    where = stack.produce([encode(e) for e in log])
    partitions_of: dict[str, set[int]] = {}
    for e, (partition, _offset) in zip(log, where, strict=True):
        partitions_of.setdefault(e["lead_id"], set()).add(partition)
    assert all(len(p) == 1 for p in partitions_of.values())
    assert len({p for ps in partitions_of.values() for p in ps}) == PARTITIONS

    if sweep_while_catching_up:
        worker = stack.start(stack.config(sweep_interval=SWEEP_INTERVAL), log_name="one-worker")
        metrics = worker.wait_processed(len(log), timeout=120)
        assert metrics["leadscore_events_applied_total"] == len(unique)
        assert metrics["leadscore_events_duplicate_total"] == len(log) - len(unique)
        caught_up_at = time.monotonic()
        time.sleep(SWEEPS_BEFORE_STOP * SWEEP_INTERVAL + 1)
        stop_requested_ms = now_ms()
        assert worker.stop() == 0
        stopped_at = now_ms()
        live_done = time.monotonic()
        records = stack.read_hot()
        assert all(r.key == r.json()["lead_id"].encode() for r in records)
        live = payloads_by_id((record_payload(r) for r in records), "live hot topic")
        phase1, swept = list(records), []
    else:
        # Phase 1, catch-up: the backlog is applied with no sweep.
        catch_up = stack.start(stack.config(sweep_interval=NO_SWEEP_INTERVAL), log_name="catch-up")
        metrics = catch_up.wait_processed(len(log), timeout=120)
        assert metrics["leadscore_events_applied_total"] == len(unique)
        assert metrics["leadscore_events_duplicate_total"] == len(log) - len(unique)
        assert catch_up.stop() == 0
        caught_up_at = time.monotonic()
        after_catch_up = end_offsets(stack.bootstrap, stack.hot_topic)

        # Phase 2, sweeping: nothing left to consume; the sweeps cool the leads due by now.
        sweeping = stack.start(stack.config(sweep_interval=SWEEP_INTERVAL), log_name="sweeping")
        sweeping.wait_metric(
            "leadscore_cooled_emitted_total", lambda v: v > 0, timeout=30, what="> 0 (a sweep)"
        )
        time.sleep(SWEEPS_BEFORE_STOP * SWEEP_INTERVAL)
        assert sweeping.metrics().get("leadscore_events_consumed_total", 0.0) == 0
        stop_requested_ms = now_ms()
        assert sweeping.stop() == 0
        stopped_at = now_ms()
        live_done = time.monotonic()

        records = stack.read_hot()
        assert all(r.key == r.json()["lead_id"].encode() for r in records)
        live = payloads_by_id((record_payload(r) for r in records), "live hot topic")
        phase1, phase2 = split_by_offsets(records, after_catch_up)
        swept = [record_payload(r) for r in phase2]
        # The sweeping worker published sweep coolings only, due by the time it stopped.
        assert swept and all(
            p["type"] == "lead_cooled" and p["trigger_event_id"] is None for p in swept
        )
        assert max(ms(p["occurred_at"]) for p in swept) <= stopped_at

    # The replay: the real command, on the file, at the moment the worker stopped.
    out = tmp_path / "replay"
    replay_started = time.monotonic()
    result = stack.run_cli(
        "replay",
        str(path),
        "--rules",
        str(default_rules_path().relative_to(REPO_ROOT)),
        "--out",
        str(out),
        "--at",
        to_iso(stopped_at),
        "--no-progress",
        timeout=120,
    )
    replay_seconds = time.monotonic() - replay_started
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] | {"blank_lines": 0} == {
        "records": len(log),
        "blank_lines": 0,
        "valid_events": len(log),
        "bad": 0,
        "after_at_ignored": 0,
        "applied": len(unique),
        "duplicates": len(log) - len(unique),
        "leads": len(leads),
    }, summary["counts"]
    replayed_list = []
    for line in (out / "hot.jsonl").read_text().splitlines():
        payload = json.loads(line)
        del payload["emitted_at"]
        replayed_list.append(payload)
    replayed = payloads_by_id(replayed_list, "replay hot.jsonl")

    # --- the comparison -------------------------------------------------------------------
    only_live = sorted(set(live) - set(replayed))
    differ = sorted(i for i in set(live) & set(replayed) if live[i] != replayed[i])
    extras = sorted(set(replayed) - set(live))
    late_extras = [
        i
        for i in extras
        if replayed[i]["type"] == "lead_cooled"
        and replayed[i]["trigger_event_id"] is None
        and stop_requested_ms - LAST_SWEEP_SLACK_MS < ms(replayed[i]["occurred_at"]) <= stopped_at
    ]
    live_kinds, replay_kinds = kinds(live.values()), kinds(replayed.values())
    print(
        f"\nlog: {len(log):,} messages ({len(unique):,} events, {len(log) - len(unique):,} "
        f"re-sends), {len(leads):,} leads, {log[0]['occurred_at']} .. "
        f"{max(e['occurred_at'] for e in log)}; --at {to_iso(stopped_at)}\n"
        f"live: {len(live):,} records ({dict(live_kinds)}); catch-up {len(phase1):,}, "
        f"sweeps {len(swept):,}\n"
        f"replay: {len(replayed):,} records ({dict(replay_kinds)}); "
        f"only live {len(only_live)}, differing {len(differ)}, replay extras {len(extras)} "
        f"(due after the last sweep: {len(late_extras)})\n"
        f"times: produce+catch-up {caught_up_at - started:.1f}s, sweeping "
        f"{live_done - caught_up_at:.1f}s, replay {replay_seconds:.1f}s "
        f"({result.stdout.splitlines()[0] if result.stdout else ''})"
    )
    problems = [f"only live: {describe(live[i], None)}" for i in only_live[:10]]
    problems += [f"differs: {describe(live[i], replayed[i])}" for i in differ[:10]]
    problems += [
        f"replay extra: {describe(None, replayed[i])}" for i in extras[:10] if i not in late_extras
    ]
    assert not (only_live or differ or set(extras) - set(late_extras)), "\n".join(problems)
    # Same records in the same order per lead (the hot topic is keyed by lead_id).
    expected = by_lead(p for p in replayed_list if p["event_id"] not in extras)
    assert by_lead(live[record_payload(r)["event_id"]] for r in records) == expected

    # Non-trivial: hot leads, coolings by decay found by the sweep and at a lead's next
    # event, coolings by a negative event, and leads still hot because not due yet.
    phase1_kinds = kinds(record_payload(r) for r in phase1)
    assert live_kinds["hot"] >= 50, live_kinds
    assert live_kinds["cooled by decay"] >= 10, live_kinds
    if not sweep_while_catching_up:
        assert len(swept) >= 5 and phase1_kinds["cooled by decay"] >= 10, phase1_kinds
    assert live_kinds["cooled by an event"] >= 1, live_kinds
    assert len(late_extras) <= 3, late_extras

    # --- Redis against scores.csv, at the same time --------------------------------------
    with (out / "scores.csv").open(newline="", encoding="utf-8") as handle:
        rows = {row["lead_id"]: row for row in csv.DictReader(handle)}
    assert set(rows) == leads == stored_lead_ids(stack.redis_url, stack.key_prefix)
    states = read_states(stack.redis_url, stack.key_prefix, rules, leads)
    extra_leads = {replayed[i]["lead_id"] for i in late_extras}
    mismatches = []
    for lead in sorted(leads):
        state, row = states[lead], rows[lead]
        score = score_at(state, rules, stopped_at)
        seen = {
            "score": abs(score - float(row["score"])) <= CSV_SCORE_TOLERANCE + 1e-9 * abs(score),
            "hot": (str(state.hot).lower() == row["hot"]) != (lead in extra_leads),
            "events": state.events_applied == int(row["events"]),
            "last_event_at": format_ms(state.clock_ms) == row["last_event_at"],
            "grade": (fit_grade(state, rules) or "") == row["grade"],
        }
        if not all(seen.values()):
            mismatches.append(f"{lead}: redis score {score!r} hot {state.hot}, csv {row}")
    still_hot = sum(1 for s in states.values() if s.hot)
    print(f"redis: {len(states):,} leads, {still_hot} hot at --at (not due yet); all match")
    assert not mismatches, "\n".join(mismatches[:20])
    assert still_hot >= 5
