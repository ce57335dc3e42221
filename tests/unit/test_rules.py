"""Rules files: parsing, every condition kind, fit grades, and every error message."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from schemas.events import rule_event_of
from schemas.times import format_duration_ms, parse_duration_ms
from scoring.profile import fit_grade
from scoring.rules import GRADES, Condition
from scoring.rules_file import RulesError, build_ruleset, default_rules_path, load_rules
from scoring.state_machine import score_at
from streams.cli import cli
from tests.strategies import (
    BASE_MS,
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    SECOND_MS,
    download,
    email_click,
    email_open,
    form_submit,
    lead_profile,
    make_event,
    page_view,
    rules_from,
    run_events,
    unsubscribe,
    webinar,
)


def _doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": "v1",
        "half_life": "14d",
        "thresholds": {"hot": 70, "cool": 50},
        "rules": [{"id": "pv", "event": "page_view", "points": 2}],
    }
    doc.update(overrides)
    return doc


def _rule(**rule: Any) -> Any:
    """Compile one behaviour rule and return it."""
    rule.setdefault("id", "r")
    rule.setdefault("points", 10)
    return rules_from([rule]).rules[0]


def _error(doc: Any, source: str = "rules.yaml") -> str:
    with pytest.raises(RulesError) as info:
        build_ruleset(doc, source=source)
    return str(info.value)


def _write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30s", 30 * SECOND_MS),
        ("90m", 90 * MINUTE_MS),
        ("12h", 12 * HOUR_MS),
        ("14d", 14 * DAY_MS),
        ("2w", 14 * DAY_MS),
        ("1.5h", 90 * MINUTE_MS),
        (" 3 d ", 3 * DAY_MS),
        (3600, HOUR_MS),  # plain numbers are seconds
        (0.5, 500),
    ],
)
def test_parse_duration_units(text: str | int | float, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["14", "14 days", "2 weeks", "d", "-1d", "1y", "", "1e3s"])
def test_parse_duration_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 14d"):
        parse_duration_ms(text)


@pytest.mark.parametrize("value", ["0s", "0d", 0, -5, -0.5, float("inf"), float("nan")])
def test_parse_duration_rejects_zero_negative_and_non_finite(value: str | float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        parse_duration_ms(value)


def test_parse_duration_rejects_bool() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(True)


def test_parse_duration_rejects_durations_that_round_to_zero_ms() -> None:
    with pytest.raises(ValueError):
        parse_duration_ms("0.0001s")


def test_half_life_rounding_to_zero_is_a_rules_error() -> None:
    with pytest.raises(RulesError, match="half_life"):
        build_ruleset(_doc(half_life=0.0001), source="rules.yaml")


@pytest.mark.parametrize(
    ("ms", "text"),
    [(3 * DAY_MS, "3d"), (36 * HOUR_MS, "36h"), (HOUR_MS, "1h"), (90_000, "90s"), (1500, "1.5s")],
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration_ms(ms) == text


@pytest.mark.parametrize("text", ["30s", "90m", "12h", "14d", "2w"])
def test_format_duration_round_trips(text: str) -> None:
    assert parse_duration_ms(format_duration_ms(parse_duration_ms(text))) == parse_duration_ms(text)


# --------------------------------------------------------------------------- the default file


def test_default_rules_load() -> None:
    rules = load_rules(default_rules_path())
    assert rules.version == "default-1"
    assert rules.half_life_ms == 14 * DAY_MS
    assert (rules.thresholds.hot, rules.thresholds.cool, rules.thresholds.min_grade) == (
        70,
        50,
        None,
    )
    assert rules.source == str(default_rules_path())
    ids = [r.id for r in rules.rules]
    assert len(ids) == len(set(ids)) == 11
    assert rules.by_id["download"].half_life_ms == 30 * DAY_MS
    assert rules.by_id["page-view"].half_life_ms == 14 * DAY_MS
    assert rules.by_id["email-open"].cap == 5
    assert rules.by_id["unsubscribe"].points == -30
    assert [r.id for r in rules.by_event["page_view"]] == [
        "page-view",
        "pricing-page",
        "careers-page",
    ]
    assert rules.has_fit
    assert rules.grade_bands == (("A", 40.0), ("B", 20.0), ("C", 0.0))
    assert {r.id for r in rules.fit_rules} == {
        "company-size-mid",
        "company-size-large",
        "decision-maker",
        "free-mail",
        "student",
        "country-not-served",
    }
    assert all(r.event is None and r.half_life_ms == 0 for r in rules.fit_rules)
    assert rules.half_lives_ms() == (14 * DAY_MS, 30 * DAY_MS)


def test_default_rules_score_an_example_journey() -> None:
    """Pricing page = page-view + pricing-page; demo form = form-submit + demo-request."""
    rules = load_rules(default_rules_path())
    pricing = page_view(url="https://www.example.com/pricing")
    assert [r.id for r in rules.by_event["page_view"] if r.matches(pricing.field_value)] == [
        "page-view",
        "pricing-page",
    ]
    demo = form_submit(form_id="Contact-Sales")
    assert [r.id for r in rules.by_event["form_submit"] if r.matches(demo.field_value)] == [
        "form-submit",
        "demo-request",
    ]


def test_load_rules_from_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        version: from-file
        half_life: 2h
        thresholds: {hot: 10, cool: 5}
        rules:
          - {id: pricing, event: page_view, url_contains: /pricing, points: 15, half_life: 30m}
          - {id: any-page, event: page_view, points: 1}
        """,
    )
    rules = load_rules(path)
    assert rules.version == "from-file"
    assert rules.source == str(path)
    assert rules.by_id["pricing"].half_life_ms == 30 * MINUTE_MS
    assert rules.by_id["any-page"].half_life_ms == 2 * HOUR_MS  # file default
    assert not rules.has_fit
    assert rules.fit_rules == ()


def test_default_half_life_is_14_days() -> None:
    doc = _doc()
    del doc["half_life"]
    rules = build_ruleset(doc)
    assert rules.half_life_ms == 14 * DAY_MS
    assert rules.rules[0].half_life_ms == 14 * DAY_MS


def test_points_may_be_fractional_or_negative() -> None:
    assert _rule(event="page_view", points=2.5).points == 2.5
    assert _rule(event="unsubscribe", points=-30).points == -30


def test_cap_is_kept() -> None:
    assert _rule(event="email_open", cap=5).cap == 5
    assert _rule(event="email_open").cap is None


def test_half_lives_sorted_and_distinct() -> None:
    rules = rules_from(
        [
            {"id": "a", "event": "page_view", "points": 1, "half_life": "1d"},
            {"id": "b", "event": "page_view", "points": 1, "half_life": "1h"},
            {"id": "c", "event": "download", "points": 1},  # default 1h
        ],
        half_life="1h",
    )
    assert rules.half_lives_ms() == (HOUR_MS, DAY_MS)


# --------------------------------------------------------------------------- conditions


def test_rule_without_conditions_matches_every_event_of_its_type() -> None:
    rule = _rule(event="email_open")
    assert rule.conditions == ()
    assert rule.matches(email_open().field_value)


def test_event_condition_selects_rules_by_type() -> None:
    rules = rules_from(
        [
            {"id": "open", "event": "email_open", "points": 1},
            {"id": "click", "event": "email_click", "points": 10},
        ]
    )
    assert [r.id for r in rules.by_event["email_open"]] == ["open"]
    assert [r.id for r in rules.by_event["email_click"]] == ["click"]
    assert "page_view" not in rules.by_event


@pytest.mark.parametrize(
    ("url", "matches"),
    [
        ("https://www.example.com/pricing", True),
        ("https://www.example.com/PRICING/enterprise", True),
        ("https://www.example.com/Pricing?plan=pro", True),
        ("https://www.example.com/price", False),
        ("https://www.example.com/", False),
    ],
)
def test_url_contains_is_case_insensitive(url: str, matches: bool) -> None:
    rule = _rule(event="page_view", url_contains="/Pricing")
    assert rule.matches(page_view(url=url).field_value) is matches


@pytest.mark.parametrize(
    ("url", "matches"),
    [
        ("https://www.example.com/blog/42", True),
        ("https://www.example.com/blog/42?x=1", False),  # $ anchors
        ("https://www.example.com/blog/intro", False),
        ("https://www.example.com/docs/blog/7", True),  # search, not match
    ],
)
def test_url_regex(url: str, matches: bool) -> None:
    rule = _rule(event="page_view", url_regex=r"/blog/\d+$")
    assert rule.matches(page_view(url=url).field_value) is matches


def test_url_regex_on_an_event_without_url_never_matches() -> None:
    rule = _rule(event="download", url_regex=".*")
    assert not rule.matches(download(url=None).field_value)
    assert rule.matches(download(url="https://x.example/a.pdf").field_value)


def test_url_contains_and_regex_both_must_hold() -> None:
    rule = _rule(event="page_view", url_contains="example.com", url_regex="/pricing$")
    assert rule.matches(page_view(url="https://example.com/pricing").field_value)
    assert not rule.matches(page_view(url="https://other.org/pricing").field_value)
    assert not rule.matches(page_view(url="https://example.com/pricing/x").field_value)


@pytest.mark.parametrize(
    ("asset_type", "matches"),
    [("ebook", True), ("WhitePaper", True), ("EBOOK", True), ("pricing", False), (None, False)],
)
def test_field_membership_is_case_insensitive(asset_type: str | None, matches: bool) -> None:
    rule = _rule(event="download", asset_type=["ebook", "Whitepaper"])
    assert rule.matches(download(asset_type=asset_type).field_value) is matches


def test_field_equality_with_a_single_value() -> None:
    rule = _rule(event="webinar", status="attended")
    assert rule.matches(webinar(status="attended").field_value)
    assert not rule.matches(webinar(status="registered").field_value)


def test_field_conditions_under_where() -> None:
    rule = _rule(event="form_submit", where={"form_id": ["DEMO", "contact-sales"]})
    assert rule.conditions == (Condition("form_id", "equals", ("demo", "contact-sales")),)
    assert rule.matches(form_submit(form_id="demo").field_value)
    assert rule.matches(form_submit(form_id="Contact-Sales").field_value)
    assert not rule.matches(form_submit(form_id="newsletter").field_value)


def test_where_and_top_level_conditions_combine() -> None:
    rule = _rule(event="email_click", campaign_id="spring", where={"url": "https://x.example/"})
    assert rule.matches(email_click(campaign_id="SPRING", url="https://x.example/").field_value)
    assert not rule.matches(email_click(campaign_id="spring", url="https://y.example/").field_value)
    assert not rule.matches(email_click(campaign_id="fall", url="https://x.example/").field_value)


def test_properties_conditions() -> None:
    rule = _rule(event="page_view", **{"properties.utm_source": ["google", "bing"]})
    assert rule.matches(page_view(properties={"utm_source": "Google"}).field_value)
    assert not rule.matches(page_view(properties={"utm_source": "linkedin"}).field_value)
    assert not rule.matches(page_view(properties={}).field_value)  # missing: never matches
    assert not rule.matches(page_view(properties={"utm_source": None}).field_value)


def test_properties_under_where_with_numbers_and_lists() -> None:
    rule = _rule(event="form_submit", where={"properties.seats": [100, 250]})
    assert rule.matches(form_submit(properties={"seats": 250}).field_value)
    assert rule.matches(form_submit(properties={"seats": 100.0}).field_value)
    assert not rule.matches(form_submit(properties={"seats": "250"}).field_value)
    listy = _rule(event="form_submit", where={"properties.interests": "SSO"})
    # A list-valued property matches when any element does.
    assert listy.matches(form_submit(properties={"interests": ["api", "sso"]}).field_value)
    assert not listy.matches(form_submit(properties={"interests": ["api"]}).field_value)


@pytest.mark.parametrize(
    ("title", "matches"),
    [
        ("Lead Scoring GUIDE", True),
        ("pricing overview", True),
        ("About us", False),
        (None, False),
    ],
)
def test_contains_any_text_any_case(title: str | None, matches: bool) -> None:
    rule = _rule(event="page_view", contains={"title": ["guide", "PRICING"]})
    assert rule.matches(page_view(title=title).field_value) is matches


def test_contains_with_a_single_text_and_on_properties() -> None:
    rule = _rule(event="page_view", contains={"properties.campaign": "Spring"})
    assert rule.matches(page_view(properties={"campaign": "2026-SPRING-launch"}).field_value)
    assert not rule.matches(page_view(properties={"campaign": "fall"}).field_value)
    assert not rule.matches(page_view(properties={"campaign": 7}).field_value)  # not text
    assert not rule.matches(page_view().field_value)


@pytest.mark.parametrize(
    ("list_id", "matches"),
    [("newsletter", False), ("NEWSLETTER", False), ("product-updates", True), (None, False)],
)
def test_unless_needs_the_field_present_and_not_listed(list_id: str | None, matches: bool) -> None:
    rule = _rule(event="unsubscribe", points=-30, unless={"list_id": ["Newsletter"]})
    assert rule.matches(unsubscribe(list_id=list_id).field_value) is matches


def test_unless_on_properties_with_a_single_value() -> None:
    rule = _rule(event="page_view", unless={"properties.env": "staging"})
    assert rule.matches(page_view(properties={"env": "prod"}).field_value)
    assert not rule.matches(page_view(properties={"env": "Staging"}).field_value)
    assert not rule.matches(page_view().field_value)  # missing field: never matches


def test_all_conditions_must_hold() -> None:
    rule = _rule(
        event="download",
        url_contains="example.com",
        asset_type="whitepaper",
        contains={"asset_id": "scoring"},
        unless={"properties.source": "partner"},
    )
    assert [c.kind for c in rule.conditions] == ["contains", "equals", "contains", "unless"]
    good: dict[str, Any] = {
        "url": "https://example.com/wp.pdf",
        "asset_type": "WhitePaper",
        "asset_id": "wp-lead-scoring",
        "properties": {"source": "web"},
    }
    assert rule.matches(download(**good).field_value)
    for field, bad in [
        ("url", "https://other.org/wp.pdf"),
        ("asset_type", "ebook"),
        ("asset_id", "wp-other"),
        ("properties", {"source": "partner"}),
        ("properties", {}),
    ]:
        assert not rule.matches(download(**{**good, field: bad}).field_value), field


def test_envelope_fields_can_be_conditions() -> None:
    rule = _rule(event="page_view", lead_id=["vip-1", "vip-2"])
    assert rule.matches(page_view("VIP-1").field_value)
    assert not rule.matches(page_view("lead-9").field_value)


def test_behaviour_rules_on_profile_events_see_the_derived_email_domain() -> None:
    rule = _rule(event="lead_profile", email_domain="acme.example")
    assert rule.matches(lead_profile(email="Jane@ACME.example").field_value)
    assert not rule.matches(lead_profile(email="jane@other.example").field_value)
    assert not rule.matches(lead_profile().field_value)


@pytest.mark.parametrize(
    ("condition", "value", "holds"),
    [
        (Condition("f", "equals", ("a",)), "A", True),
        (Condition("f", "equals", ("a",)), ["x", "A"], True),
        (Condition("f", "equals", ("a",)), None, False),
        (Condition("f", "equals", (1,)), 1.0, True),
        (Condition("f", "contains", ("bc",)), "ABCD", True),
        (Condition("f", "contains", ("bc",)), 123, False),
        (Condition("f", "unless", ("a",)), "b", True),
        (Condition("f", "unless", ("a",)), ["b", "A"], False),
        (Condition("f", "unless", ("a",)), None, False),
        (Condition("f", "regex", pattern=re.compile("^x")), "xyz", True),
        (Condition("f", "regex", pattern=re.compile("^x")), "Xyz", False),
        (Condition("f", "regex", pattern=re.compile("^x")), 5, False),
    ],
)
def test_condition_holds(condition: Condition, value: Any, holds: bool) -> None:
    assert condition.holds(value) is holds


def test_yaml_boolean_lookalikes_compare_as_text(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        version: v
        thresholds: {hot: 70, cool: 50}
        rules:
          - {id: pv, event: page_view, points: 1}
        fit:
          rules:
            - {id: norway, country: [NO, SE], points: 10}
        """,
    )
    rules = load_rules(path)
    assert rules.fit_rules[0].matches({"country": "NO"}.get)


# --------------------------------------------------------------------------- fit


def test_fit_rules_and_grades() -> None:
    rules = rules_from(
        [{"id": "pv", "event": "page_view", "points": 1}],
        fit={
            "grades": {"A": 50, "B": 20, "C": -10},
            "rules": [
                {"id": "size", "company_size": ["51-200"], "points": 30},
                {"id": "free-mail", "email_domain": ["gmail.com"], "points": -30},
                {"id": "student", "contains": {"job_title": "student"}, "points": -40},
                {"id": "not-served", "unless": {"country": ["US", "DE"]}, "points": -20},
                {"id": "senior", "where": {"seniority": "VP"}, "points": 25},
            ],
        },
    )
    assert rules.has_fit
    assert rules.grade_bands == (("A", 50.0), ("B", 20.0), ("C", -10.0))
    size = rules.fit_rules[0]
    assert (size.id, size.event, size.half_life_ms, size.cap) == ("size", None, 0, None)
    assert rules.grade(80) == "A"
    assert rules.grade(50) == "A"
    assert rules.grade(49.9) == "B"
    assert rules.grade(20) == "B"
    assert rules.grade(0) == "C"
    assert rules.grade(-10) == "C"
    assert rules.grade(-10.5) == "D"
    by_id = {r.id: r for r in rules.fit_rules}

    def profile(**values: str) -> Callable[[str], Any]:
        return values.get

    assert by_id["free-mail"].matches(profile(email_domain="gmail.com"))
    assert by_id["student"].matches(profile(job_title="PhD Student"))
    assert by_id["not-served"].matches(profile(country="BR"))
    assert not by_id["not-served"].matches(profile(country="us"))
    assert not by_id["not-served"].matches(profile())  # unknown country: no penalty
    assert by_id["senior"].matches(profile(seniority="vp"))


def test_fit_grades_may_be_partial_and_are_ordered_best_first() -> None:
    rules = rules_from(
        [{"id": "pv", "event": "page_view", "points": 1}],
        fit={"grades": {"C": 0, "A": 40}, "rules": [{"id": "f", "country": "US", "points": 1}]},
    )
    assert rules.grade_bands == (("A", 40.0), ("C", 0.0))
    assert rules.grade(40) == "A"
    assert rules.grade(39) == "C"
    assert rules.grade(-1) == "D"


def test_fit_default_grades() -> None:
    rules = rules_from(
        [{"id": "pv", "event": "page_view", "points": 1}],
        fit={"rules": [{"id": "f", "country": "US", "points": 1}]},
    )
    assert rules.grade_bands == (("A", 60.0), ("B", 30.0), ("C", 0.0))


def test_min_grade_allows_grades_at_or_above_it() -> None:
    rules = rules_from(
        [{"id": "pv", "event": "page_view", "points": 1}],
        min_grade="B",
        fit={"rules": [{"id": "f", "country": "US", "points": 1}]},
    )
    assert rules.thresholds.min_grade == "B"
    assert [g for g in GRADES if rules.grade_allows_hot(g)] == ["A", "B"]
    assert not rules.grade_allows_hot(None)


def test_no_min_grade_allows_every_grade() -> None:
    rules = rules_from([{"id": "pv", "event": "page_view", "points": 1}])
    assert all(rules.grade_allows_hot(g) for g in (*GRADES, None))


def test_min_grade_d_allows_everything_graded() -> None:
    rules = rules_from(
        [{"id": "pv", "event": "page_view", "points": 1}],
        min_grade="D",
        fit={"rules": [{"id": "f", "country": "US", "points": 1}]},
    )
    assert all(rules.grade_allows_hot(g) for g in GRADES)


def test_cool_equal_to_hot_is_allowed() -> None:
    rules = rules_from([{"id": "pv", "event": "page_view", "points": 1}], hot=60, cool=60)
    assert rules.thresholds.hot == rules.thresholds.cool == 60


# --------------------------------------------------------------------------- errors


def test_error_unknown_event_type() -> None:
    message = _error(_doc(rules=[{"id": "pricing", "event": "pageview", "points": 15}]))
    assert message.startswith("rules.yaml: rule 'pricing': event: ")
    assert "unknown event type 'pageview'" in message
    assert "page_view" in message  # lists the valid types


def test_error_missing_event_type() -> None:
    message = _error(_doc(rules=[{"id": "pricing", "points": 15}]))
    assert message == "rules.yaml: rule 'pricing': event: Field required"


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"event": "page_view", "asset_type": "ebook"}, "asset_type"),
        ({"event": "email_open", "url_contains": "/pricing"}, "url"),
        ({"event": "email_open", "url_regex": "x"}, "url"),
        ({"event": "download", "where": {"form_id": "demo"}}, "form_id"),
        ({"event": "page_view", "contains": {"body": "x"}}, "body"),
        ({"event": "page_view", "unless": {"country": "US"}}, "country"),
        ({"event": "page_view", "halflife": "3d"}, "halflife"),  # a typo: not a field
        ({"event": "page_view", "properties.": "x"}, "properties."),
    ],
)
def test_error_unknown_field_for_the_event_type(rule: dict[str, Any], field: str) -> None:
    message = _error(_doc(rules=[{"id": "my-rule", "points": 1, **rule}]))
    assert message.startswith("rules.yaml: rule 'my-rule': ")
    assert f"unknown condition or field {field!r}" in message
    assert "properties.NAME" in message  # says what is allowed


def test_error_unknown_field_lists_the_fields_of_that_event_type() -> None:
    message = _error(
        _doc(rules=[{"id": "x", "event": "email_open", "points": 1, "url_contains": "a"}])
    )
    assert "campaign_id" in message
    assert "email_id" in message
    assert "asset_type" not in message


@pytest.mark.parametrize("value", ["2 weeks", "14", "-1d", "fortnight"])
def test_error_bad_rule_duration(value: str) -> None:
    message = _error(
        _doc(rules=[{"id": "download", "event": "download", "points": 20, "half_life": value}])
    )
    assert message.startswith("rules.yaml: rule 'download': half_life: ")
    assert "expected a duration like 14d" in message
    assert repr(value) in message


@pytest.mark.parametrize("value", ["0d", "0s", 0, -3600, "0.0h"])
def test_error_zero_or_negative_rule_half_life(value: str | int) -> None:
    message = _error(
        _doc(rules=[{"id": "download", "event": "download", "points": 20, "half_life": value}])
    )
    assert message.startswith("rules.yaml: rule 'download': half_life: ")
    assert "must be positive" in message


@pytest.mark.parametrize(("value", "words"), [("soon", "expected a duration"), ("0h", "positive")])
def test_error_bad_default_half_life(value: str, words: str) -> None:
    message = _error(_doc(half_life=value))
    assert message.startswith("rules.yaml: half_life")
    assert words in message
    assert "rule " not in message


def test_error_bad_default_half_life_names_the_field_once() -> None:
    message = _error(_doc(half_life="soon"))
    assert message == (
        "rules.yaml: half_life: expected a duration like 14d, 12h, 90m or 30s, got 'soon'"
    )


def test_error_cool_above_hot() -> None:
    message = _error(_doc(thresholds={"hot": 50, "cool": 70}))
    assert message == "rules.yaml: thresholds: cool (70) must not be above hot (50)"


def test_error_duplicate_rule_id() -> None:
    message = _error(
        _doc(
            rules=[
                {"id": "pricing", "event": "page_view", "points": 1},
                {"id": "pricing", "event": "download", "points": 2},
            ]
        )
    )
    assert message == "rules.yaml: rule 'pricing': id: duplicate rule id"


def test_error_fit_rule_id_duplicates_a_behaviour_rule_id() -> None:
    message = _error(_doc(fit={"rules": [{"id": "pv", "country": "US", "points": 1}]}))
    assert message == "rules.yaml: fit rule 'pv': id: duplicate rule id"


def test_error_duplicate_fit_rule_id() -> None:
    fit = {
        "rules": [
            {"id": "size", "company_size": "1-10", "points": 1},
            {"id": "size", "company_size": "11-50", "points": 2},
        ]
    }
    assert _error(_doc(fit=fit)) == "rules.yaml: fit rule 'size': id: duplicate rule id"


def test_error_bad_regex() -> None:
    message = _error(
        _doc(rules=[{"id": "blog", "event": "page_view", "url_regex": "/blog/(", "points": 1}])
    )
    assert message.startswith("rules.yaml: rule 'blog': url_regex: invalid regular expression")


def test_error_missing_thresholds() -> None:
    doc = _doc()
    del doc["thresholds"]
    assert _error(doc) == "rules.yaml: thresholds: Field required"


@pytest.mark.parametrize(
    ("thresholds", "start"),
    [
        ({"hot": 70}, "rules.yaml: thresholds.cool: Field required"),
        ({"hot": "high", "cool": 50}, "rules.yaml: thresholds.hot: "),
        ({"hot": 70, "cool": 50, "min_grade": "E"}, "rules.yaml: thresholds.min_grade: "),
        ({"hot": 70, "cool": 50, "warm": 60}, "rules.yaml: thresholds.warm: Extra inputs"),
    ],
)
def test_error_bad_thresholds(thresholds: dict[str, Any], start: str) -> None:
    assert _error(_doc(thresholds=thresholds)).startswith(start)


@pytest.mark.parametrize("points", ["lots", None, [1, 2]])
def test_error_points_not_a_number(points: Any) -> None:
    message = _error(_doc(rules=[{"id": "pricing", "event": "page_view", "points": points}]))
    assert message.startswith("rules.yaml: rule 'pricing': points: ")
    assert "number" in message


@pytest.mark.parametrize("points", [float("nan"), float("inf"), float("-inf")])
def test_error_points_not_finite(points: float) -> None:
    message = _error(_doc(rules=[{"id": "pricing", "event": "page_view", "points": points}]))
    assert message.startswith("rules.yaml: rule 'pricing': points: ")
    assert "finite number" in message


def test_error_missing_points() -> None:
    message = _error(_doc(rules=[{"id": "pricing", "event": "page_view"}]))
    assert message == "rules.yaml: rule 'pricing': points: Field required"


def test_error_fit_points_not_a_number() -> None:
    message = _error(_doc(fit={"rules": [{"id": "size", "company_size": "1-10", "points": "x"}]}))
    assert message.startswith("rules.yaml: fit rule 'size': points: ")


def test_error_rule_without_id_is_named_by_position() -> None:
    message = _error(
        _doc(
            rules=[
                {"id": "ok", "event": "page_view", "points": 1},
                {"event": "download", "points": 20},
            ]
        )
    )
    assert message == "rules.yaml: rule #2: id: Field required"


def test_error_bad_cap() -> None:
    message = _error(_doc(rules=[{"id": "opens", "event": "email_open", "points": 1, "cap": 0}]))
    assert message.startswith("rules.yaml: rule 'opens': cap: ")
    assert "greater than 0" in message


def test_error_condition_value_must_be_scalar_or_list() -> None:
    message = _error(
        _doc(rules=[{"id": "dl", "event": "download", "points": 1, "asset_type": {"a": 1}}])
    )
    assert message == (
        "rules.yaml: rule 'dl': asset_type: unknown operator 'a'; operators are: eq, not, "
        "gt, gte, lt, lte, between, exists, contains, regex"
    )


def test_error_no_rules() -> None:
    message = _error(_doc(rules=[]))
    assert message.startswith("rules.yaml: rules: ")
    assert "at least 1" in message


@pytest.mark.parametrize(
    ("overrides", "start"),
    [
        ({"version": ""}, "rules.yaml: version: "),
        ({"colour": "red"}, "rules.yaml: colour: Extra inputs are not permitted"),
    ],
)
def test_error_top_level_fields(overrides: dict[str, Any], start: str) -> None:
    assert _error(_doc(**overrides)).startswith(start)


def test_error_missing_version() -> None:
    doc = _doc()
    del doc["version"]
    assert _error(doc) == "rules.yaml: version: Field required"


@pytest.mark.parametrize("doc", [None, [], ["a"], "text", 3])
def test_error_document_not_a_mapping(doc: Any) -> None:
    assert _error(doc) == "rules.yaml: expected a mapping with version, thresholds and rules"


def test_errors_are_value_errors_listing_every_problem() -> None:
    doc = _doc(rules=[{"id": "a", "event": "page_view"}, {"id": "b", "points": "x"}])
    with pytest.raises(ValueError) as info:
        build_ruleset(doc, source="r.yaml")
    lines = str(info.value).splitlines()
    assert "r.yaml: rule 'a': points: Field required" in lines
    assert "r.yaml: rule 'b': event: Field required" in lines
    assert any(line.startswith("r.yaml: rule 'b': points: ") for line in lines)


def test_error_invalid_yaml_has_line_and_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        version: v1
        thresholds: {hot: 70, cool: 50}
        rules:
          - {id: pricing, event: page_view, points: 15
          - {id: other, event: page_view, points: 1}
        """,
    )
    with pytest.raises(RulesError) as info:
        load_rules(path)
    message = str(info.value)
    assert message.startswith(f"{path} (line 5, column ")
    assert "not valid YAML" in message


def test_error_invalid_yaml_indentation(tmp_path: Path) -> None:
    path = _write(tmp_path, "version: v1\nthresholds:\n  hot: 70\n   cool: 50\n")
    with pytest.raises(RulesError, match=r"\(line 4, column \d+\): not valid YAML: "):
        load_rules(path)


def test_error_from_file_names_the_file_rule_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        version: v1
        thresholds: {hot: 70, cool: 50}
        rules:
          - {id: pricing, event: page_view, points: fifteen}
        """,
        name="marketing.yaml",
    )
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert str(info.value).startswith(f"{path}: rule 'pricing': points: ")


def test_error_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    with pytest.raises(RulesError, match="expected a mapping with version, thresholds and rules"):
        load_rules(path)


def test_error_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert str(info.value).startswith(f"{path}: cannot read rules file: ")


def test_error_min_grade_without_fit_section() -> None:
    message = _error(_doc(thresholds={"hot": 70, "cool": 50, "min_grade": "C"}))
    assert message == "rules.yaml: thresholds.min_grade needs a fit: section with rules"


def test_error_min_grade_with_a_fit_section_but_no_fit_rules() -> None:
    message = _error(
        _doc(thresholds={"hot": 70, "cool": 50, "min_grade": "C"}, fit={"grades": {"A": 10}})
    )
    assert message == "rules.yaml: thresholds.min_grade needs a fit: section with rules"


@pytest.mark.parametrize(
    ("grades", "words"),
    [
        ({"A": 30, "B": 30, "C": 0}, "grade A needs a higher minimum than B"),
        ({"A": 30, "B": 40, "C": 0}, "grade A needs a higher minimum than B"),
        ({"A": 60, "B": 30, "C": 30}, "grade B needs a higher minimum than C"),
        ({"A": 0, "C": 10}, "grade A needs a higher minimum than C"),
    ],
)
def test_error_grade_bands_must_decrease(grades: dict[str, float], words: str) -> None:
    fit = {"grades": grades, "rules": [{"id": "size", "company_size": "1-10", "points": 1}]}
    message = _error(_doc(fit=fit))
    assert message.startswith("rules.yaml: fit.grades: ")
    assert words in message


def test_error_unknown_grade() -> None:
    fit = {"grades": {"A": 30, "E": 0}, "rules": [{"id": "f", "country": "US", "points": 1}]}
    message = _error(_doc(fit=fit))
    assert message.startswith("rules.yaml: fit.grades.E: ")


def test_error_fit_rule_unknown_field() -> None:
    message = _error(_doc(fit={"rules": [{"id": "f", "url_contains": "/x", "points": 1}]}))
    assert message.startswith("rules.yaml: fit rule 'f': unknown condition or field 'url'")
    assert "email_domain" in message  # lists the profile fields


def test_error_fit_rule_without_conditions() -> None:
    message = _error(_doc(fit={"rules": [{"id": "f", "points": 1}]}))
    assert message == "rules.yaml: fit rule 'f': a fit rule needs at least one condition"


@pytest.mark.parametrize("extra", [{"half_life": "1d"}, {"cap": 10}])
def test_error_fit_rules_do_not_decay(extra: dict[str, Any]) -> None:
    fit = {"rules": [{"id": "f", "country": "US", "points": 1, **extra}]}
    message = _error(_doc(fit=fit))
    assert message == "rules.yaml: fit rule 'f': fit rules do not decay; remove half_life/cap"


def test_fit_section_extra_keys_are_rejected() -> None:
    message = _error(_doc(fit={"rules": [], "bands": {}}))
    assert message.startswith("rules.yaml: fit.bands: Extra inputs")


def test_rule_condition_on_an_event_field_of_another_type_is_caught_per_type() -> None:
    """`form_id` is a field of form_submit, not of download: the check is per event type."""
    ok = build_ruleset(
        _doc(rules=[{"id": "demo", "event": "form_submit", "form_id": "demo", "points": 1}])
    )
    assert ok.rules[0].conditions[0].field == "form_id"


def test_make_event_helper_builds_every_type() -> None:
    """Sanity check of the shared builders these tests rely on."""
    for event_type in ("page_view", "email_open", "email_click", "download"):
        assert make_event(event_type).type == event_type


def test_a_condition_on_occurred_at_is_refused() -> None:
    # Time is decay's job; a condition on it never matched the same way everywhere.
    with pytest.raises(RulesError, match="occurred_at"):
        build_ruleset(
            {
                "version": "x",
                "thresholds": {"hot": 1, "cool": 0},
                "rules": [{"id": "a", "event": "page_view", "occurred_at": "2026", "points": 1}],
            }
        )


# --------------------------------------------------------------------------- track events,
# numeric conditions, conditions that can never match


def _track(name: str, lead: str, at_ms: int, event_id: str, **properties: Any) -> Any:
    return make_event("track", lead, at_ms, event_id=event_id, event=name, properties=properties)


def test_a_rule_on_a_track_event_name_with_a_numeric_condition_scores_only_those() -> None:
    rules = build_ruleset(
        _doc(
            rules=[
                {
                    "id": "big-cart",
                    "event": "Product Added",
                    "where": {"properties.price": {"gte": 50}},
                    "points": 30,
                },
                {"id": "trial", "event": "Trial Started", "points": 5},
            ]
        )
    )
    events = [
        _track("Product Added", "a", BASE_MS, "1", price=49.99),
        _track("Product Added", "a", BASE_MS, "2", price=50),
        _track("Product Added", "a", BASE_MS, "3", price="120"),  # text is not a number
        _track("Product Added", "a", BASE_MS, "4"),  # no price
        _track("product added", "a", BASE_MS, "5", price=500),  # names are exact
        _track("Trial Started", "a", BASE_MS, "6"),
    ]
    matched = [rules.match(rule_event_of(e), e.field_value) for e in events]
    assert matched == [[], [0], [], [], [], [1]]
    store, _ = run_events(events, rules)
    assert score_at(store.states["a"], rules, BASE_MS) == pytest.approx(35)
    assert store.states["a"].events_applied == 6  # the others are applied as no-ops


@pytest.mark.parametrize(
    ("ops", "value", "holds"),
    [
        ({"gt": 10}, 10, False),
        ({"gt": 10}, 10.5, True),
        ({"gte": 10, "lt": 20}, 19.99, True),
        ({"lte": 0}, -3, True),
        ({"between": [10, 20]}, 20, True),
        ({"between": [10, 20]}, 9, False),
        ({"gt": 1}, True, False),  # a boolean is not a number
        ({"gt": 1}, [0, 5], True),  # any item of a list
        ({"exists": True}, "x", True),
        ({"exists": True}, None, False),
        ({"exists": False}, None, True),
        ({"eq": ["a", "B"]}, "b", True),
        ({"not": "a"}, "b", True),
        ({"contains": "pro"}, "Enterprise PRO", True),
        ({"regex": "^v[0-9]+$"}, "v12", True),
    ],
)
def test_operators(ops: dict[str, Any], value: Any, holds: bool) -> None:
    rule = _rule(id="r", event="Product Added", where={"properties.x": ops}, points=1)
    assert rule.matches({"properties.x": value}.get) is holds


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"event": "page_view", "where": {"url": {"gt": 3}}},
            "url: gt: can never match: url is text, gt compares numbers",
        ),
        (
            {"event": "Product Added", "properties.price": {"between": [60, 50]}},
            "properties.price: between: can never match: 60 > 50",
        ),
        (
            {"event": "Product Added", "where": {"properties.price": {"gt": 100, "lte": 50}}},
            "properties.price: can never match: above 100 and below 50",
        ),
        (
            {"event": "Product Added", "where": {"properties.p": {"exists": False, "eq": 1}}},
            "properties.p: can never match: exists: false with other operators",
        ),
        (
            {"event": "Product Added", "where": {"properties.p": {"gte": "50"}}},
            "properties.p: gte: expected a number, got '50'",
        ),
        ({"event": "track"}, "event: name the track event as it is sent"),
        ({"event": "pageview"}, "event: unknown event type 'pageview': did you mean 'page_view'?"),
    ],
)
def test_conditions_that_can_never_match_are_rejected_naming_them(
    rule: dict[str, Any], message: str
) -> None:
    error = _error(_doc(rules=[{"id": "r", "points": 1, **rule}]))
    assert error.startswith("rules.yaml: rule 'r': ")
    assert message in error


def test_a_fit_rule_on_a_profile_property_matches_it() -> None:
    """Fit rules read lead_profile properties they test (Segment: any other trait);
    the profile keeps those and no others."""
    rules = build_ruleset(
        _doc(
            fit={
                "grades": {"A": 10, "B": 5, "C": 0},
                "rules": [{"id": "f", "properties.plan": "enterprise", "points": 12}],
            }
        )
    )
    assert rules.profile_fields[-1:] == ("properties.plan",)
    profile = lead_profile("a", BASE_MS, properties={"plan": "Enterprise", "seats": 40})
    store, _ = run_events([profile], rules)
    state = store.states["a"]
    assert state.profile["properties.plan"][2] == "Enterprise"
    assert "properties.seats" not in state.profile
    assert fit_grade(state, rules) == "A"


@pytest.mark.parametrize(
    "ops",
    [{"gt": 5, "lt": 5}, {"gte": 5, "lt": 5}, {"gte": 10, "between": [0, 5]}, {"gt": 9, "lte": 3}],
)
def test_an_empty_numeric_range_is_rejected(ops: dict[str, Any]) -> None:
    error = _error(_doc(rules=[{"id": "r", "event": "X", "points": 1, "properties.n": ops}]))
    assert "properties.n: can never match: above" in error


@pytest.mark.parametrize(
    "name", ["page_viewed", "form_submitted", "downloaded", "webinars", "Page View", "Signed Up"]
)
def test_track_names_that_only_start_like_a_type_are_accepted(name: str) -> None:
    rules = build_ruleset(_doc(rules=[{"id": "r", "event": name, "points": 1}]))
    assert rules.rules[0].event == name


def test_the_match_cache_tells_true_from_1() -> None:
    rules = build_ruleset(
        _doc(rules=[{"id": "r", "event": "X", "points": 1, "properties.n": {"gt": 0}}])
    )
    assert rules.match("X", {"properties.n": True}.get) == []
    assert rules.match("X", {"properties.n": 1}.get) == [0]
    assert rules.match("X", {"properties.n": True}.get) == []


def test_rules_check_prints_every_kind_of_condition(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        version: ops-1
        thresholds: {hot: 10, cool: 5}
        rules:
          - id: a
            event: Product Added
            points: 1
            where:
              properties.x: {exists: true, between: [1, 5]}
              properties.y: {exists: false}
          - id: b
            event: page_view
            points: 1
            url_regex: "^https://"
            unless: {properties.s: ads}
          - {id: c, event: Trial Started, properties.plan: {gt: 2}, points: 3}
        fit:
          rules:
            - {id: f, properties.plan: enterprise, points: 5}
        """,
    )
    result = CliRunner().invoke(cli, ["rules", "check", str(path)])
    assert result.exit_code == 0, result.output
    for text in (
        "Product Added",
        "[properties.x exists, properties.x >= 1, properties.x <= 5, properties.y is absent]",
        "[url matches /^https:///, properties.s not in ['ads']]",
        "[properties.plan > 2]",
        "f                      +5  [properties.plan in ['enterprise']]",
    ):
        assert text in result.output
