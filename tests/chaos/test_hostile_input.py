"""Hostile input at volume through a live worker: 10,000+ malformed messages of every kind
mixed into valid traffic. Nothing crashes or stalls, every bad message is in the
dead-letter topic exactly once with a reason, and the valid events score exactly as a
replay of them alone says."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from typing import Any

import pytest

from scoring.rules import RuleSet
from tests.chaos.report import Row, add_row
from tests.integration.worker_harness import (
    FUTURE_MS,
    Record,
    WorkerStack,
    encode,
    read_states,
    replay,
)
from tests.strategies import generate_event_log

pytestmark = [pytest.mark.integration]

BAD_PER_KIND = 800


def _hostile(rng: random.Random, valid: list[dict[str, Any]]) -> dict[str, list[Record]]:
    """Malformed records by kind; each is rejected for a reason of its own."""
    lead = b"hostile-00000"

    def event(**changes: Any) -> dict[str, Any]:
        data = dict(rng.choice(valid))
        data.update(changes)
        return {k: v for k, v in data.items() if v is not None}

    def dumps(data: Any) -> bytes:
        return json.dumps(data).encode()

    kinds: dict[str, Any] = {
        "random bytes": lambda: (lead, rng.randbytes(rng.randint(1, 300))),
        "invalid UTF-8": lambda: (lead, b'{"event_id": "\xff\xfe", "type": "page_view"}'),
        "deep nesting": lambda: (lead, b"[" * 100_000 + b"]" * 100_000),
        "huge value": lambda: (lead, b'{"pad": "' + b"x" * 200_000 + b'"}'),
        "huge key": lambda: (b"\x01" * 150_000, dumps(event())),
        "absurd number": lambda: (
            lead,
            dumps(event(lead_id=lead.decode())).replace(b'"type"', b'"n": 1e400, "type"', 1),
        ),
        "absurd time": lambda: (
            lead,
            dumps(
                event(
                    lead_id=lead.decode(),
                    occurred_at=rng.choice(
                        [
                            "0001-01-01T00:00:00Z",
                            "9999-12-31T23:59:59Z",
                            "2026-13-45T99:00:00Z",
                            "yesterday",
                        ]
                    ),
                )
            ),
        ),
        "unicode tricks": lambda: (
            "hostile\u202e-\u200b".encode(),
            dumps(event(lead_id="hostile-\u202e\u0000\u200b")),
        ),
        "duplicate keys": lambda: (lead, b'{"type": "page_view", "type": "download"}'),
        "missing key": lambda: (None, dumps(event())),
        "key mismatch": lambda: (b"someone-else", dumps(event())),
        "wrong types": lambda: (lead, dumps(event(lead_id=lead.decode(), url=["a", "b"]))),
        "unknown type": lambda: (lead, dumps(event(lead_id=lead.decode(), type="teleport"))),
        "empty": lambda: (lead, b""),
    }
    return {name: [make() for _ in range(BAD_PER_KIND)] for name, make in kinds.items()}


def test_hostile_input_at_volume_is_dead_lettered_once_and_stalls_nothing(
    stack: WorkerStack, rules: RuleSet
) -> None:
    rng = random.Random(20261130)
    valid = generate_event_log(17, 5_000, 200, start_ms=FUTURE_MS, lead_prefix="calm-")
    bad = _hostile(rng, valid)
    records: list[Record] = [encode(e) for e in valid]
    for items in bad.values():
        records += items
    order = list(range(len(records)))
    rng.shuffle(order)
    # Valid events keep their order (a lead's events in sequence); the bad ones go anywhere.
    valid_slots = sorted(i for i in order[: len(valid)])
    mixed: list[Record | None] = [None] * len(records)
    for slot, record in zip(valid_slots, records[: len(valid)], strict=True):
        mixed[slot] = record
    rest = iter(records[len(valid) :])
    mixed = [r if r is not None else next(rest) for r in mixed]
    n_bad = len(records) - len(valid)

    stack.make_topics(partitions=4)
    worker = stack.start(stack.config(sweep_interval=3600))
    started = time.monotonic()
    stack.produce([r for r in mixed if r is not None])
    metrics = worker.wait_processed(len(mixed), timeout=240)
    seconds = time.monotonic() - started
    assert worker.alive

    dead = [r.json() for r in stack.read_dlq()]
    by_kind = Counter(d["error_kind"] for d in dead)
    no_reason = [d for d in dead if not d["error"]]
    print(
        f"\nhostile input: sent {len(mixed):,} ({len(valid):,} valid, {n_bad:,} malformed in "
        f"{len(bad)} kinds); dead-lettered {len(dead):,} by kind {dict(by_kind)}; applied "
        f"{metrics.get('leadscore_events_applied_total', 0):,.0f}; stalls 0; {seconds:.1f}s"
    )
    assert len(dead) == n_bad  # each bad message once
    assert not no_reason
    positions = {(d["source_partition"], d["source_offset"]) for d in dead}
    assert len(positions) == n_bad
    assert all(len(json.dumps(d)) < 300_000 for d in dead)  # bounded whatever the input

    store, _ = replay(valid, rules)
    states = read_states(stack.redis_url, stack.key_prefix, rules, store.states)
    want = {lead: s.events_applied for lead, s in store.states.items()}
    got = {lead: s.events_applied for lead, s in states.items()}
    add_row(
        Row(
            f"hostile input: {n_bad:,} malformed in {len(bad)} kinds among {len(valid):,} valid",
            len(mixed),
            "0 / 0 / 0",
            sum(max(0, want[lead] - got.get(lead, 0)) for lead in want),
            sum(max(0, got.get(lead, 0) - want[lead]) for lead in want),
            "-",
            seconds,
        )
    )
    assert got == want
    assert {lead: s.sums for lead, s in states.items()} == {
        lead: s.sums for lead, s in store.states.items()
    }
    assert worker.stop() == 0
