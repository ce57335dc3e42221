"""The store on a Redis Cluster of the test's own: one node rolls back on its own (restored
from a backup of its AOF), and the store finds it from that node's "applied up to" marks,
whether it kept running or starts afresh knowing only Kafka's committed offsets; re-reading
from the marks then gives exactly the memory store's states."""

from __future__ import annotations

import asyncio
import math
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
from redis.asyncio import Redis, RedisCluster

from scoring.rules_file import default_rules_path, load_rules
from scoring.state import Position
from scoring.state_machine import score_at
from scoring.store import EventItem, MemoryStore
from streams.live.interfaces import StoreRolledBack
from streams.live.redis_errors import StoreFormatError
from streams.live.redis_store import RedisStore
from tests.integration.conftest import PrivateRedis, PrivateRedisCluster
from tests.integration.test_redis_store import items_for
from tests.strategies import DAY_MS, generate_event_log

pytestmark = pytest.mark.integration

RULES = load_rules(default_rules_path())


def marks_of(items: Sequence[EventItem]) -> dict[str, int]:
    marks: dict[str, int] = {}
    for _, position in items:
        assert position is not None
        marks[position.stream] = max(marks.get(position.stream, 0), position.offset + 1)
    return marks


async def until_reachable(operation: Any) -> Any:
    """Run ``operation()`` until the restarted node answers (the client reconnects)."""
    for _ in range(50):
        try:
            return await operation()
        except (redis.exceptions.ConnectionError, redis.exceptions.ClusterDownError):
            await asyncio.sleep(0.2)
    return await operation()


@pytest.mark.parametrize("store_restarts", [False, True], ids=["store-runs-on", "new-store"])
def test_one_node_rolled_back_is_found_and_re_read_from_its_marks(
    private_redis_cluster: PrivateRedisCluster, key_prefix: str, store_restarts: bool
) -> None:
    items = items_for(generate_event_log(17, 3_000, 120, span_ms=10 * DAY_MS), partitions=3)
    first, second = items[:1_200], items[1_200:]
    cluster = private_redis_cluster

    async def scenario() -> None:
        client = RedisCluster.from_url(cluster.url)
        store = RedisStore(client, RULES, key_prefix)
        await store.apply_batch(first)
        first_counts = {
            x: s.events_applied
            for x, s in (await store.get_many(list({e.lead_id for e, _ in first}))).items()
        }
        rolled = cluster.node_of(store.keys.lead(first[0][0].lead_id).state)
        backup = cluster.nodes[rolled].backup()  # fsync always: all of `first`
        await store.apply_batch(second)
        cluster.restore(rolled, backup)  # that node lost `second`; the others kept it

        if store_restarts:  # a worker starting: it knows Kafka's committed offsets
            await client.aclose()
            client = RedisCluster.from_url(cluster.url)
            store = RedisStore(client, RULES, key_prefix)
            store.note_applied(marks_of(items))
        behind = await until_reachable(store.verify_applied)
        assert behind == marks_of(first)
        # The consumer rewinds to the marks; what the other nodes kept is skipped by the
        # per-lead offsets, what the rolled-back node lost is applied again.
        again = [(e, p) for e, p in items if p is not None and p.offset >= behind[p.stream]]
        result = await store.apply_batch(again)
        assert await store.verify_applied() == {}

        memory = MemoryStore(RULES)
        memory.apply_batch_sync(items)
        # Only the rolled-back node's leads had anything to apply again.
        on_node = {e.lead_id for e, _ in second}
        on_node = {x for x in on_node if cluster.node_of(store.keys.lead(x).state) == rolled}
        assert result.applied == sum(
            memory.states[x].events_applied - first_counts.get(x, 0) for x in on_node
        )
        at = max(e.occurred_at_ms for e, _ in items) + DAY_MS
        for lead_id, expected in memory.states.items():
            state = await store.get(lead_id)
            assert state is not None, lead_id
            assert state.events_applied == expected.events_applied, lead_id
            assert math.isclose(
                score_at(state, RULES, at), score_at(expected, RULES, at), rel_tol=1e-9
            )
        # A store that keeps writing with a stale view is refused, writing nothing.
        with pytest.raises(StoreRolledBack):
            stale = RedisStore(client, RULES, key_prefix)
            stale.note_applied({s: o + 10 for s, o in marks_of(items).items()})
            await stale.apply_batch(items[-5:])
        await client.aclose()

    asyncio.run(scenario())


def test_a_cluster_node_without_the_cluster_setting_is_refused_plainly(
    redis_cluster_url: str, key_prefix: str
) -> None:
    """A standalone client on a cluster node would be told MOVED for most keys: the store
    says what to set instead, before it reads or writes anything."""

    async def scenario() -> None:
        client = Redis.from_url(redis_cluster_url)
        try:
            with pytest.raises(StoreFormatError, match="LEADSCORE_REDIS_CLUSTER=true"):
                await RedisStore(client, RULES, key_prefix).get("anyone")
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_node_that_lost_everything_is_re_read_from_the_log_start(
    private_redis_cluster: PrivateRedisCluster, key_prefix: str
) -> None:
    """A master comes back empty (no AOF, or a replica promoted before it synced): its
    marks key is gone under every tag it had, so every known stream is behind from the
    start, and re-reading everything gives the memory store's states."""
    items = items_for(generate_event_log(23, 2_000, 80, span_ms=10 * DAY_MS), partitions=2)
    cluster = private_redis_cluster

    async def scenario() -> None:
        client = RedisCluster.from_url(cluster.url)
        store = RedisStore(client, RULES, key_prefix)
        await store.apply_batch(items)
        # The node of a lead that is not where the global keys are (names, indexes).
        global_node = cluster.node_of(store.keys.meta)
        lost = next(
            n
            for n in (cluster.node_of(store.keys.lead(e.lead_id).state) for e, _ in items)
            if n != global_node
        )
        wiped = Redis.from_url(cluster.nodes[lost].url)
        await wiped.flushall()
        await wiped.aclose()

        fresh = RedisStore(client, RULES, key_prefix)
        fresh.note_applied(marks_of(items))
        behind = await until_reachable(fresh.verify_applied)
        assert behind == dict.fromkeys(marks_of(items), -1)
        result = await fresh.apply_batch(items)  # from the log start
        memory = MemoryStore(RULES)
        memory.apply_batch_sync(items)
        # Only the wiped master's leads are applied again; the others' are skipped.
        on_wiped = [x for x in memory.states if cluster.node_of(fresh.keys.lead(x).state) == lost]
        assert result.applied == sum(memory.states[x].events_applied for x in on_wiped)
        assert result.duplicates == len(items) - result.applied
        for lead_id, expected in memory.states.items():
            state = await fresh.get(lead_id)
            assert state is not None and state.events_applied == expected.events_applied
        await client.aclose()

    asyncio.run(scenario())


def test_the_name_dictionary_is_repaired_from_the_nodes_after_its_node_rolls_back(
    private_redis_cluster: PrivateRedisCluster, key_prefix: str
) -> None:
    """The master holding the name dictionary is restored from a backup taken before a
    worker named a new stream: states on the other masters use that number. A store
    reading the dictionary puts the lost name back from the nodes' copies, and a name given
    later gets a new number, never the lost one."""
    events = [e for e, _ in items_for(generate_event_log(31, 600, 40), partitions=1)]
    cluster = private_redis_cluster

    async def scenario() -> None:
        client = RedisCluster.from_url(cluster.url)
        first = RedisStore(client, RULES, key_prefix)
        await first.apply_batch([(e, Position("events:0", i)) for i, e in enumerate(events)])
        dictionary_node = cluster.node_of(first.keys.names)
        backup = cluster.nodes[dictionary_node].backup()
        second = RedisStore(client, RULES, key_prefix)
        await second.apply_batch(
            [(e, Position("other:0", 1_000 + i)) for i, e in enumerate(events)]
        )
        lost_number = second.names.numbers["stream:other:0"]
        cluster.restore(dictionary_node, backup)
        await client.aclose()

        client = RedisCluster.from_url(cluster.url)
        third = RedisStore(client, RULES, key_prefix)
        lost = await until_reachable(lambda: client.hget(third.keys.names, "stream:other:0"))
        assert lost is None  # the rollback took it
        await third.reload_names()
        assert third.names.numbers["stream:other:0"] == lost_number
        await third.name(["stream:third:0"])
        assert third.names.numbers["stream:third:0"] > lost_number
        # A lead on another master decodes with the stream its state names.
        elsewhere = next(
            e.lead_id
            for e in events
            if cluster.node_of(third.keys.lead(e.lead_id).state) != dictionary_node
        )
        state = await third.get(elsewhere)
        assert state is not None and "other:0" in state.positions
        await client.aclose()

    asyncio.run(scenario())


def test_a_master_that_serves_no_slots_yet_is_no_obstacle(
    private_redis_cluster: PrivateRedisCluster, key_prefix: str, tmp_path: Path
) -> None:
    """A fourth master joins (the first step of scaling out, before any slot moves to
    it): the store writes the other three as before, and does not wait for the new one."""
    cluster = private_redis_cluster
    extra = PrivateRedis(tmp_path / "extra", cluster=True)
    extra.start()
    try:
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "add-node",
                f"127.0.0.1:{extra.port}",
                f"127.0.0.1:{cluster.nodes[0].port}",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        probe: Any = Redis.from_url(cluster.url)

        async def four_masters() -> None:
            for _ in range(100):
                nodes = await probe.execute_command("CLUSTER NODES")  # parsed: address -> info
                flags = [str(info.get("flags", "")) for info in nodes.values()]
                if sum("master" in f and "handshake" not in f for f in flags) >= 4:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(nodes)

        items = items_for(generate_event_log(41, 800, 30), partitions=2)

        async def scenario() -> None:
            await four_masters()
            await probe.aclose()
            client = RedisCluster.from_url(cluster.url)
            store = RedisStore(client, RULES, key_prefix)
            result = await asyncio.wait_for(store.apply_batch(items), 30)
            memory = MemoryStore(RULES)
            assert result.applied == memory.apply_batch_sync(items).applied
            await client.aclose()

        asyncio.run(scenario())
    finally:
        extra.kill()
