"""Control events (``score_adjusted``, ``score_reset``, ``lead_erased``): what they do to a
lead in the engine, how the rules file sets adjustments' half-life, how they are validated,
and how a reset floor is stored. The worker's side (control topic only) is in
tests/integration/test_control_topic.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.events import LeadEvent
from schemas.times import ms_to_datetime
from schemas.validation import Rejected, not_control, parse_control_event, parse_event
from scoring.calibrate import build_samples
from scoring.crossings import Crossing
from scoring.rules import ADJUSTMENT_RULE_ID, NO_DECAY_HALF_LIFE_MS, RuleSet
from scoring.rules_file import RulesError
from scoring.state import LeadState, Position
from scoring.state_machine import apply_lead_events, explain, is_tombstone, score_at
from scoring.store import MemoryStore
from streams.live.state_format import Names, decode_state, encode_state
from tests.strategies import (
    BASE_MS,
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    event_dict,
    form_submit,
    make_event,
    page_view,
    rules_from,
)

T0 = BASE_MS
RULES = rules_from(
    [
        {"id": "pv", "event": "page_view", "points": 10},
        {"id": "demo", "event": "form_submit", "points": 80},
    ],
    hot=70,
    cool=50,
    half_life="1h",
    adjustments={"half_life": "2h"},
)


def adjusted(points: float, at_ms: int, lead_id: str = "lead-1", **kw: Any) -> LeadEvent:
    return make_event("score_adjusted", lead_id, at_ms, points=points, **kw)


def reset(at_ms: int, lead_id: str = "lead-1", **kw: Any) -> LeadEvent:
    return make_event("score_reset", lead_id, at_ms, **kw)


def run(events: list[LeadEvent], rules: RuleSet = RULES) -> tuple[MemoryStore, list[Crossing]]:
    store = MemoryStore(rules)
    result = store.apply_batch_sync([(e, None) for e in events])
    return store, list(result.crossings)


# --------------------------------------------------------------------------- adjust


def test_an_adjustment_adds_its_points_and_fades_with_its_half_life() -> None:
    store, _ = run([adjusted(40, T0)])
    state = store.states["lead-1"]
    assert score_at(state, RULES, T0) == pytest.approx(40)
    assert score_at(state, RULES, T0 + 2 * HOUR_MS) == pytest.approx(20)
    [part] = explain(state, RULES, T0)
    assert part.rule_id == ADJUSTMENT_RULE_ID


def test_a_negative_adjustment_removes_points_and_can_cool_a_hot_lead() -> None:
    store, crossings = run([form_submit(at_ms=T0), adjusted(-60, T0 + MINUTE_MS)])
    assert [c.kind for c in crossings] == ["lead_became_hot", "lead_cooled"]
    assert crossings[1].trigger_event_id is not None
    assert not store.states["lead-1"].hot


def test_an_adjustment_can_make_a_lead_hot() -> None:
    _, crossings = run([page_view(at_ms=T0), adjusted(65, T0 + MINUTE_MS, event_id="adj-1")])
    [hot] = crossings
    assert hot.kind == "lead_became_hot"
    assert hot.trigger_event_id == "adj-1"
    assert ADJUSTMENT_RULE_ID in [r.rule_id for r in hot.reasons]


def test_adjustments_fade_like_the_file_by_default_or_not_at_all() -> None:
    base = [{"id": "pv", "event": "page_view", "points": 10}]
    assert rules_from(base, half_life="3h").by_id[ADJUSTMENT_RULE_ID].half_life_ms == 3 * HOUR_MS
    kept = rules_from(base, adjustments={"half_life": "none"})
    assert kept.by_id[ADJUSTMENT_RULE_ID].half_life_ms == NO_DECAY_HALF_LIFE_MS
    store, _ = run([adjusted(50, T0)], kept)
    year = 365 * DAY_MS
    assert score_at(store.states["lead-1"], kept, T0 + year) == pytest.approx(50, rel=1e-4)
    # The file's own rules are untouched: the adjustment rule is the engine's only.
    assert [r.id for r in kept.rules] == ["pv"]


def test_rules_cannot_score_control_events_or_take_the_reserved_id() -> None:
    with pytest.raises(RulesError, match="score_reset is a control event"):
        rules_from([{"id": "r", "event": "score_reset", "points": 5}])
    with pytest.raises(RulesError, match="reserved"):
        rules_from([{"id": ADJUSTMENT_RULE_ID, "event": "page_view", "points": 5}])
    with pytest.raises(RulesError, match="adjustments"):
        rules_from([{"id": "r", "event": "page_view", "points": 5}], adjustments={"half_life": "x"})


# --------------------------------------------------------------------------- reset


def test_a_reset_zeroes_the_score_and_cools_a_hot_lead_at_its_time() -> None:
    store, crossings = run([form_submit(at_ms=T0), reset(T0 + MINUTE_MS, event_id="rst-1")])
    state = store.states["lead-1"]
    assert score_at(state, RULES, T0 + MINUTE_MS) == 0
    assert not state.hot
    assert state.floor_ms == T0 + MINUTE_MS
    cooled = crossings[-1]
    assert cooled.kind == "lead_cooled"
    assert cooled.occurred_at_ms == T0 + MINUTE_MS
    assert cooled.trigger_event_id == "rst-1"


def test_events_dated_before_a_reset_never_count_even_arriving_later() -> None:
    late = page_view(at_ms=T0 + MINUTE_MS)
    store, _ = run([page_view(at_ms=T0), reset(T0 + 2 * MINUTE_MS), late])
    state = store.states["lead-1"]
    assert score_at(state, RULES, T0 + 3 * MINUTE_MS) == 0
    after = page_view(at_ms=T0 + 3 * MINUTE_MS)
    store.apply_batch_sync([(after, None)])
    assert score_at(store.states["lead-1"], RULES, T0 + 3 * MINUTE_MS) == pytest.approx(10)


def test_a_reset_keeps_the_profile() -> None:
    profile = make_event("lead_profile", "lead-1", T0, company="Acme GmbH")
    store, _ = run([profile, page_view(at_ms=T0), reset(T0 + MINUTE_MS)])
    assert store.states["lead-1"].profile["company"][2] == "Acme GmbH"


def test_a_reset_of_an_unknown_lead_still_guards_its_past() -> None:
    store, crossings = run([reset(T0 + DAY_MS), page_view(at_ms=T0)])
    assert crossings == []
    assert score_at(store.states["lead-1"], RULES, T0 + DAY_MS) == 0


def test_a_redelivered_reset_changes_nothing() -> None:
    at = Position("control:0", 7)
    state = None
    for _ in range(2):
        result = apply_lead_events(state, [(page_view(at_ms=T0 + 2 * MINUTE_MS), None)], RULES)
        state = result.state
        result = apply_lead_events(state, [(reset(T0 + MINUTE_MS, event_id="r"), at)], RULES)
        state = result.state
    assert state is not None
    # The second page view (a new event id, dated after the reset) counts; the reset and
    # the first view do not come back.
    assert score_at(state, RULES, T0 + 2 * MINUTE_MS) == pytest.approx(10)


def test_a_reset_drops_sums_of_rules_no_longer_in_the_file() -> None:
    state = LeadState("lead-1", T0, T0, {"retired": 5.0, "pv": 10.0})
    result = apply_lead_events(state, [(reset(T0 + MINUTE_MS), None)], RULES)
    assert result.state is not None
    assert dict(result.state.sums) == {}


# --------------------------------------------------------------------------- erase


def erased(at_ms: int, lead_id: str = "lead-1", **kw: Any) -> LeadEvent:
    return make_event("lead_erased", lead_id, at_ms, **kw)


def test_an_erasure_leaves_a_tombstone_with_nothing_personal() -> None:
    profile = make_event("lead_profile", "lead-1", T0, email="ada@acme.example", company="Acme")
    at = Position("events:0", 3)
    state = apply_lead_events(
        None, [(profile, at), (page_view(at_ms=T0 + 1), Position("events:0", 4))], RULES
    ).state
    result = apply_lead_events(
        state, [(erased(T0 + MINUTE_MS, event_id="era-1"), Position("control:1", 9))], RULES
    )
    tomb = result.state
    assert tomb is not None and is_tombstone(tomb)
    assert (dict(tomb.sums), dict(tomb.profile), tomb.hot) == ({}, {}, False)
    assert tomb.floor_ms == T0 + MINUTE_MS
    assert dict(tomb.positions) == {"events:0": 4, "control:1": 9}
    assert len(tomb.recent_ids) == 16  # the erasure's own id only
    [record] = result.crossings
    assert (record.kind, record.trigger_event_id, record.lead_id) == (
        "lead_erased",
        "era-1",
        "lead-1",
    )
    out = record.to_record(ms_to_datetime(T0))
    assert out.type == "lead_erased" and out.trigger_event_id == "era-1"


def test_erasing_a_hot_lead_cools_it_first() -> None:
    store, crossings = run([form_submit(at_ms=T0), erased(T0 + MINUTE_MS, event_id="era-1")])
    assert [c.kind for c in crossings] == ["lead_became_hot", "lead_cooled", "lead_erased"]
    assert crossings[1].score == 0 and crossings[1].trigger_event_id == "era-1"
    assert len({c.event_id for c in crossings}) == 3
    assert not store.states["lead-1"].hot


def test_after_an_erasure_old_events_change_nothing_and_new_ones_start_afresh() -> None:
    old = [page_view(at_ms=T0, event_id="v1"), form_submit(at_ms=T0 + 1, event_id="f1")]
    store, _ = run([*old, erased(T0 + MINUTE_MS)])
    store.apply_batch_sync([(e, None) for e in old])  # re-delivered (new offsets, same ids)
    assert is_tombstone(store.states["lead-1"])
    new = page_view(at_ms=T0 + 2 * MINUTE_MS, event_id="v2")
    profile = make_event("lead_profile", "lead-1", T0 + 2 * MINUTE_MS, country="DE")
    store.apply_batch_sync([(new, None), (profile, None)])
    fresh = store.states["lead-1"]
    assert score_at(fresh, RULES, T0 + 2 * MINUTE_MS) == pytest.approx(10)
    assert set(fresh.profile) == {"country"}
    assert fresh.events_applied == 2


def test_an_erasure_in_the_middle_of_a_batch_forgets_what_came_before_it() -> None:
    before = make_event("lead_profile", "lead-1", T0, email="ada@acme.example")
    after = make_event("lead_profile", "lead-1", T0 + 2 * MINUTE_MS, company="Acme")
    result = apply_lead_events(
        None,
        [(before, None), (erased(T0 + MINUTE_MS), None), (after, None)],
        RULES,
    )
    assert result.state is not None
    assert set(result.state.profile) == {"company"}


# --------------------------------------------------------------------------- stored


def test_a_reset_floor_round_trips_through_the_state_format() -> None:
    store, _ = run([page_view(at_ms=T0), reset(T0 + MINUTE_MS), adjusted(5, T0 + HOUR_MS)])
    state = store.states["lead-1"]
    names = Names()
    names.update({name: i + 1 for i, name in enumerate(sorted(names.missing(state)))})
    assert decode_state(encode_state(state, 3, names), "lead-1", names) == state
    plain = LeadState("lead-2", T0, T0, {"pv": 1.0})
    names.update({"rule:pv": 99} if "rule:pv" not in names.numbers else {})
    assert decode_state(encode_state(plain, 1, names), "lead-2", names).floor_ms is None


# --------------------------------------------------------------------------- validation


def message(event_type: str, **fields: Any) -> bytes:
    return json.dumps(event_dict(event_type, **fields)).encode()


def test_control_events_validate_points_reason_and_author() -> None:
    ok = parse_control_event(message("score_adjusted", points=-12.5))
    assert not isinstance(ok, Rejected) and ok.type == "score_adjusted"
    for fields, field in (
        ({"points": 0}, "points"),
        ({"points": 2e6}, "points"),
        ({"points": "10"}, "points"),
        ({"reason": ""}, "reason"),
        ({"author": None}, "author"),
    ):
        bad = parse_control_event(message("score_adjusted", **fields))
        assert isinstance(bad, Rejected), fields
        assert bad.error.startswith(field), bad.error


def test_the_control_topic_takes_control_events_only() -> None:
    bad = parse_control_event(message("page_view"))
    assert isinstance(bad, Rejected)
    assert bad.error.startswith("type: the control topic takes control events only")


def test_input_topics_refuse_control_events_naming_the_control_topic() -> None:
    event = parse_event(message("score_reset"))
    assert not isinstance(event, Rejected)
    refused = not_control(event, "lead-control")
    assert refused is not None
    assert refused.error.startswith("type: score_reset is a control event")
    assert "lead-control" in refused.error
    assert not_control(page_view(), "lead-control") is None


def test_a_track_event_cannot_take_a_control_type_name() -> None:
    bad = parse_event(message("track", event="score_reset"))
    assert isinstance(bad, Rejected)
    assert bad.error.startswith("event:")


def test_an_erasure_refuses_every_event_it_wiped_even_those_dated_after_it() -> None:
    """A client clock ahead, or `erase --at` in the past: events dated after the erasure
    but applied before it are wiped, and their ids forgotten; the floor is the lead's
    clock, so a re-send of them changes nothing."""
    ahead = form_submit(at_ms=T0 + 10 * MINUTE_MS, event_id="f1")
    store, _ = run([ahead, erased(T0)])
    tomb = store.states["lead-1"]
    assert is_tombstone(tomb) and tomb.floor_ms == T0 + 10 * MINUTE_MS
    result = store.apply_batch_sync([(ahead, None)])
    assert (result.applied, result.crossings) == (0, ())


def test_the_rank_index_bounds_with_the_adjustments_half_life_too() -> None:
    rule = {"id": "pv", "event": "page_view", "points": 1}
    kept = rules_from([rule], adjustments={"half_life": "none"})
    assert max(kept.half_lives_ms()) == NO_DECAY_HALF_LIFE_MS


def test_calibration_leaves_control_events_out() -> None:
    events = [page_view(at_ms=T0), adjusted(30, T0 + MINUTE_MS), erased(T0 + 2 * MINUTE_MS)]
    samples = build_samples(
        events, {"lead-1": [T0 + HOUR_MS]}, RULES, until_ms=T0 + DAY_MS, window_ms=HOUR_MS
    )
    assert samples.features.shape[1] == len(RULES.rules)
