"""Segment-spec tracking through the live worker (LEADSCORE_INPUT_FORMAT=segment): the
example log produced with ``leadscore produce`` gives the same hot-lead records as
``leadscore replay --format segment`` on the file, a track event no rule mentions is
counted, and the alias (identity merges are replay-only so far) is dead-lettered naming it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.worker_harness import (
    REPO_ROOT,
    WorkerStack,
    now_ms,
    record_payload,
    to_iso,
)

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "segment"


def comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        ({k: v for k, v in r.items() if k != "emitted_at"} for r in records),
        key=lambda r: (r["lead_id"], r["occurred_at"], r["type"]),
    )


def test_segment_tracking_live_equals_replay(stack: WorkerStack, tmp_path: Path) -> None:
    stack.make_topics(partitions=3)
    config = stack.config(
        extra_env={
            "LEADSCORE_INPUT_FORMAT": "segment",
            "LEADSCORE_RULES_FILE": str(EXAMPLE / "rules.yaml"),
        }
    )
    worker = stack.start(config)
    log = EXAMPLE / "events.jsonl"
    lines = [line for line in log.read_bytes().splitlines() if line.strip()]
    sent = stack.run_cli("produce", str(log), config=config)
    assert f"sent {len(lines)} record(s)" in sent.stderr
    worker.wait_processed(len(lines))

    replayed = stack.run_cli(
        "replay",
        str(log),
        "--format",
        "segment",
        "--rules",
        str(EXAMPLE / "rules.yaml"),
        "--out",
        str(tmp_path),
        "--at",
        to_iso(now_ms()),  # the worker's sweep cools by the wall clock: so does this
        "--no-progress",
        config=config,
    )
    assert replayed.returncode == 0, replayed.stderr
    want = [json.loads(x) for x in (tmp_path / "hot.jsonl").read_text().splitlines()]
    assert (want[0]["type"], want[0]["lead_id"]) == ("lead_became_hot", "u-1024")
    deadline = time.monotonic() + 30
    while len(live := [record_payload(r) for r in stack.read_hot()]) < len(want):
        assert time.monotonic() < deadline, live
        time.sleep(0.5)
    assert comparable(live) == comparable(want)

    # No rule mentions "Newsletter Subscribed": applied as a no-op, counted.
    metrics = worker.metrics()
    assert metrics["leadscore_events_unscored_total{type=track}"] == 1
    dead = [r.json() for r in stack.read_dlq()]
    assert [(d["error_kind"], d["error"].split(" (")[0]) for d in dead] == [
        ("invalid_event", "type: lead_linked: this worker does not merge identities")
    ]
    assert worker.stop() == 0
