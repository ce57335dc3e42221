"""Several workers in one consumer group under load: one joins mid-run (rebalance), one is
SIGKILLed right after another joins (killed during a rebalance), one is SIGSTOPped long
enough for the group to give its partitions away and then resumes (a zombie that still
holds a batch). The end result must be the replay's: nothing lost, nothing applied twice,
every hot/cooled record out with its deterministic id."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest

from scoring.rules import RuleSet
from tests.chaos.report import Row, add_row
from tests.integration.worker_harness import (
    FUTURE_MS,
    WorkerStack,
    crossing_payload,
    encode,
    record_payload,
    replay,
    wait_for_replayed_states,
)
from tests.strategies import generate_event_log

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

EVENTS = 30_000
LEADS = 1_500


def test_workers_joining_dying_and_pausing_lose_and_double_nothing(
    stack: WorkerStack, rules: RuleSet
) -> None:
    events = generate_event_log(
        29, EVENTS, LEADS, start_ms=FUTURE_MS, buying_fraction=0.3, lead_prefix="group-"
    )
    records = [encode(e) for e in events]
    stack.make_topics(partitions=6)
    config = stack.config(
        sweep_interval=3600,
        extra_env={
            "LEADSCORE_BROKER_SESSION_TIMEOUT": "6",
            "LEADSCORE_BROKER_HEARTBEAT_INTERVAL": "1",
            "LEADSCORE_BATCH_SIZE": "500",
        },
    )

    # The producer feeds the topic in slices while the group changes.
    def feed() -> None:
        for start in range(0, len(records), 1_000):
            stack.produce(records[start : start + 1_000])
            time.sleep(0.25)

    feeder = threading.Thread(target=feed)
    started = time.monotonic()
    a = stack.start(config, log_name="a")
    feeder.start()
    time.sleep(1.5)
    b = stack.start(config, log_name="b")  # joins under load: rebalance
    time.sleep(1.0)
    c = stack.start(config, log_name="c", ready=False)  # joins ...
    time.sleep(0.3)
    assert a.proc is not None
    a.proc.kill()  # ... and a dies during that rebalance
    a.proc.wait(10)
    c.wait_ready()
    time.sleep(1.0)
    assert b.proc is not None
    b.proc.send_signal(signal.SIGSTOP)  # b pauses past its session timeout: a zombie
    time.sleep(9)
    b.proc.send_signal(signal.SIGCONT)
    feeder.join(120)

    store, crossings = replay(events, rules)
    end = wait_for_replayed_states(stack.redis_url, stack.key_prefix, rules, store)
    seconds = time.monotonic() - started
    lost, doubled, states = end.lost, end.doubled, end.states
    published = [record_payload(r) for r in stack.read_hot()]
    copies = Counter(p["event_id"] for p in published)
    expected = {c.event_id: crossing_payload(c) for c in crossings}
    add_row(
        Row(
            "3 workers: one joins under load, one SIGKILLed in the rebalance, one SIGSTOPped"
            " 9 s (zombie)",
            EVENTS,
            "1 / 0 / 1",
            lost,
            doubled,
            f"{len(expected)} / {len(copies)} / {sum(n - 1 for n in copies.values())}",
            seconds,
        )
    )
    assert (lost, doubled) == (0, 0)
    assert {lead: s.sums for lead, s in states.items()} == {
        lead: s.sums for lead, s in store.states.items()
    }
    assert set(copies) == set(expected)
    for payload in published:
        assert {k: v for k, v in payload.items() if k != "emitted_at"} == expected[
            payload["event_id"]
        ]
    assert b.stop() == 0
    assert c.stop() == 0
