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
from tests.chaos.report import check_against_replay
from tests.integration.worker_harness import (
    FUTURE_MS,
    WorkerStack,
    encode,
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

    check_against_replay(
        stack,
        private_redis.url,
        rules,
        events,
        scenario="Redis restored from an earlier AOF backup (rollback), worker "
        + ("restarted" if worker_restarts else "running on"),
        faults="1 / 1 / 0" if worker_restarts else "0 / 1 / 0",
        started=started,
    )
    assert worker.stop() == 0
