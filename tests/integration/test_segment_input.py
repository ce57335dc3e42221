"""Segment-spec tracking through the live worker (LEADSCORE_INPUT_FORMAT=segment, identity
merges on): the example log produced with ``leadscore produce`` to two workers gives the
same hot-lead records as ``leadscore replay --format segment`` on the file and as a replay
of the identity topic; a track event no rule mentions is counted."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_control_topic import assert_unreadable
from tests.integration.worker_harness import (
    REPO_ROOT,
    WorkerProcess,
    WorkerStack,
    close_client,
    processed_count,
    record_payload,
    sync_client,
)

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "segment"


def comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        ({k: v for k, v in r.items() if k != "emitted_at"} for r in records),
        key=lambda r: (r["lead_id"], r["occurred_at"], r["type"]),
    )


def processed(workers: list[WorkerProcess]) -> float:
    return sum(processed_count(w.metrics()) for w in workers)


def wait_quiet(workers: list[WorkerProcess], at_least: int, timeout: float = 60) -> None:
    """Until the workers processed ``at_least`` messages and stayed at that count, with no
    lag, for a second (an identity merge takes a few hops through the identity topic)."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while True:
        now = processed(workers)
        lags = [
            v
            for w in workers
            for k, v in w.metrics().items()
            if k.startswith("leadscore_consumer_lag{")
        ]
        if now != last:
            last, since = now, time.monotonic()
        elif now >= at_least and not any(lags) and time.monotonic() - since > 1.0:
            return
        assert time.monotonic() < deadline, (now, at_least, lags)
        time.sleep(0.2)


def wait_balanced(workers: list[WorkerProcess], timeout: float = 60) -> None:
    """Until every worker's latest partition change is an assignment of some partitions
    (the group has settled: a merge then takes its few hops without a rebalance)."""
    deadline = time.monotonic() + timeout
    while True:
        last = []
        for worker in workers:
            changes = re.findall(r"(assigned|revoked): (.*)", worker.log_path.read_text())
            last.append(changes[-1] if changes else ("", ""))
        if all(kind == "assigned" and parts.strip() != "-" for kind, parts in last):
            return
        assert time.monotonic() < deadline, last
        time.sleep(0.2)


def test_segment_tracking_live_equals_replay(stack: WorkerStack, tmp_path: Path) -> None:
    """Two workers merge identities across partitions: the anonymous visit counts for
    the known lead once it identifies, exactly as a replay of the file (and of the
    identity topic) has it."""
    stack.make_topics(partitions=3)
    config = stack.config(
        # The example is dated November 2026: by the wall clock its hot lead cools, and a
        # sweep between two of its events would cool it before the next one (dated
        # earlier) heats it again, which no replay of the log does. No sweep here.
        sweep_interval=3600.0,
        extra_env={
            "LEADSCORE_INPUT_FORMAT": "segment",  # (identity merges on by default)
            "LEADSCORE_RULES_FILE": str(EXAMPLE / "rules.yaml"),
        },
    )
    workers = [stack.start(config, log_name="worker-a"), stack.start(config, log_name="worker-b")]
    wait_balanced(workers)
    log = EXAMPLE / "events.jsonl"
    lines = [line for line in log.read_bytes().splitlines() if line.strip()]
    # As live traffic comes (a visitor browses, identifies, goes on: seconds apart), as
    # the README's quick start sends it. (Sent at once, the anonymous views and the
    # identify race through the identity stage: the scores agree, the crossing a merge
    # triggers may not.)
    sent = stack.run_cli("produce", str(log), "--rate", "1", config=config)
    assert f"sent {len(lines)} record(s)" in sent.stderr
    wait_quiet(workers, len(lines))

    def replay(out: Path, *args: str) -> list[dict[str, Any]]:
        result = stack.run_cli(
            "replay",
            *args,
            "--rules",
            str(EXAMPLE / "rules.yaml"),
            "--out",
            str(out),
            "--no-progress",
            config=config,
        )
        assert result.returncode == 0, result.stderr
        return [json.loads(x) for x in (out / "hot.jsonl").read_text().splitlines()]

    want = replay(tmp_path / "file", str(log), "--format", "segment")
    assert [(r["type"], r["lead_id"], r["trigger_event_id"]) for r in want] == [
        ("lead_merged", "anon-7f3c", "seg-004>anon-7f3c"),
        ("lead_became_hot", "u-1024", "seg-008"),  # the anonymous visit counts
    ]
    deadline = time.monotonic() + 30
    while len(live := [record_payload(r) for r in stack.read_hot()]) < len(want):
        assert time.monotonic() < deadline, live
        time.sleep(0.5)
    assert comparable(live) == comparable(want), json.dumps(comparable(live))[:3000]
    routed = replay(tmp_path / "topic", f"kafka:{stack.identity_topic}", "--routed")
    summary = (tmp_path / "topic" / "summary.json").read_text()
    assert comparable(routed) == comparable(want), summary

    # Asked for by the anonymous id, `score` answers for the person it joined.
    score = stack.run_cli("score", "anon-7f3c", "--json", config=config)
    assert "'anon-7f3c' was merged into 'u-1024'" in score.stderr
    assert json.loads(score.stdout)["lead_id"] == "u-1024"

    # No rule mentions "Newsletter Subscribed": applied as a no-op, counted.
    unscored = sum(
        w.metrics().get("leadscore_events_unscored_total{type=track}", 0) for w in workers
    )
    assert unscored == 1
    assert stack.read_dlq() == []
    assert all(w.stop() == 0 for w in workers)


@pytest.mark.parametrize("stack", ["standalone", "cluster"], indirect=True)
def test_erasing_a_merged_person_forgets_every_id(stack: WorkerStack, tmp_path: Path) -> None:
    """``leadscore erase`` of a known lead that absorbed an anonymous visitor: no key
    names or holds either id or the profile afterwards (aliases included), the
    ``lead_erased`` record is out, and the anonymous id starts afresh."""
    stack.make_topics(partitions=2)
    config = stack.config(
        extra_env={
            "LEADSCORE_INPUT_FORMAT": "segment",
            "LEADSCORE_RULES_FILE": str(EXAMPLE / "rules.yaml"),
        }
    )
    workers = [stack.start(config)]
    lines = [line for line in (EXAMPLE / "events.jsonl").read_bytes().splitlines() if line]
    done = 0
    for phase in (lines[:2], lines[3:4]):  # anon-7f3c browses, then identifies as u-1024
        part = tmp_path / f"part-{done}.jsonl"
        part.write_bytes(b"\n".join(phase) + b"\n")
        stack.run_cli("produce", str(part), config=config)
        done += len(phase)
        wait_quiet(workers, done)
    out = stack.run_cli("erase", "anon-7f3c", "--reason", "request #4711", config=config)
    assert "u-1024" not in out.stdout  # (the CLI names the id it was given)
    deadline = time.monotonic() + 30
    while workers[0].metrics().get("leadscore_erased_emitted_total", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    kinds = [(r["type"], r["lead_id"]) for r in map(record_payload, stack.read_hot())]
    assert kinds == [("lead_merged", "anon-7f3c"), ("lead_erased", "u-1024")]

    client = sync_client(stack.redis_url)
    try:
        assert_unreadable(client, stack.key_prefix, "u-1024", "anon-7f3c", "jane.doe@globex")
    finally:
        close_client(client)

    # The identity topic holds the routed erasure: its replay erases the person too.
    out = tmp_path / "routed"
    args = ["replay", f"kafka:{stack.identity_topic}", "--routed", "--out", str(out)]
    args += ["--rules", str(EXAMPLE / "rules.yaml"), "--no-progress"]
    stack.run_cli(*args, config=config)
    routed = [json.loads(x) for x in (out / "hot.jsonl").read_text().splitlines()]
    assert [(r["type"], r["lead_id"]) for r in routed] == kinds

    later = json.loads(lines[1])
    later.update(messageId="seg-new", timestamp="2026-11-23T08:00:00Z")
    part = tmp_path / "later.jsonl"
    part.write_text(json.dumps(later) + "\n")
    stack.run_cli("produce", str(part), config=config)
    wait_quiet(workers, done + 2)
    score = json.loads(stack.run_cli("score", "anon-7f3c", "--json", config=config).stdout)
    assert score["events_applied"] == 1  # a fresh anonymous lead, not the erased person
    assert all(w.stop() == 0 for w in workers)
