"""Identity routing and merging (scoring.identity): an anonymous visitor's history joins
the known lead it identifies as; a shared device never merges two known leads; explicit
links join known leads and chains resolve; a repeated (redelivered) link changes nothing;
late events of a retired lead are forwarded."""

from __future__ import annotations

from typing import Any

from schemas.events import LeadEvent
from scoring.identity import LinkRecord, Routed, Router, apply_or_forward, route
from scoring.state import Position
from scoring.state_machine import is_tombstone, score_at
from scoring.store import MemoryStore
from tests.strategies import BASE_MS, MINUTE_MS, make_event, page_view, rules_from

T0 = BASE_MS
RULES = rules_from(
    [
        {"id": "pv", "event": "page_view", "points": 20},
        {"id": "demo", "event": "form_submit", "points": 30},
    ],
    hot=70,
    cool=50,
    half_life="30d",
)


def identify(user: str, anonymous: str | None, at_ms: int, event_id: str, **kw: Any) -> LeadEvent:
    fields = {"anonymous_id": anonymous} if anonymous else {}
    return make_event("lead_profile", user, at_ms, event_id, **fields, **kw)


def alias(previous: str, user: str, at_ms: int, event_id: str) -> LeadEvent:
    return make_event("lead_linked", previous, at_ms, event_id, canonical_id=user)


def replay(events: list[LeadEvent], batch: int = 1000) -> tuple[MemoryStore, list[Any]]:
    """Step 1 then step 2, in one process, as ``leadscore replay`` runs them."""
    router, store, records = Router(), MemoryStore(RULES), []
    for i in range(0, len(events), batch):
        routed = router.route(events[i : i + batch])
        records += store.apply_batch_sync([(e, None) for e in routed]).crossings
    return store, records


def test_the_anonymous_history_counts_for_the_known_lead_and_makes_it_hot() -> None:
    events = [
        page_view("anon-1", T0, event_id="p1"),
        page_view("anon-1", T0 + MINUTE_MS, event_id="p2"),
        page_view("anon-1", T0 + 2 * MINUTE_MS, event_id="p3"),
        identify("u-1", "anon-1", T0 + 3 * MINUTE_MS, "id-1"),
        page_view("anon-1", T0 + 4 * MINUTE_MS, event_id="p4"),  # after: counts for u-1
    ]
    store, records = replay(events)
    kinds = [(r.kind, r.lead_id, r.trigger_event_id) for r in records]
    assert ("lead_merged", "anon-1", "id-1>anon-1") in kinds
    assert ("lead_became_hot", "u-1", "p4") in kinds
    assert is_tombstone(store.states["anon-1"])
    u1 = store.states["u-1"]
    assert u1.events_applied == 6  # three page views, the link, the profile, the fourth view
    assert round(score_at(u1, RULES, T0 + 4 * MINUTE_MS)) == 80


def test_batch_boundaries_do_not_change_the_result() -> None:
    events = [page_view("anon-1", T0 + i * MINUTE_MS, event_id=f"p{i}") for i in range(3)]
    events += [identify("u-1", "anon-1", T0 + 5 * MINUTE_MS, "id-1")]
    events += [page_view("anon-1", T0 + (6 + i) * MINUTE_MS, event_id=f"q{i}") for i in range(3)]
    results = {
        size: [(r.kind, r.lead_id, r.trigger_event_id) for r in replay(events, size)[1]]
        for size in (1, 2, 3, 100)
    }
    assert len(set(map(tuple, results.values()))) == 1, results


def test_a_shared_device_never_merges_two_known_leads() -> None:
    plan = route(
        [identify("u-1", "dev", T0, "a"), identify("u-2", "dev", T0 + 1, "b")],
        {},
    )
    assert plan.writes == {"dev": "u-1"}
    links = [r for r in plan.out if isinstance(r, LinkRecord)]
    assert [(r.absorbed, r.canonical) for r in links] == [("dev", "u-1")]
    # later anonymous events of the device go to the first known lead
    later = route([page_view("dev", T0 + 2, event_id="c")], plan.writes)
    assert [(r.lead_id) for r in later.out if isinstance(r, Routed)] == ["u-1"]


def test_an_explicit_link_joins_known_leads_and_chains_resolve() -> None:
    events = [
        page_view("a", T0, event_id="pa"),
        page_view("b", T0 + 1, event_id="pb"),
        page_view("c", T0 + 2, event_id="pc"),
        alias("a", "b", T0 + 3, "l1"),
        alias("b", "c", T0 + 4, "l2"),
        page_view("a", T0 + 5, event_id="pa2"),
    ]
    store, records = replay(events)
    merged = sorted((r.lead_id, r.merged_into) for r in records if r.kind == "lead_merged")
    assert merged == [("a", "b"), ("b", "c")]
    c = store.states["c"]
    assert c.events_applied == 6  # pa, pb, pc, pa2 and the two links
    assert round(score_at(c, RULES, T0 + 5)) == 80


def test_a_redelivered_link_changes_nothing() -> None:
    events = [page_view("anon", T0, event_id="p"), identify("u", "anon", T0 + 1, "i")]
    router, store = Router(), MemoryStore(RULES)
    first = store.apply_batch_sync([(e, None) for e in router.route(events)])
    again = store.apply_batch_sync([(e, None) for e in router.route(events[1:])])
    assert [c.kind for c in first.crossings] == ["lead_merged"]
    assert again.crossings == ()
    assert store.states["u"].events_applied == 3  # the view, the link, the profile


def test_late_events_of_a_retired_lead_are_forwarded() -> None:
    """Step 2 alone (the identity topic replayed): an event routed to the anonymous lead
    before the alias existed, applied after the link, counts for the known lead."""
    store = MemoryStore(RULES)
    link = make_event("lead_linked", "anon", T0 + 1, "i>anon", canonical_id="u")
    store.apply_batch_sync([(page_view("anon", T0, event_id="p1"), None), (link, None)])
    store.apply_batch_sync([(page_view("anon", T0 + 2, event_id="p2"), None)])
    assert store.states["u"].events_applied == 3  # p1 (merged), the link, p2 (forwarded)
    assert is_tombstone(store.states["anon"])


def test_an_erasure_forgets_every_id_that_led_to_the_person() -> None:
    erase = make_event("lead_erased", "anon-1", T0 + 3, "era", reason="r", author="a")
    events = [
        page_view("anon-1", T0, event_id="p1"),
        identify("u-1", "anon-1", T0 + 1, "i1"),
        alias("old-id", "u-1", T0 + 2, "l1"),
        erase,  # sent for the anonymous id: it erases the person it joined
        page_view("anon-1", T0 + 4, event_id="p2"),
    ]
    router, store = Router(), MemoryStore(RULES)
    routed = router.route(events)
    assert [e.lead_id for e in routed if e.type == "lead_erased"] == ["u-1"]
    assert routed[-1].lead_id == "anon-1"  # afterwards the id starts afresh
    assert router.aliases == {}
    records = store.apply_batch_sync([(e, None) for e in routed]).crossings
    assert [(r.kind, r.lead_id) for r in records] == [
        ("lead_merged", "anon-1"),
        ("lead_erased", "u-1"),
    ]
    assert store.states["anon-1"].events_applied == 1


def test_a_cycle_of_aliases_is_broken_the_same_way_by_everyone() -> None:
    """Two workers linking p into q and q into p at once (different keys, both first):
    the smallest id of the cycle keeps no alias."""
    plan = route([page_view("q", T0, event_id="e1")], {"p": "q", "q": "p"})
    assert plan.repairs == {"p": "q"}
    assert [r.lead_id for r in plan.out if isinstance(r, Routed)] == ["p"]


def test_a_retired_leads_redelivered_events_are_not_counted_twice() -> None:
    """Replayed from the identity topic (positions kept): the lead's events before its
    link, seen again, are duplicates at its tombstone, not forwarded."""
    store = MemoryStore(RULES)
    link = make_event("lead_linked", "anon", T0 + 2, "i>anon", canonical_id="u")
    first = [
        (page_view("anon", T0, event_id="p1"), Position("id:0", 0)),
        (link, Position("id:0", 1)),
    ]
    store.apply_batch_sync(first)
    again = store.apply_batch_sync(first)
    assert (again.applied, again.duplicates) == (0, 1)
    assert store.states["u"].events_applied == 2  # p1 and the link


def test_merging_into_an_already_hot_lead_adds_points_and_no_second_crossing() -> None:
    events = [
        page_view("anon-1", T0, event_id="a1"),
        page_view("anon-1", T0 + 1, event_id="a2"),
        *(page_view("u-1", T0 + 2 + i, event_id=f"u{i}") for i in range(4)),  # 80: hot
        identify("u-1", "anon-1", T0 + 10, "i1"),
    ]
    store, records = replay(events)
    assert [(r.kind, r.lead_id) for r in records] == [
        ("lead_became_hot", "u-1"),
        ("lead_merged", "anon-1"),
    ]
    u1 = store.states["u-1"]
    assert u1.hot and round(score_at(u1, RULES, T0 + 10)) == 120


def test_an_absorb_overtaken_by_an_erasure_stays_out() -> None:
    """Live, a ``lead_absorbed`` takes two hops: an erasure of the canonical lead may
    overtake it. The erasure wins: the absorbed history does not come back."""
    store = MemoryStore(RULES, routed=True)
    store.apply_batch_sync([(page_view("u", T0, event_id="p"), None)])
    erase = make_event("lead_erased", "u", T0 + 10, "era", reason="r", author="a")
    store.apply_batch_sync([(erase, None)])
    erased = store.states.get("u")
    assert erased is not None and erased.events_applied == 0
    late = make_event(
        "lead_absorbed",
        "u",
        T0 + 5,
        "abs-1",
        absorbed_id="anon",
        link_event_id="i>anon",
        state=page_view_state("anon"),
    )
    result = store.apply_batch_sync([(late, None)])
    assert result.duplicates == 1
    assert store.states["u"].events_applied == 0


def page_view_state(lead: str) -> dict[str, Any]:
    state = MemoryStore(RULES)
    state.apply_batch_sync([(page_view(lead, T0, event_id=f"{lead}-1"), None)])
    return {**state.states[lead].to_dict(), "positions": {}}


def test_an_erased_id_that_links_again_applies_its_events_until_the_link() -> None:
    """A tombstone (erased) with an alias is not retired until its link comes: its
    events apply as a fresh lead's, then the link retires it with them (live and replay
    agree)."""
    store = MemoryStore(RULES)
    erase = make_event("lead_erased", "anon", T0 + 1, "era", reason="r", author="a")
    store.apply_batch_sync([(page_view("anon", T0, event_id="p0"), None), (erase, None)])
    stone = store.states["anon"]
    batch, forward = apply_or_forward(
        stone, "u", [(page_view("anon", T0 + 2, event_id="p1"), Position("id:0", 5))], RULES
    )
    assert forward == [] and batch.state is not None and batch.state.events_applied == 1
    link = make_event("lead_linked", "anon", T0 + 3, "i>anon", canonical_id="u")
    retired, _ = apply_or_forward(batch.state, "u", [(link, Position("id:0", 6))], RULES)
    assert retired.state is not None and retired.state.retired
    assert [c.kind for c in retired.crossings] == ["lead_merged", "lead_absorbed"]
