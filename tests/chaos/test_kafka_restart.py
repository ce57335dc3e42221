"""The Kafka broker SIGKILLed and restarted while the worker runs (the repository's own
broker, brought back by ``scripts/services up``): the worker waits it out and ends with
exactly the replayed states and crossings."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from scoring.rules import RuleSet
from tests.chaos.report import Row, add_row
from tests.integration.worker_harness import (
    FUTURE_MS,
    REPO_ROOT,
    WorkerStack,
    encode,
    record_payload,
    replay,
    wait_for_replayed_states,
)
from tests.strategies import generate_event_log

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def _broker_pid() -> int:
    cache = Path(os.environ.get("LEADSCORE_CACHE_DIR", REPO_ROOT / ".cache"))
    return int((cache / "kafka" / "kafka.pid").read_text().strip())


def test_kafka_broker_killed_and_restarted_mid_run(stack: WorkerStack, rules: RuleSet) -> None:
    events = generate_event_log(
        31, 6_000, 300, start_ms=FUTURE_MS, buying_fraction=0.4, lead_prefix="broker-"
    )
    stack.make_topics(partitions=3)
    worker = stack.start(stack.config(sweep_interval=3600))
    half = len(events) // 2
    stack.produce([encode(e) for e in events[:half]])
    worker.wait_processed(half)

    started = time.monotonic()
    os.kill(_broker_pid(), signal.SIGKILL)
    time.sleep(3)
    assert worker.alive
    subprocess.run(
        [str(REPO_ROOT / "scripts" / "services"), "up"],
        check=True,
        capture_output=True,
        timeout=180,
    )
    stack.produce([encode(e) for e in events[half:]])

    store, crossings = replay(events, rules)
    end = wait_for_replayed_states(stack.redis_url, stack.key_prefix, rules, store)
    recovery_s = time.monotonic() - started
    lost, doubled = end.lost, end.doubled
    deadline = time.monotonic() + 60
    expected = {c.event_id for c in crossings}
    while True:
        copies = Counter(record_payload(r)["event_id"] for r in stack.read_hot())
        if set(copies) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    add_row(
        Row(
            "Kafka broker SIGKILLed mid-run, restarted",
            len(events),
            "1 / 1 / 0",
            lost,
            doubled,
            f"{len(expected)} / {len(copies)} / {sum(n - 1 for n in copies.values())}",
            recovery_s,
        )
    )
    assert (lost, doubled) == (0, 0)
    assert set(copies) == expected
    assert worker.stop() == 0


def test_sigterm_while_kafka_is_down_stops_in_bounded_time(
    stack: WorkerStack, rules: RuleSet
) -> None:
    """The broker is down: SIGTERM still ends the worker in bounded time (leaving the
    group, closing the consumer and stopping Faust's producer are all bounded, and a
    batch in hand would be abandoned after LEADSCORE_STOP_TIMEOUT)."""
    stack.make_topics(partitions=1)
    config = stack.config(sweep_interval=3600, extra_env={"LEADSCORE_STOP_TIMEOUT": "3"})
    worker = stack.start(config)
    events = generate_event_log(53, 400, 10, start_ms=FUTURE_MS, buying_fraction=1.0)
    # events with crossings: the producer has sent, and holds connections to close
    stack.produce([encode(e) for e in events])
    worker.wait_processed(len(events))
    os.kill(_broker_pid(), signal.SIGKILL)
    try:
        time.sleep(2)
        started = time.monotonic()
        code = worker.stop(90)  # SIGTERM; fails the test if it does not end by then
        took = time.monotonic() - started
        print(f"\nstop while Kafka is down: exit {code} after {took:.1f}s")
        assert took < 60
    finally:
        subprocess.run(
            [str(REPO_ROOT / "scripts" / "services"), "up"],
            check=True,
            capture_output=True,
            timeout=180,
        )
