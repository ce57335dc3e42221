"""End-to-end tests of the live worker: the ``leadscore worker`` process on the real Kafka
broker and Redis, compared with the in-memory replay of the same events.

Event times are in 2030 (the future of the wall clock) unless a test is about the cooling
sweep: then nothing becomes due for the sweep, and the hot topic must hold exactly what the
MemoryStore replay yields. The sweep test uses past times on purpose.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from schemas.outputs import DeadLetter
from schemas.times import datetime_to_ms
from schemas.validation import Rejected, parse_event
from scoring.rules import RuleSet
from scoring.state_machine import cool_due_ms, score_at
from tests.integration.worker_harness import (
    FUTURE_MS,
    LEADSCORE,
    REPO_ROOT,
    WorkerConfig,
    WorkerProcess,
    WorkerStack,
    by_lead,
    closed_port,
    commit_offsets,
    committed_total,
    cool_due_entries,
    crossing_payload,
    encode,
    free_port,
    now_ms,
    parse_metrics,
    read_state,
    read_states,
    record_payload,
    replay,
    to_iso,
    wait_for_replayed_states,
)
from tests.strategies import generate_event_log

pytestmark = pytest.mark.integration

DAY = 86_400_000
T0 = FUTURE_MS + 10 * DAY  # 2030-01-11T00:00:00Z


def ev(event_type: str, lead: str, at_ms: int, event_id: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": event_id,
        "type": event_type,
        "lead_id": lead,
        "occurred_at": to_iso(at_ms),
    }
    data.update(fields)
    return data


def pricing(lead: str, at: int, eid: str) -> dict[str, Any]:
    return ev("page_view", lead, at, eid, url="https://example.com/pricing")


def ms(text: str) -> int:
    return datetime_to_ms(datetime.fromisoformat(text))


def hot_records(stack: WorkerStack) -> list[dict[str, Any]]:
    return [record_payload(r) for r in stack.read_hot()]


# ------------------------------------------------------------------------------ scripted


def scripted_events() -> list[dict[str, Any]]:
    d14 = T0 + 14 * DAY
    d60 = T0 + 60 * DAY
    return [
        # alice: fit grade A, hot after several events spread over two weeks.
        ev(
            "lead_profile",
            "alice",
            T0,
            "a-1",
            email="alice@acme.example",
            company_size="201-1000",
            seniority="director",
            country="US",
        ),
        pricing("alice", T0, "a-2"),  # 2 + 15 = 17
        ev("email_click", "alice", d14, "a-3", url="https://example.com/x", campaign_id="c"),
        ev("form_submit", "alice", d14, "a-4", form_id="demo"),  # 30 + 20
        ev("webinar", "alice", d14, "a-5", webinar_id="w", status="registered"),  # -> hot
        # bob: hot, a negative event to exactly `cool` (stays hot), one more cools him.
        ev("form_submit", "bob", T0, "b-1", form_id="contact-sales"),  # 50
        ev("webinar", "bob", T0, "b-2", webinar_id="w", status="attended"),  # 80: hot
        ev("unsubscribe", "bob", T0, "b-3"),  # 50: not below cool, still hot
        ev("page_view", "bob", T0, "b-4", url="https://example.com/careers"),  # 42: cooled
        ev("webinar", "bob", T0, "b-2", webinar_id="w", status="attended"),  # re-sent: skipped
        # carol: hot at exactly 70; decay cools her (seen at her next event); re-heat.
        ev("form_submit", "carol", T0, "c-1", form_id="demo"),  # 50
        ev("download", "carol", T0, "c-2", asset_id="roi"),  # +20 (30d half-life) = 70: hot
        ev("page_view", "carol", d60, "c-3", url="https://example.com/"),  # cooled before it
        ev("form_submit", "carol", d60, "c-4", form_id="contact-sales"),
        ev("webinar", "carol", d60, "c-5", webinar_id="w", status="attended"),  # hot again
        # erin: one pricing page view.
        pricing("erin", T0, "e-1"),
    ]


@pytest.mark.parametrize("stack", ["standalone", "cluster"], indirect=True)
def test_scripted_sequence_yields_exactly_the_replayed_crossings(
    stack: WorkerStack, rules: RuleSet
) -> None:
    stack.make_topics(partitions=3)
    worker = stack.start()
    events = scripted_events()
    stack.produce([encode(e) for e in events])
    worker.wait_processed(len(events))

    store, crossings = replay(events, rules, until_ms=now_ms())
    expected = by_lead(crossing_payload(c) for c in crossings)
    actual = by_lead(hot_records(stack))
    # Exactly the replayed records, in each lead's order, every field but emitted_at.
    assert actual == expected
    kinds = {lead: [r["type"] for r in recs] for lead, recs in actual.items()}
    assert kinds == {
        "alice": ["lead_became_hot"],
        "bob": ["lead_became_hot", "lead_cooled"],
        "carol": ["lead_became_hot", "lead_cooled", "lead_became_hot"],
    }

    # Hand-computed values (powers of two of the 14-day half-life: exact in floats).
    (alice_hot,) = actual["alice"]
    assert alice_hot["score"] == 17 / 2 + 10 + 50 + 10 == 78.5
    assert alice_hot["trigger_event_id"] == "a-5"
    assert ms(alice_hot["occurred_at"]) == T0 + 14 * DAY
    assert alice_hot["fit_grade"] == "A"
    assert alice_hot["threshold"] == 70.0
    assert [r["rule_id"] for r in alice_hot["reasons"]] == [
        "form-submit",
        "demo-request",
        "email-click",
        "webinar-registered",
        "pricing-page",
    ]
    assert alice_hot["reasons"][-1]["points"] == 7.5
    bob_hot, bob_cooled = actual["bob"]
    assert bob_hot["score"] == 80.0 and bob_hot["trigger_event_id"] == "b-2"
    assert bob_cooled["score"] == 42.0 and bob_cooled["trigger_event_id"] == "b-4"
    assert bob_cooled["threshold"] == 50.0
    carol_hot, carol_cooled, carol_reheat = actual["carol"]
    assert carol_hot["score"] == 70.0  # hot at exactly the threshold
    assert carol_cooled["trigger_event_id"] is None  # decay did it
    cooled_ms = ms(carol_cooled["occurred_at"])
    assert T0 + 5 * DAY < cooled_ms < T0 + 10 * DAY
    assert 49.99 < carol_cooled["score"] < 50.0
    assert carol_reheat["trigger_event_id"] == "c-5"
    assert len({r["event_id"] for r in actual["carol"]}) == 3

    # Redis holds the replayed states; erin: one pricing page view = 2 + 15 at its time.
    states = read_states(stack.redis_url, stack.key_prefix, rules, store.states)
    assert set(states) == {"alice", "bob", "carol", "erin"}
    for lead, state in states.items():
        assert state.hot == store.states[lead].hot
        assert state.sums == store.states[lead].sums
        assert state.events_applied == store.states[lead].events_applied
    assert score_at(states["erin"], rules, T0) == 17.0
    assert score_at(states["erin"], rules, T0 + 14 * DAY) == 8.5
    assert states["bob"].events_applied == 4  # the re-sent b-2 was skipped
    metrics = worker.metrics()
    assert metrics["leadscore_hot_emitted_total"] == 4
    assert metrics["leadscore_cooled_emitted_total"] == 2
    assert metrics["leadscore_events_duplicate_total"] == 1
    assert worker.stop() == 0


# ------------------------------------------------------------------------------ dead letters

MAX_BYTES = 1024


def bad_messages() -> list[tuple[str, bytes | None, bytes | None, str, str]]:
    """(name, key, value, error_kind, regex the error must match)."""
    good = ev("page_view", "dlq-a", T0, "bad-x", url="https://example.com/")

    def j(**changes: Any) -> bytes:
        data = {**good, **changes}
        return json.dumps({k: v for k, v in data.items() if v is not None}).encode()

    padded = j(properties={"pad": "x" * 2 * MAX_BYTES})
    return [
        (
            "invalid json",
            b"dlq-a",
            b'{"event_id": "x", "type": ',
            "invalid_json",
            r"^not valid JSON: .*line 1 column",
        ),
        (
            "json array",
            b"dlq-a",
            b"[1, 2]",
            "invalid_json",
            r"^expected a JSON object, got an array",
        ),
        (
            "non-utf8",
            b"dlq-a",
            b'{"event_id": "bad-\xff", "type": "page_view"}',
            "invalid_utf8",
            r"^not valid UTF-8: byte 0xff at offset 18",
        ),
        (
            "wrong field type",
            b"dlq-a",
            j(url=42),
            "invalid_event",
            r"^url: expected a valid string, got number 42",
        ),
        (
            "unknown type",
            b"dlq-a",
            j(type="page_visit"),
            "invalid_event",
            r"^type: unknown event type 'page_visit'",
        ),
        (
            "naive timestamp",
            b"dlq-a",
            j(occurred_at="2030-01-05T10:00:00"),
            "invalid_event",
            r"^occurred_at: timestamp has no timezone offset \(naive\)",
        ),
        (
            "year 1970",
            b"dlq-a",
            j(occurred_at="1970-01-01T00:00:00Z"),
            "invalid_event",
            r"^occurred_at: timestamp 1970-01-01T00:00:00\+00:00 is outside the accepted range",
        ),
        (
            "year 3000",
            b"dlq-a",
            j(occurred_at="3000-01-01T00:00:00Z"),
            "invalid_event",
            r"^occurred_at: timestamp 3000-01-01T00:00:00\+00:00 is outside the accepted range",
        ),
        ("missing field", b"dlq-a", j(lead_id=None), "invalid_event", r"^lead_id: missing"),
        (
            "oversized",
            b"dlq-a",
            padded,
            "oversized",
            rf"^message is {len(padded)} bytes; the limit is {MAX_BYTES} bytes",
        ),
        ("missing key", None, j(), "missing_key", r"^key: missing"),
        (
            "key != lead_id",
            b"someone-else",
            j(),
            "key_mismatch",
            r"^key: 'someone-else' does not match lead_id 'dlq-a'",
        ),
        ("tombstone", b"dlq-a", None, "invalid_json", r"^empty message"),
        ("empty value", b"dlq-a", b"", "invalid_json", r"^empty message"),
    ]


def test_bad_input_is_dead_lettered_and_valid_neighbours_are_applied(
    stack: WorkerStack, rules: RuleSet
) -> None:
    stack.make_topics(partitions=1)  # one partition: the offsets below are exact
    worker = stack.start(stack.config(extra_env={"LEADSCORE_MAX_EVENT_BYTES": str(MAX_BYTES)}))
    bad = bad_messages()
    records: list[tuple[bytes | None, bytes | None]] = []
    valid: list[dict[str, Any]] = []
    bad_index: dict[int, int] = {}
    for i, (_name, key, value, _kind, _pattern) in enumerate(bad):
        event = pricing("dlq-a", T0 + i * 3_600_000, f"ok-{i}")
        valid.append(event)
        records.append(encode(event))
        bad_index[len(records)] = i
        records.append((key, value))
    last = pricing("dlq-a", T0 + 100 * 3_600_000, "ok-last")
    valid.append(last)
    records.append(encode(last))
    where = stack.produce(records)

    worker.wait_processed(len(records))
    dlq = stack.read_dlq()
    assert len(dlq) == len(bad)
    letters = {
        d.source_offset: d for d in (DeadLetter.model_validate_json(r.value or b"") for r in dlq)
    }
    for position, i in bad_index.items():
        name, key, value, kind, pattern = bad[i]
        partition, offset = where[position]
        letter = letters[offset]
        assert letter.error_kind == kind, name
        assert re.search(pattern, letter.error), f"{name}: {letter.error!r}"
        assert letter.source_topic == stack.input_topic
        assert letter.source_partition == partition == 0
        assert letter.key == (None if key is None else key.decode())
        assert letter.seen_at.tzinfo is not None
        if value is None:
            assert letter.payload_text is None and letter.payload_base64 is None
        elif name == "non-utf8":
            assert letter.payload_text is None
            assert base64.b64decode(letter.payload_base64 or "") == value
        else:
            assert letter.payload_text == value.decode()
        # The worker rejects exactly as parse_event does.
        rejected = parse_event(value, key, require_key=True, max_bytes=MAX_BYTES)
        assert isinstance(rejected, Rejected)
        assert (rejected.kind, rejected.error) == (letter.error_kind, letter.error)

    # Every valid neighbour was applied, exactly as the replay applies them.
    store, _ = replay(valid, rules)
    state = read_state(stack.redis_url, stack.key_prefix, rules, "dlq-a")
    assert state is not None
    assert state.events_applied == len(valid)
    assert state.sums == store.states["dlq-a"].sums
    metrics = worker.metrics()
    kinds: dict[str, int] = {}
    for _, _, _, kind, _ in bad:
        kinds[kind] = kinds.get(kind, 0) + 1
    for kind, count in kinds.items():
        assert metrics[f"leadscore_events_dead_lettered_total{{kind={kind}}}"] == count

    # Still running and still scoring.
    assert worker.alive
    assert worker.http_get("/healthz")[0] == 200
    stack.produce([encode(pricing("dlq-b", T0, "after"))])
    worker.wait_metric("leadscore_events_applied_total", lambda v: v >= len(valid) + 1, what="+1")
    assert worker.stop() == 0


# ------------------------------------------------------------------------------ cooling sweep


@pytest.mark.parametrize("stack", ["standalone", "cluster"], indirect=True)
def test_cooling_sweep_emits_lead_cooled_once_at_the_exact_crossing(
    stack: WorkerStack, rules: RuleSet
) -> None:
    stack.make_topics(partitions=2)
    worker = stack.start(stack.config(sweep_interval=0.3))
    now = now_ms()
    past = now - 60 * DAY  # 77 points then: cools ~8.7 days later, long ago
    recent = now - 1 * DAY  # 77 points yesterday: cools in ~7.7 days, not yet
    events = []
    for lead, at in (("sweep-old", past), ("sweep-recent", recent)):
        events += [
            ev("form_submit", lead, at, f"{lead}-1", form_id="demo"),  # 50
            ev("email_click", lead, at, f"{lead}-2", url="https://example.com/", campaign_id="c"),
            pricing(lead, at, f"{lead}-3"),  # 77: hot
        ]
    stack.produce([encode(e) for e in events])

    deadline = time.monotonic() + 60
    while len(stack.read_hot()) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(10 * 0.3)  # ten more sweeps: nothing else may come
    records = hot_records(stack)
    checked_at = now_ms()

    store, crossings = replay(events, rules, until_ms=checked_at)
    assert by_lead(records) == by_lead(crossing_payload(c) for c in crossings)
    cooled = [r for r in records if r["type"] == "lead_cooled"]
    assert len(cooled) == 1  # exactly once
    (record,) = cooled
    assert record["lead_id"] == "sweep-old"
    assert record["trigger_event_id"] is None
    assert record["score"] < 50
    # occurred_at: the exact millisecond the score fell below `cool`, as the engine says.
    hot_state = replay(events, rules)[0].states["sweep-old"]
    due = cool_due_ms(hot_state, rules)
    assert due is not None and past < due < recent
    assert ms(record["occurred_at"]) == due
    assert score_at(hot_state, rules, due) < 50 <= score_at(hot_state, rules, due - 1)

    states = read_states(stack.redis_url, stack.key_prefix, rules, ["sweep-old", "sweep-recent"])
    assert not states["sweep-old"].hot and states["sweep-recent"].hot
    index = cool_due_entries(stack.redis_url, stack.key_prefix)
    assert index == {"sweep-recent": float(store.cool_due_index()["sweep-recent"])}
    assert worker.metrics()["leadscore_cooled_emitted_total"] == 1
    assert worker.stop() == 0


# ------------------------------------------------------------------------------ redelivery


@pytest.mark.parametrize("how", ["rewind-offsets", "new-group"])
def test_redelivery_changes_nothing(stack: WorkerStack, rules: RuleSet, how: str) -> None:
    stack.make_topics(partitions=3)
    events = generate_event_log(
        7, 600, 25, start_ms=FUTURE_MS, buying_fraction=0.5, lead_prefix="redeliver-"
    )
    stack.produce([encode(e) for e in events])
    first = stack.start(log_name="first")
    applied = first.wait_processed(len(events))["leadscore_events_applied_total"]
    # distinct events, plus re-sends that came a whole dedupe window after their original
    expected = sum(s.events_applied for s in replay(events, rules)[0].states.values())
    assert applied == expected >= len({(e["lead_id"], e["event_id"]) for e in events})
    assert first.stop() == 0
    hot_before = stack.read_hot()
    states_before = read_states(stack.redis_url, stack.key_prefix, rules, store_leads(events))
    assert hot_before, "the log should make some leads hot"

    config = stack.config()
    if how == "rewind-offsets":
        commit_offsets(
            stack.bootstrap, config.app_id, stack.input_topic, dict.fromkeys(range(3), 0)
        )
    else:
        config = config.with_(app_id=config.app_id + "-second")
    second = stack.start(config, log_name="second")
    metrics = second.wait_processed(len(events))
    assert metrics["leadscore_events_applied_total"] == 0
    assert metrics["leadscore_events_duplicate_total"] == len(events)
    assert metrics["leadscore_hot_emitted_total"] == 0
    assert metrics["leadscore_cooled_emitted_total"] == 0
    assert second.stop() == 0
    assert stack.read_hot() == hot_before  # not one new record
    assert read_states(stack.redis_url, stack.key_prefix, rules, store_leads(events)) == (
        states_before
    )
    # ... and they are what the replay says.
    store, crossings = replay(events, rules, until_ms=now_ms())
    assert by_lead(record_payload(r) for r in hot_before) == by_lead(
        crossing_payload(c) for c in crossings
    )
    for lead, state in states_before.items():
        assert state.sums == store.states[lead].sums


def store_leads(events: list[dict[str, Any]]) -> list[str]:
    return sorted({e["lead_id"] for e in events})


# ------------------------------------------------------------------------------ web


def test_healthz_and_metrics(stack: WorkerStack) -> None:
    stack.make_topics(partitions=2)
    worker = stack.start()
    status, body = worker.http_get("/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "redis": True, "stuck": {}}
    stack.produce(
        [
            encode(pricing("web-a", T0, "w-1")),
            encode(pricing("web-a", T0, "w-1")),  # duplicate
            (b"web-a", b"not json"),
        ]
    )
    worker.wait_processed(3)
    status, body = worker.http_get("/metrics")
    assert status == 200
    text = body.decode()
    for name in (
        "leadscore_events_consumed_total",
        "leadscore_events_applied_total",
        "leadscore_events_duplicate_total",
        "leadscore_events_dead_lettered_total",
        "leadscore_hot_emitted_total",
        "leadscore_cooled_emitted_total",
        "leadscore_batch_seconds_bucket",
        "leadscore_batch_seconds_count",
        "leadscore_consumer_lag",
    ):
        assert re.search(rf"^{name}\b", text, re.M), f"{name} missing from /metrics"
    metrics = worker.metrics()
    assert metrics["leadscore_events_consumed_total"] == 3
    assert metrics["leadscore_events_applied_total"] == 1
    assert metrics["leadscore_events_duplicate_total"] == 1
    assert metrics["leadscore_events_dead_lettered_total{kind=invalid_json}"] == 1
    assert metrics["leadscore_batch_seconds_count"] >= 1
    lags = {k: v for k, v in metrics.items() if k.startswith("leadscore_consumer_lag{")}
    assert lags and all(v == 0 for v in lags.values()), lags
    for page in ("/router/", "/table/", "/graph/", "/stats/"):  # Faust's own pages: off
        assert worker.http_get(page)[0] == 404, page
    assert worker.stop() == 0


# ------------------------------------------------------------------------------ the CLI


@pytest.mark.parametrize("stack", ["standalone", "cluster"], indirect=True)
def test_cli_produce_tail_top_score(stack: WorkerStack, rules: RuleSet) -> None:
    stack.make_topics(partitions=2)
    worker = stack.start()
    example = REPO_ROOT / "examples" / "events.jsonl"
    lines = [line for line in example.read_bytes().splitlines() if line.strip()]
    result = stack.run_cli("produce", str(example))
    assert f"sent {len(lines)} record(s) to {stack.input_topic}" in result.stderr
    worker.wait_processed(len(lines))

    valid = []
    for line in lines:
        parsed = parse_event(line)
        if not isinstance(parsed, Rejected):
            valid.append(parsed)
    store, crossings = replay(valid, rules, until_ms=now_ms())
    expected_hot = {c.lead_id for c in crossings if c.kind == "lead_became_hot"}
    assert {"acme-alice", "globex-bob", "initech-carol"} <= expected_hot

    tail = stack.run_cli("tail", "--from-beginning", "--timeout", "3")
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    assert {r["lead_id"] for r in records if r["type"] == "lead_became_hot"} == expected_hot
    assert len(records) == len(stack.read_hot())

    # top at a fixed time: the same ranking as the replay (scores to 2 decimals).
    at = "2026-10-20T00:00:00Z"
    at_ms = datetime_to_ms(datetime(2026, 10, 20, tzinfo=UTC))
    top = stack.run_cli("top", "-n", "5", "--at", at).stdout.splitlines()
    assert top[0].split() == ["rank", "score", "hot", "lead"]
    ranked = [(line.split()[-1], line.split()[1]) for line in top[1:]]
    assert ranked == [(lead, f"{s:.2f}") for lead, s in store.top_sync(5, at_ms)]
    # top now: the hottest leads of the replay now.
    top_now = stack.run_cli("top", "-n", "5").stdout.splitlines()
    assert [line.split()[-1] for line in top_now[1:]] == [
        lead for lead, _ in store.top_sync(5, now_ms())
    ]

    score = stack.run_cli("score", "acme-alice").stdout
    assert score.startswith("lead acme-alice at ")
    state = store.states["acme-alice"]
    assert f"{state.events_applied} events" in score
    assert "fit grade A" in score
    info = json.loads(
        stack.run_cli("score", "acme-alice", "--json", "--at", "2026-10-09T00:00:00Z").stdout
    )
    at_ms = datetime_to_ms(datetime(2026, 10, 9, tzinfo=UTC))
    assert info["score"] == pytest.approx(score_at(state, rules, at_ms), rel=1e-12)
    assert info["events_applied"] == state.events_applied
    assert worker.stop() == 0


# ------------------------------------------------------------------------------ Redis down


def test_redis_unreachable_worker_retries_and_stays_alive(stack: WorkerStack) -> None:
    stack.make_topics(partitions=1)
    config = stack.config(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    worker = stack.start(config, ready=False)
    status, body = worker.wait_http("/healthz")
    assert status == 503
    assert json.loads(body) == {"status": "degraded", "redis": False, "stuck": {}}
    stack.produce([encode(pricing("down-a", T0, "d-1"))])
    worker.wait_log(r"failed \(attempt \d+\): ConnectionError", timeout=30, count=4)
    time.sleep(3)
    assert worker.alive
    assert worker.metrics()["leadscore_events_applied_total"] == 0
    retries = {k: v for k, v in worker.metrics().items() if k.startswith("leadscore_retries_total")}
    assert sum(retries.values()) >= 4, retries
    # No graceful stop here: SIGTERM makes the worker finish the batch in hand first, which
    # needs Redis (see tests/chaos/test_redis_faults.py).
    worker.kill()


def _redis_down_with_a_batch_in_hand(
    stack: WorkerStack, config: WorkerConfig, private_redis: Any, name: str
) -> tuple[WorkerProcess, list[dict[str, Any]]]:
    """A worker that applied 2 of lead ``{name}-a``'s 6 events, then lost Redis while
    holding a batch of the rest (it retries applying it)."""
    worker = stack.start(config)
    events = [pricing(f"{name}-a", T0 + i * 60_000, f"{name}-{i}") for i in range(6)]
    stack.produce([encode(e) for e in events[:2]])
    worker.wait_processed(2)
    private_redis.kill()
    stack.produce([encode(e) for e in events[2:]])
    worker.wait_log(r"apply batch to Redis failed \(attempt \d+\)", timeout=30, count=2)
    return worker, events


def test_sigterm_during_redis_outage_finishes_the_batch_once_redis_is_back(
    stack: WorkerStack, rules: RuleSet, private_redis: Any
) -> None:
    """Graceful stop never acks a batch it could not apply: while Redis is down SIGTERM
    waits (the worker keeps retrying); once Redis is back the batch is applied, committed,
    and the worker exits 0."""
    stack.make_topics(partitions=1)
    # No sweep: only the batch may be what waits for Redis.
    config = stack.config(redis_url=private_redis.url, sweep_interval=3600)
    worker, events = _redis_down_with_a_batch_in_hand(stack, config, private_redis, "term")
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    time.sleep(5)
    assert worker.alive, "stopped without applying the batch in hand"
    private_redis.start()
    assert worker.proc.wait(90) == 0
    # Exactly what was committed is applied: the batch in hand (at least the first event
    # produced during the outage), nothing acked without being applied.
    committed = committed_total(stack.bootstrap, config.app_id, stack.input_topic)
    state = read_state(private_redis.url, stack.key_prefix, rules, "term-a")
    assert state is not None
    assert 3 <= state.events_applied == committed
    if committed < len(events):  # the rest comes with the next start, once
        again = stack.start(config, log_name="again")
        again.wait_processed(len(events) - committed)
        assert again.metrics()["leadscore_events_duplicate_total"] == 0
        assert again.stop() == 0
    state = read_state(private_redis.url, stack.key_prefix, rules, "term-a")
    assert state is not None and state.events_applied == len(events)


def test_sigterm_during_a_long_redis_outage_stops_in_bounded_time(
    stack: WorkerStack, rules: RuleSet, private_redis: Any
) -> None:
    """Redis stays down: after LEADSCORE_STOP_TIMEOUT the batch in flight is abandoned
    uncommitted and the worker exits; the next start applies everything exactly once."""
    stack.make_topics(partitions=1)
    config = stack.config(
        redis_url=private_redis.url,
        sweep_interval=3600,
        extra_env={"LEADSCORE_STOP_TIMEOUT": "2"},
    )
    worker, events = _redis_down_with_a_batch_in_hand(stack, config, private_redis, "stop")
    stopped_at = time.monotonic()
    code = worker.stop(30)  # SIGTERM; fails the test if it does not end by then
    took = time.monotonic() - stopped_at
    print(f"\nstop during a Redis outage: exited {code} after {took:.1f}s (stop timeout 2s)")
    assert took < 25
    worker.wait_log(r"abandoning it uncommitted", timeout=1)
    private_redis.start()
    again = stack.start(config, log_name="again")
    again.wait_processed(len(events) - 2)
    assert again.stop() == 0
    state = read_state(private_redis.url, stack.key_prefix, rules, "stop-a")
    assert state is not None and state.events_applied == len(events)


def test_wrong_redis_password_is_reported_as_such_and_never_printed(
    stack: WorkerStack, private_redis: Any
) -> None:
    """A Redis with a password: `score` with a wrong one says the credentials were refused
    (not "cannot reach"), and neither password appears in what it prints."""
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("requirepass", "right-secret-1")
    client.close()
    url = f"redis://:wrong-secret-2@127.0.0.1:{private_redis.port}/0"
    result = stack.run_cli("score", "someone", config=stack.config(redis_url=url), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "refused our credentials" in output, output
    assert "wrong-secret-2" not in output and "right-secret-1" not in output
    assert f"redis://:***@127.0.0.1:{private_redis.port}/0" in output


def test_worker_processes_share_the_partitions_and_stop_together(
    stack: WorkerStack, rules: RuleSet, tmp_path: Any
) -> None:
    """`leadscore worker --processes 2`: two processes in one group, each with its own
    /healthz port, score a log between them exactly as a replay does; SIGTERM to the
    parent stops both (exit 0)."""
    events = generate_event_log(
        37, 4_000, 200, start_ms=FUTURE_MS, buying_fraction=0.4, lead_prefix="procs-"
    )
    stack.make_topics(partitions=4)
    config = stack.config(sweep_interval=3600)
    stack.groups.add(config.app_id)
    base = free_port()
    while not port_is_free(base + 1):
        base = free_port()
    with (tmp_path / "processes.log").open("wb") as log:
        parent = subprocess.Popen(
            [LEADSCORE, "worker", "--processes", "2"],
            env=config.env(base),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        ports = (base, base + 1)
        while not all(_healthz(p) == 200 for p in ports) or len(_assigned(ports)) < 2:
            assert parent.poll() is None, (tmp_path / "processes.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the two workers did not share the partitions"
            time.sleep(0.5)
        stack.produce([encode(e) for e in events])
        store, _ = replay(events, rules)
        end = wait_for_replayed_states(stack.redis_url, stack.key_prefix, rules, store, 90)
        assert (end.lost, end.doubled) == (0, 0)
        applied = [_metric(p, "leadscore_events_applied_total") for p in ports]
        assert all(a > 0 for a in applied), applied  # both took part
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(60) == 0
    finally:
        if parent.poll() is None:
            parent.kill()


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except (OSError, urllib.error.URLError):
        return 0


def _assigned(ports: tuple[int, ...]) -> set[int]:
    """The ports whose worker has partitions (a lag gauge per assigned partition)."""
    out = set()
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                metrics = parse_metrics(r.read().decode())
        except (OSError, urllib.error.URLError):
            continue
        if any(k.startswith("leadscore_consumer_lag{") for k in metrics):
            out.add(port)
    return out


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return float(parse_metrics(response.read().decode()).get(name, 0.0))


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_redis_acl_user_works_and_a_refused_one_is_reported(
    stack: WorkerStack, rules: RuleSet, private_redis: Any
) -> None:
    """Redis with an ACL user (no default user): the worker scores with it; a user the ACL
    does not allow is reported as refused credentials by `score`."""
    client = redis.Redis.from_url(private_redis.url)
    client.acl_setuser(
        "scorer", enabled=True, passwords=["+acl-secret-5"], keys=["*"], commands=["+@all"]
    )
    client.acl_setuser("default", enabled=False)
    client.close()
    url = f"redis://scorer:acl-secret-5@127.0.0.1:{private_redis.port}/0"
    stack.make_topics(partitions=1)
    config = stack.config(redis_url=url, sweep_interval=3600)
    worker = stack.start(config)
    events = [pricing("acl-a", T0 + i * 60_000, f"acl-{i}") for i in range(3)]
    stack.produce([encode(e) for e in events])
    worker.wait_processed(len(events))
    assert worker.stop() == 0
    state = read_state(url, stack.key_prefix, rules, "acl-a")
    assert state is not None and state.events_applied == 3
    nobody = f"redis://scorer:wrong-6@127.0.0.1:{private_redis.port}/0"
    result = stack.run_cli("score", "acl-a", config=stack.config(redis_url=nobody), check=False)
    assert result.returncode != 0
    assert "refused our credentials" in result.stdout + result.stderr
    assert "wrong-6" not in result.stdout + result.stderr
