"""Identity merges in the Redis store, standalone and Redis Cluster: a link retires its
lead (tombstone, ``lead_merged`` and ``lead_absorbed`` in the outbox, the lead key gone),
the absorb merges at the canonical lead once (a repeat changes nothing), a retired lead's
late events are forwarded, and the alias table is first-wins and follows chains."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.crc import key_slot

from schemas.events import EVENT_ADAPTER
from scoring.crossings import ABSORBED
from scoring.state import Position
from scoring.state_machine import is_tombstone
from scoring.store import EventItem, MemoryStore
from streams.live.identity_stage import IdentityStage
from streams.live.interfaces import RawMessage
from streams.live.redis_store import RedisStore
from tests.integration.conftest import NewClient
from tests.strategies import event_from_dict, rules_from

pytestmark = pytest.mark.integration

RULES = rules_from(
    [{"id": "pv", "event": "page_view", "points": 20}], hot=50, cool=30, half_life="30d"
)
T = "2030-01-01T00:0{}:00Z"


def view(lead: str, minute: int, event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "page_view",
        "lead_id": lead,
        "occurred_at": T.format(minute),
        "url": "https://x.example/",
    }


def linked(lead: str, into: str, minute: int, event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "lead_linked",
        "lead_id": lead,
        "occurred_at": T.format(minute),
        "canonical_id": into,
    }


def at(data: dict[str, Any], stream: str, offset: int) -> EventItem:
    return (event_from_dict(data), Position(stream, offset))


def test_link_retires_absorb_merges_and_late_events_are_forwarded(
    new_store_client: NewClient, key_prefix: str
) -> None:
    link = linked("anon", "known", 3, "id-1>anon")

    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, RULES, key_prefix, identity_merges=True)
            memory = MemoryStore(RULES, routed=True)
            first = [at(view("anon", m, f"v{m}"), "id:0", m) for m in range(2)]
            first.append(at(view("known", 2, "k1"), "id:1", 0))
            await store.apply_batch(first)
            memory.apply_batch_sync(first)
            assert await store.aliases.write({"anon": "known"}) == ({"anon": "known"}, {})
            assert await store.aliases.write({"anon": "other"}) == ({}, {"anon": "known"})

            retired = await store.apply_batch([at(link, "id:0", 2)])
            kinds = sorted(c.kind for c in retired.crossings)
            assert kinds == ["lead_absorbed", "lead_merged"]
            assert await store.get("anon") is None  # the lead key is gone
            stone = store.keys.tombstone("anon")
            assert await client.exists(stone.state)
            assert key_slot(store.keys.alias("anon").state.encode()) == key_slot(
                stone.state.encode()
            )
            assert sorted(c.kind for c in await store.undelivered()) == kinds
            memory.apply_batch_sync([at(link, "id:0", 2)])

            absorb = next(c for c in retired.crossings if c.kind == ABSORBED)
            event = EVENT_ADAPTER.validate_python(absorb.absorbed_event())
            for _ in range(2):  # the second time: a redelivered absorb changes nothing
                merged = await store.apply_batch([(event, Position("id:1", 1))])
                memory.apply_batch_sync([(event, Position("id:1", 1))])
            assert merged.duplicates == 1
            known = await store.get("known")
            assert known is not None and known.hot and known.events_applied == 4

            late = at(view("anon", 4, "v-late"), "id:0", 3)
            result = await store.apply_batch([late])
            assert result.forwarded == ((late, "known"),) and result.applied == 0
            state = memory.states["anon"]
            assert is_tombstone(state)
            assert known.events_applied == memory.states["known"].events_applied
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_aliases_resolve_chains(new_store_client: NewClient, key_prefix: str) -> None:
    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, RULES, key_prefix, identity_merges=True)
            assert await store.aliases.write({"a": "b", "b": "c"}) == ({"a": "b", "b": "c"}, {})
            assert await store.aliases.resolve({"a", "x"}) == {"a": "b", "b": "c"}
            # first wins, and the writes stop at the first that lost (they were planned
            # on it: an alias written after it could merge two known leads)
            assert await store.aliases.write({"a": "z", "y": "z"}) == ({}, {"a": "b"})
            assert await store.aliases.resolve({"y"}) == {}
            # a cycle (two workers linking A into B and B into A at once) is broken the
            # same way by everyone: the smallest id keeps no alias
            await store.aliases.write({"p": "q"})
            await client.set(store.keys.alias("q").state, "p")
            stage = IdentityStage(store.aliases)
            assert await stage.targets({"q"}) == {"q": "p"}
            assert await store.aliases.resolve({"p", "q"}) == {"q": "p"}
            # an alias that joins nothing (the two ids are one lead already) sends nothing
            again = event_from_dict(linked("p", "q", 1, "al-2"))
            message = RawMessage("in", 0, 0, b"q", b"{}")
            routing = await stage.route([(again, message)])
            assert (routing.records, routing.links) == ([], 0)
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_retire_forwards_what_follows_and_a_redelivery_is_no_double(
    new_store_client: NewClient, key_prefix: str
) -> None:
    """Events after the link in one batch go to the canonical lead (not onto the
    tombstone); redelivered, the batch's events before the link (absorbed with the lead)
    are duplicates, not forwarded again; a lead with an alias but no state yet (the link
    not applied) applies its events, so that the link retires it with them."""
    link = linked("anon", "known", 3, "i>anon")

    async def scenario() -> None:
        client = new_store_client()
        try:
            store = RedisStore(client, RULES, key_prefix, identity_merges=True)
            await store.aliases.write({"anon": "known"})  # (step 1 writes it first)
            batch = [
                at(view("anon", 1, "v1"), "id:0", 0),
                at(link, "id:0", 1),
                at(view("anon", 4, "v2"), "id:0", 2),
            ]
            first = await store.apply_batch(batch)
            assert sorted(c.kind for c in first.crossings) == ["lead_absorbed", "lead_merged"]
            assert [(item[0].event_id, into) for item, into in first.forwarded] == [("v2", "known")]
            state = await store.get_many(["anon"])
            assert state == {}  # retired: only its tombstone is left
            again = await store.apply_batch(batch)  # a crash before the commit
            assert again.crossings == () and again.applied == 0
            assert again.duplicates == 1  # v1: absorbed with the lead
            assert [item[0].event_id for item, _ in again.forwarded] == ["v2"]
        finally:
            await client.aclose()

    asyncio.run(scenario())
