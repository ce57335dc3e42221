"""The bucketed rank and cooling indexes (:mod:`streams.live.redis_index`) on a real Redis,
standalone and cluster: every entry in the bucket its hash names, every bucket a listpack,
the same entries, sweeps and top-N as the reference store, and format 2's two zsets
converted into buckets."""

from __future__ import annotations

import asyncio
import uuid
import zlib

import pytest

from scoring.rules_file import default_rules_path, load_rules
from scoring.state_machine import rank_bound
from scoring.store import MemoryStore
from streams.live import redis_index, redis_store
from streams.live.redis_errors import StoreFormatError
from streams.live.redis_index import lead_hash, rank_score
from streams.live.redis_store import RedisStore
from tests.integration.conftest import NewClient
from tests.integration.test_redis_store import assert_same_top, drop_prefix, items_for
from tests.strategies import DAY_MS, HOUR_MS, generate_event_log

RULES = load_rules(default_rules_path())


def bucket_of(h: int, level: int, split: int) -> int:
    b = h % 2**level
    return h % 2 ** (level + 1) if b < split else b


def test_many_leads_spread_over_listpack_buckets_and_read_back_exactly(
    new_store_client: NewClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3,000 leads: the indexes split into dozens of buckets, each a listpack holding
    just the leads its hash names; entries, cooling sweeps (with leads held back, as
    for another worker's partitions) and top-N equal the reference store's."""
    items = items_for(generate_event_log(31, 7_000, 3_000, span_ms=10 * DAY_MS))
    prefix = f"test:{uuid.uuid4().hex}:"
    # many round trips: the sweep's cursor
    monkeypatch.setattr(redis_store, "SWEEP_CHUNK", 7)
    monkeypatch.setattr(redis_index, "DUE_BUCKETS_PER_CALL", 3)

    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, RULES, prefix)
            memory = MemoryStore(RULES)
            for start in range(0, len(items), 1000):
                await store.apply_batch(items[start : start + 1000])
                memory.apply_batch_sync(items[start : start + 1000])
            landmark = int(await client.hget(store.keys.meta, "landmark"))
            want_rank = {
                lead: rank_score(bound)
                for lead, state in memory.states.items()
                if (bound := rank_bound(state, RULES, landmark)) > 0
            }
            assert await store.indexes.everything("rank") == want_rank
            want_due = {lead: float(ms) for lead, ms in memory.cool_due_index().items()}
            assert await store.indexes.everything("cool-due") == want_due

            for kind, base, summary, size in (
                ("rank", store.keys.rank_base, store.keys.rank_max, len(want_rank)),
                ("cool-due", store.keys.cool_due_base, store.keys.cool_due_min, len(want_due)),
            ):
                level, split, count = (
                    int(v)
                    for v in await client.hmget(
                        store.keys.meta, f"{kind}:level", f"{kind}:split", f"{kind}:count"
                    )
                )
                assert count == size
                assert 2**level + split >= size / 40, (kind, level, split)
                assert kind != "rank" or 2**level + split > 40
                buckets = [int(b) for b in await client.zrange(summary, 0, -1)]
                for bucket in buckets:
                    key = f"{base}{bucket}"
                    assert await client.object("encoding", key) == b"listpack"
                    members = [m.decode() for m in await client.zrange(key, 0, -1)]
                    assert all(bucket_of(lead_hash(m), level, split) == bucket for m in members)

            last = max(e.occurred_at_ms for e, _ in items)
            for n, at_ms in ((1, last), (10, last + DAY_MS), (200, last + 3 * DAY_MS)):
                await assert_same_top(store, memory, n, at_ms)

            # A sweep that holds a third of the leads back, then one that holds none.
            at_ms = int(sorted(want_due.values())[len(want_due) // 2])  # half are due
            held = {lead for lead in memory.states if zlib.crc32(lead.encode()) % 3 == 0}
            first = await store.cool_due(at_ms, lambda s: None if s.lead_id in held else at_ms)
            want_first = memory.cool_due_sync(at_ms, [x for x in memory.states if x not in held])
            assert [c.event_id for c in first.crossings] == [
                c.event_id for c in want_first.crossings
            ]
            assert first.crossings, "expected leads to cool"
            rest = await store.cool_due(at_ms)
            want_rest = memory.cool_due_sync(at_ms)
            assert [c.event_id for c in rest.crossings] == [c.event_id for c in want_rest.crossings]
            assert rest.crossings, "expected the held-back leads to cool"
            later = last + 40 * DAY_MS
            assert [c.event_id for c in (await store.cool_due(later)).crossings] == [
                c.event_id for c in memory.cool_due_sync(later).crossings
            ]
            left = {lead: float(ms) for lead, ms in memory.cool_due_index().items()}
            assert await store.indexes.everything("cool-due") == left
        finally:
            await drop_prefix(client, prefix)
            await client.aclose()

    asyncio.run(scenario())


def test_a_format_2_store_gets_its_indexes_bucketed(new_store_client: NewClient) -> None:
    """A store written by the previous leadscore (one zset per index, raw bounds) is
    refused until a worker prepares it, then holds the same entries in buckets."""
    items = items_for(generate_event_log(32, 3_000, 400, span_ms=5 * DAY_MS))
    prefix = f"test:{uuid.uuid4().hex}:"

    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, RULES, prefix)
            await store.apply_batch(items)
            rank = await store.indexes.everything("rank")
            due = await store.indexes.everything("cool-due")
            assert rank and due
            # Back to format 2: the same states, the indexes as one zset each.
            landmark = int(await client.hget(store.keys.meta, "landmark"))
            states = await store.get_many(sorted({e.lead_id for e, _ in items}))
            bounds = {lead: rank_bound(s, RULES, landmark) for lead, s in states.items()}
            buckets = [
                k
                async for k in client.scan_iter(match=f"{prefix}*")
                if k.decode().startswith((store.keys.rank_base, store.keys.cool_due_base))
            ]
            for key in buckets:  # (one by one: on a cluster they share a slot anyway)
                await client.delete(key)
            fields = [f"{k}:{f}" for k in ("rank", "cool-due") for f in ("level", "split", "count")]
            await client.hdel(store.keys.meta, *fields)
            await client.zadd(
                store.keys.legacy_rank_index, {lead: b for lead, b in bounds.items() if b > 0}
            )
            await client.zadd(store.keys.legacy_cool_due_index, due)
            await client.hset(store.keys.meta, "format", 2)

            old = RedisStore(client, RULES, prefix)
            with pytest.raises(StoreFormatError, match=r"format 2.*leadscore worker"):
                await old.top(5, landmark)
            await RedisStore(client, RULES, prefix).prepare()
            again = RedisStore(client, RULES, prefix)
            assert await again.indexes.everything("rank") == rank
            assert await again.indexes.everything("cool-due") == due
            assert await client.exists(store.keys.legacy_rank_index) == 0
            assert await client.exists(store.keys.legacy_cool_due_index) == 0
            assert await client.hget(store.keys.meta, "format") == b"3"
            last = max(e.occurred_at_ms for e, _ in items)
            memory = MemoryStore(RULES)
            memory.apply_batch_sync(items)
            got = await again.top(10, last + HOUR_MS)
            assert [x for x, _ in got] == [x for x, _ in memory.top_sync(10, last + HOUR_MS)]
        finally:
            await drop_prefix(client, prefix)
            await client.aclose()

    asyncio.run(scenario())


def test_a_reader_of_a_snapshot_finds_leads_moved_by_later_splits(
    new_store_client: NewClient,
) -> None:
    """`top` lists the buckets once, then reads them over several round trips: buckets
    split in between (new leads arriving) must not hide a lead it listed."""
    early = items_for(generate_event_log(33, 1_500, 1_000, span_ms=DAY_MS))
    late = items_for(generate_event_log(34, 3_000, 3_000, span_ms=DAY_MS, lead_prefix="new-"))
    prefix = f"test:{uuid.uuid4().hex}:"

    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, RULES, prefix)
            await store.apply_batch(early)
            snapshot = await store.indexes.snapshot("rank")
            listed = await store.indexes.everything("rank")
            await store.apply_batch(late)  # dozens of splits
            after = await store.indexes.snapshot("rank")
            assert (after.level, after.split) != (snapshot.level, snapshot.split)
            buckets = [b for b, _ in snapshot.buckets]
            found: dict[str, float] = {}
            for entries in await store.indexes.read("rank", snapshot, buckets):
                found.update(entries)
            assert listed.keys() <= found.keys()
        finally:
            await drop_prefix(client, prefix)
            await client.aclose()

    asyncio.run(scenario())
