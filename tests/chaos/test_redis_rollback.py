"""A Redis rollback while the worker runs: Redis comes back from a backup taken earlier
(what a restore, a failover to a lagging replica or an AOF tail lost on power failure
does). Kafka has committed offsets beyond what Redis now holds; the worker must notice
(its "applied up to" marks are behind what it knows it applied), re-read from the marks,
and end with exactly the replayed states: nothing lost, nothing applied twice."""

from __future__ import annotations

import time
from typing import Any

import pytest

from scoring.rules import RuleSet
from tests.chaos.report import Row, add_row
from tests.integration.worker_harness import (
    FUTURE_MS,
    WorkerStack,
    encode,
    now_ms,
    record_payload,
    replay,
    wait_for_replayed_states,
)
from tests.strategies import generate_event_log

pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize(
    "worker_restarts", [False, True], ids=["worker-runs-on", "worker-restarts"]
)
def test_redis_rollback_is_re_read_from_the_applied_marks(
    stack: WorkerStack, rules: RuleSet, private_redis: Any, worker_restarts: bool
) -> None:
    stack.make_topics(partitions=2)
    config = stack.config(redis_url=private_redis.url, sweep_interval=0.5)
    worker = stack.start(config)
    events = generate_event_log(
        13, 1_200, 40, start_ms=FUTURE_MS, buying_fraction=0.5, lead_prefix="rollback-"
    )
    before, after = events[:500], events[500:]
    stack.produce([encode(e) for e in before])
    worker.wait_processed(len(before))
    backup = private_redis.backup()
    stack.produce([encode(e) for e in after])
    worker.wait_processed(len(events))

    started = time.monotonic()
    if worker_restarts:  # it learns what was applied from Kafka's committed offsets
        assert worker.stop() == 0
        private_redis.restore(backup)  # Redis now lacks the writes of `after`
        worker = stack.start(config, log_name="after-rollback")
    else:  # it knows what it applied
        private_redis.restore(backup)
    worker.wait_log(r"Redis holds what was applied up to", timeout=60)

    store, crossings = replay(events, rules, until_ms=now_ms())
    end = wait_for_replayed_states(private_redis.url, stack.key_prefix, rules, store, 90)
    recovery_s = time.monotonic() - started
    lost, doubled, states = end.lost, end.doubled, end.states
    published = [record_payload(r) for r in stack.read_hot()]
    ids = [p["event_id"] for p in published]
    add_row(
        Row(
            "Redis restored from an earlier AOF backup (rollback), worker "
            + ("restarted" if worker_restarts else "running on"),
            len(events),
            "1 / 1 / 0" if worker_restarts else "0 / 1 / 0",
            lost,
            doubled,
            f"{len(crossings)} / {len(set(ids))} / {len(ids) - len(set(ids))}",
            recovery_s,
        )
    )
    assert (lost, doubled) == (0, 0)
    assert {lead: s.sums for lead, s in states.items()} == {
        lead: s.sums for lead, s in store.states.items()
    }
    # Every crossing is out, with its deterministic id; those of the lost writes may come
    # twice (produced before the rollback and again after it), never with another id.
    assert set(ids) == {c.event_id for c in crossings}
    assert worker.stop() == 0
