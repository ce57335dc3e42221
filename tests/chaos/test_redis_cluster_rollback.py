"""A Redis Cluster node rolls back on its own while the worker runs: one of three masters
comes back from a backup of its AOF taken earlier (a failover to a lagging replica does
the same), the other two keep everything. The worker must find it from that node's
"applied up to" marks, re-read from them, and end with exactly the replayed states."""

from __future__ import annotations

import time

import pytest

from scoring.rules import RuleSet
from tests.chaos.report import check_against_replay
from tests.integration.conftest import PrivateRedisCluster
from tests.integration.worker_harness import (
    FUTURE_MS,
    WorkerStack,
    encode,
)
from tests.strategies import generate_event_log

pytestmark = [pytest.mark.integration]


def test_one_cluster_node_rolled_back_is_re_read_from_its_marks(
    stack: WorkerStack, rules: RuleSet, private_redis_cluster: PrivateRedisCluster
) -> None:
    cluster = private_redis_cluster
    stack.make_topics(partitions=2)
    config = stack.config(redis_url=cluster.url, sweep_interval=0.5)
    worker = stack.start(config)
    events = generate_event_log(
        29, 1_500, 60, start_ms=FUTURE_MS, buying_fraction=0.5, lead_prefix="shard-"
    )
    before, after = events[:600], events[600:]
    stack.produce([encode(e) for e in before])
    worker.wait_processed(len(before))
    backup = cluster.nodes[1].backup()
    stack.produce([encode(e) for e in after])
    worker.wait_processed(len(events))

    started = time.monotonic()
    cluster.restore(1, backup)  # node 1 lost its share of `after`
    worker.wait_log(r"Redis holds what was applied up to", timeout=60)

    check_against_replay(
        stack,
        cluster.url,
        rules,
        events,
        scenario="one of 3 Redis Cluster masters restored from an earlier AOF backup, "
        "worker running on",
        faults="0 / 1 / 0",
        started=started,
    )
    assert worker.stop() == 0
