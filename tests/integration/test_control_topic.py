"""Control events through the live worker: ``leadscore adjust`` and ``leadscore reset``
write to the control topic, the worker applies them exactly once, refuses them on the
input topic (and tracking events on the control topic), and ``leadscore replay`` of the
same events gives the same hot-lead records."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from schemas.times import parse_time_ms
from streams.kafka import ensure_topics
from streams.settings import load_settings
from tests.integration.worker_harness import (
    FUTURE_MS,
    WorkerStack,
    close_client,
    encode,
    key_space,
    record_payload,
    sync_client,
    to_iso,
)
from tests.strategies import MINUTE_MS

pytestmark = pytest.mark.integration

RULES = """\
version: control-1
half_life: 1h
adjustments: {half_life: 2h}
thresholds: {hot: 70, cool: 50}
rules:
  - {id: pv, event: page_view, points: 10}
"""
T0 = FUTURE_MS  # 2030: the sweep (wall clock) has nothing to cool


def page_view(event_id: str, lead_id: str, minutes: float) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "page_view",
        "lead_id": lead_id,
        "occurred_at": to_iso(T0 + round(minutes * MINUTE_MS)),
        "url": "https://www.example.com/pricing",
    }


def hot_records(stack: WorkerStack, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while len(records := [record_payload(r) for r in stack.read_hot()]) < count:
        assert time.monotonic() < deadline, records
        time.sleep(0.3)
    return records


def replayed_hot(
    stack: WorkerStack, config: Any, rules: Path, at: str, out: Path, *sources: str
) -> list[dict[str, Any]]:
    """``leadscore replay SOURCES --at AT``'s hot records, without ``emitted_at``."""
    stack.run_cli(
        "replay",
        *sources,
        "--rules",
        str(rules),
        "--out",
        str(out),
        "--at",
        at,
        "--no-progress",
        config=config,
    )
    records = [json.loads(x) for x in (out / "hot.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "emitted_at"} for r in records]


def test_adjust_and_reset_live_exactly_once_and_as_replayed(
    stack: WorkerStack, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    stack.make_topics(partitions=2)
    config = stack.config(extra_env={"LEADSCORE_RULES_FILE": str(rules)})
    worker = stack.start(config)
    accepted: list[dict[str, Any]] = []  # what the worker applies, in order: the replay log

    def track(*events: dict[str, Any]) -> None:
        stack.produce([encode(e) for e in events])
        accepted.extend(events)

    def control(command: str, *args: str) -> dict[str, Any]:
        out = stack.run_cli(command, *args, "--author", "tests", config=config).stdout
        assert f"-> {stack.control_topic}" in out, out
        event_id = args[args.index("--id") + 1]
        kind = "score_adjusted" if command == "adjust" else "score_reset"
        event: dict[str, Any] = {"event_id": event_id, "type": kind, "lead_id": args[0]}
        event["occurred_at"] = args[args.index("--at") + 1]
        if command == "adjust":
            event["points"] = float(args[1])
        event |= {"reason": args[args.index("--reason") + 1], "author": "tests"}
        accepted.append(event)
        return event

    track(page_view("v1", "lead-a", 0), page_view("v2", "lead-a", 1), page_view("v3", "lead-b", 1))
    worker.wait_processed(3)
    at = to_iso(T0 + 10 * MINUTE_MS)
    control("adjust", "lead-a", "55", "--reason", "met at the fair", "--at", at, "--id", "adj-1")
    [hot] = hot_records(stack, 1)
    assert (hot["type"], hot["lead_id"], hot["trigger_event_id"]) == (
        "lead_became_hot",
        "lead-a",
        "adj-1",
    )
    assert "manual-adjustment" in [r["rule_id"] for r in hot["reasons"]]

    # The same adjustment again (a retrying script): nothing changes.
    again = stack.run_cli(
        "adjust", "lead-a", "55", "--reason", "again", "--at", at, "--id", "adj-1", config=config
    )
    assert again.returncode == 0
    worker.wait_processed(5)

    at = to_iso(T0 + 20 * MINUTE_MS)
    control("reset", "lead-a", "--reason", "deal closed", "--at", at, "--id", "rst-1")
    records = hot_records(stack, 2)
    cooled = records[1]
    assert (cooled["type"], cooled["trigger_event_id"]) == ("lead_cooled", "rst-1")
    assert parse_time_ms(cooled["occurred_at"]) == T0 + 20 * MINUTE_MS
    assert cooled["score"] == 0
    # Dated before the reset, arriving after it: never counts. After it: counts.
    track(page_view("v4", "lead-a", 15), *(page_view(f"w{i}", "lead-a", 21 + i) for i in range(8)))
    records = hot_records(stack, 3)
    assert (records[2]["type"], records[2]["trigger_event_id"]) == ("lead_became_hot", "w7")

    # Misrouted: a control event on the input topic, a page view on the control topic.
    [reset] = [e for e in accepted if e["event_id"] == "rst-1"]
    misplaced = dict(reset, event_id="rst-misplaced")
    stack.produce([encode(misplaced)])
    stack.produce([encode(page_view("v-misplaced", "lead-b", 2))], topic=stack.control_topic)
    total = len(accepted) + 1 + 2  # + the repeated adjustment, + the two misrouted
    metrics = worker.wait_processed(total)
    assert metrics["leadscore_events_duplicate_total"] == 2  # adj-1 again; v4 before the reset
    letters = [r.json() for r in stack.read_dlq()]
    dead = {json.loads(d["payload_text"])["event_id"]: d for d in letters}
    assert len(dead) == 2, letters
    assert dead["rst-misplaced"]["error"].startswith("type: score_reset is a control event")
    assert dead["v-misplaced"]["error"].startswith("type: the control topic takes control events")

    log = tmp_path / "accepted.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in accepted))
    last = max(e["occurred_at"] for e in accepted)
    replay = partial(replayed_hot, stack, config, rules, last)
    want = replay(tmp_path / "replay", str(log))
    assert hot_records(stack, len(want)) == want

    # From Kafka: the input topic, and the control topic merged in by event time (the
    # misrouted records are refused as the worker refused them).
    out = tmp_path / "replay-kafka"
    kafka = f"kafka:{stack.input_topic}"
    assert replay(out, kafka, "--control", f"kafka:{stack.control_topic}") == want
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bad_by_kind"] == {"invalid_event": 2}, summary
    assert worker.stop() == 0


def assert_unreadable(client: Any, prefix: str, *secrets: str | bytes) -> None:
    """No key under ``prefix`` names or holds any of ``secrets`` (lead ids, profile
    values)."""
    wanted = [s.encode() if isinstance(s, str) else s for s in secrets]
    keys = all_keys(client, prefix)
    assert not [k for k in keys if any(s in k for s in wanted)], keys
    for key in keys:
        kind = client.type(key)
        if kind == b"string":
            value = client.get(key)
        elif kind == b"hash":
            value = b"".join(k + v for k, v in client.hgetall(key).items())
        elif kind == b"zset":
            value = b"".join(m for m, _ in client.zrange(key, 0, -1, withscores=True))
        elif kind == b"set":
            value = b"".join(client.smembers(key))
        else:
            value = b""
        for secret in wanted:
            assert secret not in value, (key, kind, secret)


def all_keys(client: Any, prefix: str) -> list[bytes]:
    """Every key under ``prefix`` (on a cluster, redis-py scans every master)."""
    return list(client.scan_iter(match=f"{prefix}*", count=1000))


@pytest.mark.parametrize("stack", ["standalone", "cluster"], indirect=True)
def test_erase_leaves_nothing_readable_and_old_messages_change_nothing(
    stack: WorkerStack, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    stack.make_topics(partitions=2)
    config = stack.config(extra_env={"LEADSCORE_RULES_FILE": str(rules)})
    worker = stack.start(config)
    lead = "ada-lovelace-1815"
    profile = {
        "event_id": "p1",
        "type": "lead_profile",
        "lead_id": lead,
        "occurred_at": to_iso(T0),
        "email": "ada@analytical.example",
        "company": "Analytical Engines Ltd",
    }
    old = [profile, *(page_view(f"v{i}", lead, i) for i in range(8)), page_view("o1", "other", 0)]
    stack.produce([encode(e) for e in old])
    [hot] = hot_records(stack, 1)
    assert (hot["type"], hot["lead_id"]) == ("lead_became_hot", lead)

    at = to_iso(T0 + 30 * MINUTE_MS)
    out = stack.run_cli(
        "erase", lead, "--reason", "request #4711", "--at", at, "--id", "era-1", config=config
    )
    assert f"-> {stack.control_topic}" in out.stdout
    records = hot_records(stack, 3)
    assert [(r["type"], r["lead_id"]) for r in records[1:]] == [
        ("lead_cooled", lead),
        ("lead_erased", lead),
    ]
    assert records[2]["trigger_event_id"] == "era-1"
    worker.wait_processed(len(old) + 1)
    erased_metric = "leadscore_erased_emitted_total"
    deadline = time.monotonic() + 10
    while worker.metrics().get(erased_metric, 0) < 1:  # delivered: the outbox is empty
        assert time.monotonic() < deadline
        time.sleep(0.2)

    client = sync_client(stack.redis_url)
    space = key_space(stack.redis_url, stack.key_prefix)
    try:
        assert_unreadable(client, stack.key_prefix, lead, b"ada@analytical", b"Analytical Engines")
        assert client.exists(space.tombstone(lead).state)
        assert client.exists(space.lead("other").state)  # the neighbour is untouched
    finally:
        close_client(client)

    # The old messages again (a producer re-sending, or a re-read): nothing comes back.
    stack.produce([encode(e) for e in old[:-1]])
    metrics = worker.wait_processed(2 * len(old))
    assert metrics["leadscore_events_duplicate_total"] == len(old) - 1
    score = stack.run_cli("score", lead, "--json", config=config, check=False)
    assert score.returncode == 1
    assert f"lead {lead!r} was erased as of 2030-01-01T00:30:00" in score.stderr

    # A new event for the id starts a fresh lead.
    stack.produce([encode(page_view("n1", lead, 40))])
    worker.wait_processed(2 * len(old) + 1)
    fresh = json.loads(
        stack.run_cli(
            "score", lead, "--json", "--at", to_iso(T0 + 40 * MINUTE_MS), config=config
        ).stdout
    )
    assert fresh["score"] == pytest.approx(10)
    assert fresh["events_applied"] == 1
    assert len(hot_records(stack, 3)) == 3
    assert worker.stop() == 0


def test_the_control_topic_gets_the_input_topics_partition_count(
    kafka_bootstrap: str, create_topic: Any, unique_name: str
) -> None:
    """So that a lead's control events and tracking events have the same partition
    number (with the same partitioner): one worker owns both."""
    events = create_topic(f"{unique_name}-events", 5)
    control = f"{unique_name}-control"
    settings = load_settings(
        kafka_bootstrap_servers=kafka_bootstrap, input_topics=events, control_topic=control
    )
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        assert ensure_topics(settings, only=[control]) == [control]
        topic = admin.list_topics(topic=control, timeout=10).topics[control]
        assert len(topic.partitions) == 5
    finally:
        for future in admin.delete_topics([control]).values():
            future.result(timeout=30)
