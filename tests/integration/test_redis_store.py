"""The Redis store against a real Redis, standalone and Redis Cluster (each test runs on
both, through ``new_store_client``): same results as the memory store, to 1e-9, on random
logs with late and duplicate events; atomicity under concurrent writers; index repair after
a crash between the per-lead script and the index writes; the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.crc import key_slot

from scoring.rules import RuleSet
from scoring.rules_file import build_ruleset, default_rules_path, load_rules
from scoring.state import Position
from scoring.state_machine import index_values, score_at
from scoring.store import EventItem, MemoryStore
from streams.live.redis_index import rank_score
from streams.live.redis_nodes import StandaloneNodes
from streams.live.redis_scripts import AFTER_PREVIOUS, LeadWrite
from streams.live.redis_store import RedisStore
from streams.live.state_format import VERSION_SLICE
from tests.integration.conftest import NewClient
from tests.strategies import (
    BASE_MS,
    DAY_MS,
    HOUR_MS,
    event_dict,
    event_from_dict,
    generate_event_log,
)

pytestmark = pytest.mark.integration

DEFAULT_RULES = load_rules(default_rules_path())

#: A second rule set: short and mixed half-lives, caps and negative rules, so that cooling
#: searches, re-basing and the rank bound are all exercised.
MIXED_RULES = build_ruleset(
    {
        "version": "mixed-1",
        "half_life": "6h",
        "thresholds": {"hot": 40, "cool": 25},
        "rules": [
            {"id": "pv", "event": "page_view", "points": 3},
            {"id": "pricing", "event": "page_view", "url_contains": "/pricing", "points": 12},
            {
                "id": "careers",
                "event": "page_view",
                "url_contains": "/careers",
                "points": -8,
                "half_life": "1h",
            },
            {"id": "open", "event": "email_open", "points": 2, "cap": 6},
            {"id": "click", "event": "email_click", "points": 9, "half_life": "2d"},
            {"id": "dl", "event": "download", "points": 15, "half_life": "3d", "cap": 40},
            {"id": "form", "event": "form_submit", "points": 25},
            {"id": "unsub", "event": "unsubscribe", "points": -30, "half_life": "12h"},
        ],
    }
)


def items_for(log: Sequence[dict[str, Any]], partitions: int = 4) -> list[EventItem]:
    """Events with Kafka-like positions: key = lead -> partition, offsets per partition."""
    offsets = [0] * partitions
    items: list[EventItem] = []
    for data in log:
        event = event_from_dict(data)
        partition = zlib.crc32(event.lead_id.encode()) % partitions
        items.append((event, Position(f"events:{partition}", offsets[partition])))
        offsets[partition] += 1
    return items


async def assert_same_top(redis_store: RedisStore, memory: MemoryStore, n: int, at_ms: int) -> None:
    """`top` of both stores: the same leads in the same order, scores within 1e-9."""
    got = await redis_store.top(n, at_ms)
    want = memory.top_sync(n, at_ms)
    assert [lead for lead, _ in got] == [lead for lead, _ in want]
    for (_, x), (_, y) in zip(got, want, strict=True):
        assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


async def apply_both(
    redis_store: RedisStore, memory: MemoryStore, items: Sequence[EventItem], batch: int
) -> tuple[list[str], list[str]]:
    redis_ids: list[str] = []
    memory_ids: list[str] = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        a = await redis_store.apply_batch(chunk)
        b = memory.apply_batch_sync(chunk)
        assert (a.applied, a.duplicates) == (b.applied, b.duplicates)
        redis_ids += [c.event_id for c in a.crossings]
        memory_ids += [c.event_id for c in b.crossings]
    return redis_ids, memory_ids


async def assert_same_states(
    redis_store: RedisStore, memory: MemoryStore, rules: RuleSet, at_ms: int
) -> None:
    for lead_id, expected in memory.states.items():
        state = await redis_store.get(lead_id)
        assert state is not None, lead_id
        assert state.events_applied == expected.events_applied
        assert state.hot == expected.hot
        assert math.isclose(
            score_at(state, rules, at_ms),
            score_at(expected, rules, at_ms),
            rel_tol=1e-9,
            abs_tol=1e-9,
        )


async def assert_indexes_match_states(store: RedisStore, lead_ids: Sequence[str]) -> None:
    """Each lead's rank and cooling entries are those of its stored state."""
    landmark = await store.rank.landmark()
    assert landmark is not None
    due = await store.indexes.everything("cool-due")
    ranks = await store.indexes.everything("rank")
    for lead_id in lead_ids:
        state = await store.get(lead_id)
        assert state is not None
        want_due, bound = index_values(state, store.rules, landmark)
        assert due.get(lead_id) == want_due, lead_id
        assert ranks.get(lead_id) == (rank_score(bound) if bound > 0 else None), lead_id


async def drop_prefix(client: Any, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    for start in range(0, len(keys), 1000):
        for key in keys[start : start + 1000]:
            await client.delete(key)  # one slot per command on a cluster


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**31),
    rules=st.sampled_from([DEFAULT_RULES, MIXED_RULES]),
    batch=st.sampled_from([1, 97, 2000]),
)
def test_redis_and_memory_stores_agree_on_10k_events(
    new_store_client: NewClient, seed: int, rules: RuleSet, batch: int
) -> None:
    """10k events, 300 leads, ~5% late and ~2% duplicate events, then a redelivery of a
    slice: identical crossings, counts, scores (1e-9), cooling sweep and top-N."""
    log = generate_event_log(seed, 10_000, 300, span_ms=20 * DAY_MS)
    items = items_for(log)
    prefix = f"test:{uuid.uuid4().hex}:"

    async def scenario() -> None:
        client = new_store_client()
        try:
            redis_store = RedisStore(client, rules, prefix)
            memory = MemoryStore(rules)
            size = batch if batch > 1 else 1
            head = items[:500] if size == 1 else items  # one-by-one: keep the test quick
            redis_ids, memory_ids = await apply_both(redis_store, memory, head, size)
            assert redis_ids == memory_ids
            # A redelivery (crash before commit): nothing changes, all counted duplicates.
            again = await redis_store.apply_batch(head[100:400])
            assert (again.applied, again.duplicates, again.crossings) == (0, 300, ())
            last = max(e.occurred_at_ms for e, _ in head)
            await assert_same_states(redis_store, memory, rules, last + DAY_MS)
            # Cooling sweep at a few times: same crossings, in the same order.
            for at_ms in (last + HOUR_MS, last + 3 * DAY_MS, last + 40 * DAY_MS):
                a = await redis_store.cool_due(at_ms)
                b = memory.cool_due_sync(at_ms)
                assert [c.event_id for c in a.crossings] == [c.event_id for c in b.crossings]
                assert [c.score for c in a.crossings] == [c.score for c in b.crossings]
            for n, at_ms in ((1, last), (10, last + DAY_MS), (25, last + 5 * DAY_MS)):
                await assert_same_top(redis_store, memory, n, at_ms)
        finally:
            await drop_prefix(client, prefix)
            await client.aclose()

    asyncio.run(scenario())


def test_concurrent_writers_apply_each_event_exactly_once(
    new_store_client: NewClient, key_prefix: str
) -> None:
    """Two stores (two workers after a rebalance) write the same leads at the same time:
    the compare-and-set script makes the loser reload and retry, nothing is lost or doubled."""
    log = generate_event_log(11, 1_200, 5, duplicate_fraction=0.0)
    items = items_for(log)
    # No positions: the two writers stand for different consumers of unrelated offsets.
    plain = [(event, None) for event, _ in items]

    async def scenario() -> None:
        clients = [new_store_client(), new_store_client()]
        try:
            stores = [RedisStore(c, DEFAULT_RULES, key_prefix) for c in clients]
            halves = [plain[0::2], plain[1::2]]

            async def feed(store: RedisStore, events: list[EventItem]) -> int:
                applied = 0
                for start in range(0, len(events), 40):
                    applied += (await store.apply_batch(events[start : start + 40])).applied
                return applied

            applied = await asyncio.gather(
                *(feed(s, h) for s, h in zip(stores, halves, strict=True))
            )
            assert sum(applied) == len(plain)
            memory = MemoryStore(DEFAULT_RULES)
            memory.apply_batch_sync(plain)
            last = max(e.occurred_at_ms for e, _ in plain)
            for lead_id, expected in memory.states.items():
                state = await stores[0].get(lead_id)
                assert state is not None
                assert state.events_applied == expected.events_applied
                assert state.recent_ids == expected.recent_ids
                assert math.isclose(
                    score_at(state, DEFAULT_RULES, last),
                    score_at(expected, DEFAULT_RULES, last),
                    rel_tol=1e-9,
                )
            # The final index entries are the final states' (one Redis: written in the
            # save's script; after it, on a cluster or after a lost race, then settled).
            await assert_indexes_match_states(stores[0], list(memory.states))
        finally:
            for client in clients:
                await client.aclose()

    asyncio.run(scenario())


def test_indexes_are_repaired_when_the_batch_is_redelivered(
    new_store_client: NewClient, key_prefix: str
) -> None:
    """A crash between the per-lead script and the index writes leaves stale indexes; the
    redelivered batch (all duplicates) rewrites them."""
    items = items_for(generate_event_log(5, 3_000, 60))

    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, DEFAULT_RULES, key_prefix)
            await store.apply_batch(items)
            kinds = ("cool-due", "rank")
            before = {k: await store.indexes.everything(k) for k in kinds}
            assert before["cool-due"], "expected some hot leads"
            index_keys = [
                k.decode()
                async for k in client.scan_iter(match=f"{key_prefix}*")
                if k.decode().startswith((store.keys.rank_base, store.keys.cool_due_base))
            ]
            await client.delete(*index_keys)
            result = await store.apply_batch(items)
            assert result.applied == 0
            after = {k: await store.indexes.everything(k) for k in kinds}
            assert after == before
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_outbox_holds_crossings_until_delivered(
    new_store_client: NewClient, key_prefix: str
) -> None:
    items = items_for(generate_event_log(9, 2_000, 40))

    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, DEFAULT_RULES, key_prefix)
            result = await store.apply_batch(items)
            assert result.crossings
            pending = await store.undelivered(limit=10_000)
            assert sorted(c.event_id for c in pending) == sorted(
                c.event_id for c in result.crossings
            )
            assert pending == sorted(pending, key=lambda c: (c.occurred_at_ms, c.lead_id))
            await store.mark_delivered(result.crossings)
            assert await store.undelivered() == []
            for index, _ in await store.nodes.outbox_leads(10_000):
                raise AssertionError(f"{index} still lists leads")
        finally:
            await client.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("lead_id", ["plain", "with{brace}", "}starts", "{", "a{}b", "ünï"])
def test_all_keys_of_a_lead_share_one_cluster_slot(lead_id: str) -> None:
    store = RedisStore(Redis(), DEFAULT_RULES, "p:")
    keys = store.keys.lead(lead_id)
    slots = {key_slot(k.encode()) for k in (keys.state, keys.outbox)}
    assert len(slots) == 1


def test_rank_index_rebases_and_top_stays_exact(
    new_store_client: NewClient, key_prefix: str
) -> None:
    """Two half-lives, one rank index: top-N is exact; and with a 1 h longest half-life
    over 40 days (~960 half-lives) the rank landmark must be re-based (it would overflow
    past ~1000) and top-N must stay exact."""
    rules = build_ruleset(
        {
            "version": "fast-1",
            "half_life": "1h",
            "thresholds": {"hot": 30, "cool": 10},
            "rules": [
                {"id": "pv", "event": "page_view", "points": 5},
                {"id": "form", "event": "form_submit", "points": 30, "half_life": "30m"},
            ],
        }
    )
    items = items_for(generate_event_log(21, 4_000, 100, span_ms=40 * DAY_MS))

    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, rules, key_prefix)
            memory = MemoryStore(rules)
            await apply_both(store, memory, items, 500)
            landmark = int(await client.hget(store.keys.meta, "landmark"))
            first = min(e.occurred_at_ms for e, _ in items)
            assert landmark > first, "the rank landmark should have moved forward"
            last = max(e.occurred_at_ms for e, _ in items)
            for n in (1, 5, 20):
                got = await store.top(n, last)
                want = memory.top_sync(n, last)
                assert [lead for lead, _ in got] == [lead for lead, _ in want]
            scores = await store.indexes.everything("rank")
            assert scores and all(math.isfinite(s) for s in scores.values())
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_top_stays_exact_when_adjustments_fade_slowest(
    new_store_client: NewClient, key_prefix: str
) -> None:
    """The rank bounds use the engine's longest half-life, the adjustment rule's included
    (here `none`): a lead held up by an old adjustment is found."""
    rules = build_ruleset(
        {
            "version": "adj-1",
            "half_life": "1d",
            "adjustments": {"half_life": "none"},
            "thresholds": {"hot": 1e9, "cool": 1e8},
            "rules": [{"id": "pv", "event": "page_view", "points": 100}],
        }
    )
    t0 = 1_893_456_000_000
    events = [
        {
            "event_id": f"e{i}",
            "type": "page_view",
            "lead_id": f"old-{i:03d}",
            "occurred_at": "2030-01-01T00:00:00Z",
            "url": "https://x.example/",
        }
        for i in range(100)
    ]
    events.append(
        {
            "event_id": "a1",
            "type": "score_adjusted",
            "lead_id": "adjusted",
            "occurred_at": "2030-01-01T00:00:00Z",
            "points": 90,
            "reason": "r",
            "author": "a",
        }
    )
    items = items_for(events)

    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, rules, key_prefix)
            memory = MemoryStore(rules)
            await apply_both(store, memory, items, 500)
            at = t0 + 3 * DAY_MS
            assert [lead for lead, _ in await store.top(1, at)] == ["adjusted"]
            assert [lead for lead, _ in memory.top_sync(1, at)] == ["adjusted"]
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_tombstone_is_written_only_with_its_leads_delete(
    new_store_client: NewClient, key_prefix: str
) -> None:
    """An erasure's tombstone shares its lead's Cluster slot and is written in the same
    script as the lead key's delete (AFTER_PREVIOUS), not at all when that
    compare-and-set lost."""
    view = {
        "event_id": "v1",
        "type": "page_view",
        "lead_id": "ada-lovelace-1815",
        "occurred_at": "2030-01-01T00:00:00Z",
        "url": "https://x.example/",
    }
    erase = {
        "event_id": "era-1",
        "type": "lead_erased",
        "lead_id": "ada-lovelace-1815",
        "occurred_at": "2030-01-01T01:00:00Z",
        "reason": "r",
        "author": "a",
    }

    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, DEFAULT_RULES, key_prefix)
            await store.apply_batch(items_for([view]))
            ada = "ada-lovelace-1815"
            lead, tomb = store.keys.lead(ada), store.keys.tombstone(ada)
            assert key_slot(lead.state.encode()) == key_slot(tomb.state.encode())
            assert "ada-lovelace" not in tomb.state
            stale = [
                LeadWrite(lead, b"\x09\x00\x00\x00", b"", ()),
                LeadWrite(tomb, AFTER_PREVIOUS, b"\x02tombstone", ()),
            ]
            assert set(await store.nodes.save(stale, {}, 0)) == {ada}
            assert await client.exists(lead.state) and not await client.exists(tomb.state)

            result = await store.apply_batch(items_for([view, erase])[1:])
            assert [c.kind for c in result.crossings] == ["lead_erased"]
            assert not await client.exists(lead.state) and await client.exists(tomb.state)
            assert await store.get(ada) is None
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_one_redis_writes_the_indexes_in_the_save_call_only_if_every_lead_won(
    redis_url: str, key_prefix: str
) -> None:
    """SAVE_LEADS_AND_INDEXES_SCRIPT: the index write runs in the save's call when every
    compare-and-set won, not at all when one lost (that lead's stored state is another
    writer's), when the landmark it was computed against moved, or when a lead indexed
    without a write of its own is no longer at the version it was read at."""
    view = {
        "event_id": "v1",
        "type": "form_submit",
        "lead_id": "grace-hopper-1906",
        "occurred_at": "2030-01-01T00:00:00Z",
        "form_id": "demo",
    }

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            store = RedisStore(client, DEFAULT_RULES, key_prefix)
            await store.apply_batch(items_for([view]))
            grace = "grace-hopper-1906"
            state = await store.get(grace)
            assert state is not None
            landmark, rank, cool_due = await store.rank.entries([state])
            assert rank[0], "a lead with points has a rank entry"
            moved: tuple[dict[str, int], list[str]] = ({grace: rank[0][grace] + 1000}, [])
            raw = await client.get(store.keys.lead(grace).state)
            assert isinstance(raw, bytes)
            stored = raw[VERSION_SLICE]
            nodes = store.nodes
            assert isinstance(nodes, StandaloneNodes)

            async def call(
                expected: bytes, check: int, unchanged: Sequence[tuple[str, bytes]] = ()
            ) -> tuple[list[str], bool]:
                write = LeadWrite(store.keys.lead(grace), expected, raw, ())
                index = store.indexes.arguments(check, moved, cool_due)
                return await nodes.save_and_index([write], {}, 0, index, unchanged)

            before = await store.indexes.everything("rank")
            assert await call(b"\x09\x00\x00\x00", landmark) == ([grace], False)
            assert await store.indexes.everything("rank") == before  # a lead lost
            assert await call(stored, landmark + 1) == ([], False)
            assert await store.indexes.everything("rank") == before  # the landmark moved
            other = store.keys.lead("not-stored").state  # (read as not stored: b"")
            assert await call(stored, landmark, [(other, b"\x01\x00\x00\x00")]) == ([], False)
            assert await store.indexes.everything("rank") == before  # unchanged lead moved
            assert await call(stored, landmark, [(other, b"")]) == ([], True)
            assert (await store.indexes.everything("rank"))[grace] == moved[0][grace]
        finally:
            await client.aclose()

    asyncio.run(scenario())


class _SaveThenIndex(StandaloneNodes):
    """One Redis writing a batch's indexes after its save, as it does when a lead of the
    batch lost a race (and a cluster always does)."""

    async def save_and_index(
        self,
        writes: Sequence[LeadWrite],
        marks: Mapping[str, tuple[int, int]],
        ttl_ms: int | str,
        index: tuple[Sequence[str], Sequence[Any]] | None,
        unchanged: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[list[str], bool]:
        return await super().save_and_index(writes, marks, ttl_ms, None)


@contextlib.asynccontextmanager
async def two_stores(
    new_store_client: NewClient, key_prefix: str
) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one key prefix, each on a client of its own (two workers)."""
    clients = [new_store_client(), new_store_client()]
    try:
        yield (
            RedisStore(clients[0], DEFAULT_RULES, key_prefix),
            RedisStore(clients[1], DEFAULT_RULES, key_prefix),
        )
    finally:
        for client in clients:
            await client.aclose()


def hold(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str
) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the coroutine method ``owner.name`` wait, when called, until released (a
    writer paused between two steps while another writer goes ahead): returns (called,
    release)."""
    called, release = asyncio.Event(), asyncio.Event()
    real = getattr(owner, name)

    async def held(*args: Any) -> Any:
        called.set()
        await release.wait()
        return await real(*args)

    monkeypatch.setattr(owner, name, held)
    return called, release


def save_then_index(store: RedisStore) -> None:
    """On one Redis, write the store's indexes after its saves (as after a lost race);
    a cluster always does."""
    if isinstance(store.nodes, StandaloneNodes):
        store.nodes = _SaveThenIndex(store.client, store.keys)


def test_an_index_write_that_lands_after_a_later_save_is_settled(
    new_store_client: NewClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers of one lead (a zombie after a rebalance): A saves the lead, B saves it
    again and indexes it, and only then does A's index write land. A reads the version
    back, finds the lead moved on, and indexes it again from what is stored: the entries
    are the final state's, not A's (a rank bound too low would hide the lead from `top`;
    a stale cooling entry would delay its lead_cooled)."""
    lead = "ada-lovelace-1815"
    first = event_dict("form_submit", lead, BASE_MS, "late-1", form_id="demo")
    second = event_dict("form_submit", lead, BASE_MS + HOUR_MS, "late-2", form_id="demo")

    async def scenario() -> None:
        async with two_stores(new_store_client, key_prefix) as (a, b):
            save_then_index(a)
            saved, release = hold(monkeypatch, a.indexes, "write")
            task = asyncio.create_task(a.apply_batch([(event_from_dict(first), None)]))
            await asyncio.wait_for(saved.wait(), 30)
            assert (await b.apply_batch([(event_from_dict(second), None)])).applied == 1
            before = await b.indexes.everything("rank")
            release.set()
            assert (await task).applied == 1
            state = await b.get(lead)
            assert state is not None and state.events_applied == 2
            await assert_indexes_match_states(b, [lead])
            assert await b.indexes.everything("rank") == before

    asyncio.run(scenario())


@pytest.mark.parametrize("reader", ["top", "sweep"])
def test_a_lead_that_returns_while_its_entry_is_dropped_stays_indexed(
    new_store_client: NewClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    """``top`` and the cooling sweep drop the entries of leads they find without a state
    (idle-lead retention). If the lead returns between that read and the removal (its new
    state written and indexed), the removal must not leave it out of the index: the
    reader settles the leads it dropped, and indexes a returning lead again."""
    lead = "alan-turing-1912"

    def demos(at_ms: int, name: str) -> list[EventItem]:  # 2 x 50 points: hot
        return [
            (
                event_from_dict(
                    event_dict("form_submit", lead, at_ms + i, f"{name}-{i}", form_id="demo")
                ),
                None,
            )
            for i in range(2)
        ]

    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, DEFAULT_RULES, key_prefix)
            await store.apply_batch(demos(BASE_MS, "first"))
            state = await store.get(lead)
            assert state is not None and state.hot
            await client.delete(store.keys.lead(lead).state)  # as retention expires it
            remove = store.indexes.remove

            async def returning_lead_first(*args: Any, **kwargs: Any) -> None:
                await store.apply_batch(demos(BASE_MS + 40 * DAY_MS, "back"))
                await remove(*args, **kwargs)

            monkeypatch.setattr(store.indexes, "remove", returning_lead_first)
            if reader == "top":
                await store.top(5, BASE_MS + DAY_MS)
            else:  # (its cooling entry was due after ~14 days)
                assert (await store.cool_due(BASE_MS + 30 * DAY_MS)).crossings == ()
            returned = await store.get(lead)
            assert returned is not None and returned.hot and returned.events_applied == 2
            await assert_indexes_match_states(store, [lead])
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_lead_indexed_unchanged_from_an_old_read_is_settled(
    new_store_client: NewClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zombie re-applies a batch whose events a lead already has (nothing to write for
    it, but its index entries are refreshed), from a read taken before another writer
    saved and indexed the lead. Its entries must not replace the newer ones: on one Redis
    the save's script checks that the lead is still at the version read (else the
    indexes go the separate way, then settle), on a cluster the settle does it."""
    lead = "edsger-dijkstra-1930"
    first = event_dict("form_submit", lead, BASE_MS, "old-1", form_id="demo")
    second = event_dict("form_submit", lead, BASE_MS + HOUR_MS, "new-1", form_id="demo")

    async def scenario() -> None:
        async with two_stores(new_store_client, key_prefix) as (zombie, owner):
            await owner.apply_batch([(event_from_dict(first), None)])
            loaded, release = hold(monkeypatch, zombie.nodes, "save_and_index")
            redelivered = asyncio.create_task(zombie.apply_batch([(event_from_dict(first), None)]))
            await asyncio.wait_for(loaded.wait(), 30)
            assert (await owner.apply_batch([(event_from_dict(second), None)])).applied == 1
            release.set()
            assert (await redelivered).duplicates == 1
            await assert_indexes_match_states(owner, [lead])

    asyncio.run(scenario())


def test_versions_go_on_through_an_erasure(
    new_store_client: NewClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erased lead's next state does not start its versions again: a late index write
    from before the erasure (version 1) must not find the new state at version 1 too and
    take it for its own."""
    lead = "barbara-liskov-1939"
    first = event_dict("form_submit", lead, BASE_MS, "before-1", form_id="demo")
    erase = event_dict("lead_erased", lead, BASE_MS + HOUR_MS, "erase-1")
    again = event_dict("form_submit", lead, BASE_MS + 2 * HOUR_MS, "after-1", form_id="demo")

    async def scenario() -> None:
        async with two_stores(new_store_client, key_prefix) as (late, other):
            save_then_index(late)
            saved, release = hold(monkeypatch, late.indexes, "write")
            task = asyncio.create_task(late.apply_batch([(event_from_dict(first), None)]))
            await asyncio.wait_for(saved.wait(), 30)
            for data in (erase, again):
                assert (await other.apply_batch([(event_from_dict(data), None)])).applied == 1
            raw = await other.client.get(other.keys.lead(lead).state)
            assert raw is not None and raw[VERSION_SLICE] == (3).to_bytes(4, "little")
            release.set()
            await task
            await assert_indexes_match_states(other, [lead])

    asyncio.run(scenario())


def test_a_lead_without_a_state_is_written_only_over_the_tombstone_it_read(
    new_store_client: NewClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erased lead is absent again after each erasure: a writer that read it absent
    (over tombstone v2) must not win over a lead since re-created and erased again
    (tombstone v4), as if nothing had happened: its compare-and-set also checks the
    tombstone, loses, and applies its event again over the newer tombstone (v5)."""
    lead = "frances-allen-1932"

    def item(kind: str, hours: int, name: str, **fields: Any) -> list[EventItem]:
        return [
            (
                event_from_dict(event_dict(kind, lead, BASE_MS + hours * HOUR_MS, name, **fields)),
                None,
            )
        ]

    async def scenario() -> None:
        async with two_stores(new_store_client, key_prefix) as (slow, other):
            await other.apply_batch(item("form_submit", 0, "a-1", form_id="demo"))
            await other.apply_batch(item("lead_erased", 1, "erase-1"))
            loaded, release = hold(monkeypatch, slow.nodes, "save_and_index")
            task = asyncio.create_task(slow.apply_batch(item("download", 5, "slow-1")))
            await asyncio.wait_for(loaded.wait(), 30)
            await other.apply_batch(item("form_submit", 2, "b-1", form_id="demo"))
            await other.apply_batch(item("lead_erased", 3, "erase-2"))
            release.set()
            assert (await task).applied == 1
            raw = await other.client.get(other.keys.lead(lead).state)
            assert raw is not None and raw[VERSION_SLICE] == (5).to_bytes(4, "little")
            state = await other.get(lead)
            assert state is not None and state.events_applied == 1
            await assert_indexes_match_states(other, [lead])

    asyncio.run(scenario())
