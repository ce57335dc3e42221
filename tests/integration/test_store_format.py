"""The live store's format 2 against a real Redis: one string per lead, the applied-up-to
marks, idle-lead retention, and the one-time conversion of a format-1 store (what
leadscore wrote before the compact format)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from scoring.rules_file import default_rules_path, load_rules
from scoring.state import LeadState
from scoring.state_machine import score_at
from scoring.store import EventItem, MemoryStore
from streams.live.redis_errors import StoreFormatError
from streams.live.redis_keys import KeySpace
from streams.live.redis_store import RedisStore
from tests.integration.test_redis_store import items_for
from tests.strategies import generate_event_log

pytestmark = pytest.mark.integration

RULES = load_rules(default_rules_path())


def test_one_string_per_lead_and_the_applied_marks(redis_url: str, key_prefix: str) -> None:
    items = items_for(generate_event_log(3, 1_500, 40))

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            store = RedisStore(client, RULES, key_prefix)
            result = await store.apply_batch(items)
            await store.mark_delivered(result.crossings)
            leads = {e.lead_id for e, _ in items}
            keys = {k.decode() async for k in client.scan_iter(match=f"{key_prefix}*")}
            state_keys = {store.keys.lead(lead).state for lead in leads}
            assert state_keys <= keys
            assert {await client.type(k) for k in state_keys} == {b"string"}
            others = keys - state_keys
            buckets = {
                k for k in others if k.startswith((store.keys.rank_base, store.keys.cool_due_base))
            }
            assert buckets, "expected the index buckets"
            assert others - buckets <= {store.keys.meta, store.keys.names, store.keys.applied}
            # the index buckets are listpacks (the point of bucketing them)
            assert {await client.object("encoding", k) for k in buckets} == {b"listpack"}
            # "applied up to": per partition, the offset after the last stored event
            stored_marks = await client.hgetall(store.keys.applied)
            marks = {k.decode(): int(v) for k, v in stored_marks.items()}
            want: dict[str, int] = {}
            for _, position in items:
                assert position is not None
                want[position.stream] = max(want.get(position.stream, 0), position.offset + 1)
            assert marks == want
            assert await client.hget(store.keys.meta, "format") == b"3"
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_idle_lead_retention_expires_cold_leads_only(redis_url: str, key_prefix: str) -> None:
    items = items_for(generate_event_log(4, 2_000, 50))

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            day_ms = 24 * 3600 * 1000
            store = RedisStore(client, RULES, key_prefix, idle_lead_retention_ms=90 * day_ms)
            await store.apply_batch(items)
            states = await store.get_many(sorted({e.lead_id for e, _ in items}))
            ttls = {lead: await client.pttl(store.keys.lead(lead).state) for lead in states}
            hot = {lead for lead, s in states.items() if s.hot}
            assert hot and len(hot) < len(states)
            assert all(ttls[lead] == -1 for lead in hot)  # a hot lead never expires
            assert all(0 < ttls[lead] <= 90 * day_ms for lead in states if lead not in hot)
            # a lead that is gone (expired) drops out of `top` and its index entry goes
            gone = next(lead for lead in states if lead not in hot)
            await client.delete(store.keys.lead(gone).state)
            last = max(e.occurred_at_ms for e, _ in items)
            top = await store.top(len(states), last)
            assert gone not in {lead for lead, _ in top}
            assert gone not in await store.indexes.everything("rank")
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_unidentified_lead_retention_expires_cold_leads_without_a_profile(
    redis_url: str, key_prefix: str
) -> None:
    """One-time anonymous visitors (no profile) expire sooner; identified leads, and hot
    ones, keep the general rule (here: never)."""
    items = items_for(generate_event_log(5, 2_000, 50))

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            day_ms = 24 * 3600 * 1000
            store = RedisStore(client, RULES, key_prefix, unidentified_lead_retention_ms=day_ms)
            await store.apply_batch(items)
            states = await store.get_many(sorted({e.lead_id for e, _ in items}))
            ttls = {lead: await client.pttl(store.keys.lead(lead).state) for lead in states}
            cold_anonymous = {lead for lead, s in states.items() if not s.hot and not s.profile}
            assert cold_anonymous and len(cold_anonymous) < len(states)
            assert all(0 < ttls[lead] <= day_ms for lead in cold_anonymous)
            assert all(ttls[lead] == -1 for lead in states if lead not in cold_anonymous)
        finally:
            await client.aclose()

    asyncio.run(scenario())


async def _write_format_1(client: Redis, prefix: str, memory: MemoryStore) -> None:
    """What leadscore wrote before format 2, for the states of ``memory``."""
    keys = KeySpace(prefix)
    for lead, state in memory.states.items():
        data = state.to_dict()
        del data["recent_ids"]
        key = keys.lead(lead).state
        await client.hset(key, mapping={"v": 3, "s": orjson.dumps(data)})
        await client.sadd(keys.legacy_seen(key), *_applied_ids[lead])
        await client.zadd(f"{prefix}idx:rank:{14 * 24 * 3600 * 1000}", {lead: 1.0})
    await client.hset(keys.meta, "landmark", min(s.clock_ms for s in memory.states.values()))


_applied_ids: dict[str, list[str]] = {}


def _reference(items: Sequence[EventItem]) -> MemoryStore:
    memory = MemoryStore(RULES)
    memory.apply_batch_sync(items)
    _applied_ids.clear()
    for event, _ in items:
        _applied_ids.setdefault(event.lead_id, [])
        if event.event_id not in _applied_ids[event.lead_id]:
            _applied_ids[event.lead_id].append(event.event_id)
    return memory


def test_a_format_1_store_is_converted_once_and_scores_on(redis_url: str, key_prefix: str) -> None:
    # No re-sends: converted ids count as of the lead's clock (stricter than the window for
    # one window after the upgrade), so a re-send of an old event may differ from a replay.
    items = items_for(generate_event_log(5, 3_000, 60, duplicate_fraction=0.0))
    first, rest = items[:2_000], items[2_000:]

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            old = _reference(first)
            await _write_format_1(client, key_prefix, old)
            store = RedisStore(client, RULES, key_prefix)
            with pytest.raises(StoreFormatError, match=r"format 1.*leadscore worker"):
                await store.get(next(iter(old.states)))
            seen: list[int] = []
            assert await RedisStore(client, RULES, key_prefix).prepare(seen.append) == len(
                old.states
            )
            assert seen and seen[-1] == len(old.states)
            keys = [k.decode() async for k in client.scan_iter(match=f"{key_prefix}*")]
            assert not [k for k in keys if k.endswith(":seen") or ":idx:rank:" in k]
            store = RedisStore(client, RULES, key_prefix)
            assert await store.prepare() == 0  # once only
            converted = await store.get_many(sorted(old.states))
            for lead, state in old.states.items():
                got = converted[lead]
                assert _without_window(got) == _without_window(state)
                # every applied id is remembered (as of the lead's clock) for one window
                assert len(got.recent_ids) == 16 * len(_applied_ids[lead])
            # a re-send of an already applied event is still a duplicate
            again = await store.apply_batch([(first[0][0], None)])
            assert (again.applied, again.duplicates) == (0, 1)
            # and scoring goes on exactly as if nothing had happened
            await store.apply_batch(rest)
            reference = MemoryStore(RULES)
            reference.apply_batch_sync(items)
            last = max(e.occurred_at_ms for e, _ in items)
            for lead, want in reference.states.items():
                got_state = await store.get(lead)
                assert got_state is not None
                assert got_state.events_applied == want.events_applied
                assert score_at(got_state, RULES, last) == pytest.approx(
                    score_at(want, RULES, last), rel=1e-9
                )
            top = await store.top(10, last)
            assert [lead for lead, _ in top] == [lead for lead, _ in reference.top_sync(10, last)]
        finally:
            await client.aclose()

    asyncio.run(scenario())


def _without_window(state: LeadState) -> dict[str, object]:
    data = state.to_dict()
    del data["recent_ids"]
    return data


def test_risky_redis_settings_are_reported_at_start(
    private_redis: Any, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        client = Redis.from_url(private_redis.url)
        try:
            await client.config_set("maxmemory-policy", "allkeys-lru")
            await client.config_set("appendfsync", "everysec")
            await client.config_set("zset-max-listpack-entries", 64)
            with caplog.at_level(logging.INFO, logger="leadscore.store"):
                await RedisStore(client, RULES, key_prefix).prepare()
        finally:
            await client.aclose()

    asyncio.run(scenario())
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("maxmemory-policy is allkeys-lru" in m for m in errors), errors
    assert "appendfsync is everysec" in caplog.text
    assert "zset-max-listpack-entries is 64" in caplog.text


def test_a_rebase_by_another_worker_is_seen_by_every_worker(
    redis_url: str, key_prefix: str
) -> None:
    """Worker A caches the rank landmark; worker B re-bases it. A's next index write finds
    the landmark moved, computes its bounds again, and `top` stays exact."""
    items = items_for(generate_event_log(8, 2_000, 50))
    first, rest = items[:1_000], items[1_000:]

    async def scenario() -> None:
        clients = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
        try:
            a, b = (RedisStore(c, RULES, key_prefix) for c in clients)
            await a.apply_batch(first)
            old = int(await clients[0].hget(a.keys.meta, "landmark"))
            new = old + 200 * 86_400_000  # ~7 of the longest half-lives: bounds 100x apart
            assert await b.rank.rebase(old, new)  # what B does when its clock runs far ahead
            before = await b.indexes.everything("rank")
            # A's clock gets there too: its re-base from `old` finds the landmark moved
            # and shifts nothing a second time.
            assert not await a.rank.rebase(old, new + 1000)
            assert await a.indexes.everything("rank") == before
            a.rank.forget()
            a.rank._landmark = old  # A still believes in `old`
            await a.apply_batch(rest)
            assert a.rank._landmark == new
            reference = MemoryStore(RULES)
            reference.apply_batch_sync(items)
            last = max(e.occurred_at_ms for e, _ in items)
            fresh = RedisStore(clients[1], RULES, key_prefix)
            got = await fresh.top(15, last)
            want = reference.top_sync(15, last)
            assert [lead for lead, _ in got] == [lead for lead, _ in want]
        finally:
            for client in clients:
                await client.aclose()

    asyncio.run(scenario())
