"""Redis goes away under a running worker, two ways: SIGKILLed and restarted from its AOF,
or frozen for 15 s (SIGSTOP: a swapping or stalled host). The worker retries (never skips),
``/healthz`` answers within a second all along (503 while Redis is gone), and once Redis is
back the states equal the replay: nothing lost, nothing applied twice."""

from __future__ import annotations

import signal
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

PAUSE_S = 15.0


@pytest.mark.parametrize("fault", ["killed-restarted", "paused-15s"])
def test_redis_killed_or_paused_mid_run_loses_and_doubles_nothing(
    stack: WorkerStack, rules: RuleSet, private_redis: Any, fault: str
) -> None:
    stack.make_topics(partitions=2)
    worker = stack.start(stack.config(redis_url=private_redis.url, sweep_interval=0.5))
    events = generate_event_log(
        11, 3_000, 100, start_ms=FUTURE_MS, buying_fraction=0.5, lead_prefix="redis-fault-"
    )
    half = len(events) // 2
    stack.produce([encode(e) for e in events[:half]])
    worker.wait_processed(half)

    started = time.monotonic()
    if fault == "killed-restarted":
        private_redis.kill()
        stack.produce([encode(e) for e in events[half:]])
        worker.wait_log(r"failed \(attempt \d+\): ConnectionError", timeout=30, count=2)
        assert worker.alive
        assert worker.http_get("/healthz")[0] == 503
        private_redis.start()
        faults = "0 / 1 / 0"
    else:
        assert private_redis.proc is not None
        private_redis.proc.send_signal(signal.SIGSTOP)
        try:
            stack.produce([encode(e) for e in events[half:]])
            slowest, statuses = 0.0, set()
            while time.monotonic() - started < PAUSE_S:
                asked = time.monotonic()
                status, _ = worker.http_get("/healthz")
                slowest = max(slowest, time.monotonic() - asked)
                statuses.add(status)
                time.sleep(0.5)
        finally:
            private_redis.proc.send_signal(signal.SIGCONT)
        print(f"\n/healthz while Redis was frozen: {sorted(statuses)}, slowest {slowest:.2f}s")
        assert slowest < 1.0
        assert 503 in statuses
        faults = "0 / 0 / 1"
    worker.wait_processed(len(events), timeout=90)
    worker.wait_healthy(30)

    check_against_replay(
        stack,
        private_redis.url,
        rules,
        events,
        scenario="Redis SIGKILLed mid-run, restarted from its AOF"
        if fault == "killed-restarted"
        else f"Redis frozen (SIGSTOP) {PAUSE_S:.0f} s mid-run",
        faults=faults,
        started=started,
        timeout=60,
    )
    assert worker.stop() == 0
