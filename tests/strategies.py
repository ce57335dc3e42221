"""Shared test helpers: event builders, reference (brute-force) scoring, hypothesis
strategies and a deterministic random event-log generator.

Used by the unit tests (``tests/unit``), and meant to be reused by integration tests that
compare the memory store with the Redis store, and by benchmarks:

* builders: :func:`make_event` and one shortcut per event type (``page_view(...)``...),
  :func:`event_dict` for the JSON a producer sends, :func:`rules_from` for a RuleSet;
* references: :func:`naive_score` / :func:`naive_contributions` (the spec's formula, summed
  event by event), :func:`dedupe`, :func:`run_events` (a MemoryStore over a whole log);
* hypothesis strategies: :func:`rule_sets`, :func:`event_logs`, :func:`rules_and_logs`,
  :func:`curve_terms`;
* :func:`generate_event_log`: plain ``random``-based, JSON-able dicts, deterministic per seed.

All times are integer milliseconds since the epoch unless a name says otherwise.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from schemas.events import BUILT_IN_TYPES, EVENT_ADAPTER, LeadEvent, ScoreAdjusted, rule_event_of
from scoring.crossings import Crossing
from scoring.rules import RuleSet
from scoring.rules_file import build_ruleset
from scoring.state import Position
from scoring.store import MemoryStore
from tests.decay_curve import Term, clamp

# --------------------------------------------------------------------------- time

#: 2026-01-01T00:00:00Z: the default "now" of test event logs.
BASE_MS = 1_767_225_600_000
SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch -> aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


def iso(ms: int) -> str:
    """Milliseconds since the epoch -> RFC 3339 text with milliseconds and ``Z``."""
    return to_datetime(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- builders

_ids = itertools.count(1)


def next_event_id(prefix: str = "evt") -> str:
    """A fresh event id (unique within a test process)."""
    return f"{prefix}-{next(_ids):07d}"


#: Fields an event type requires besides the envelope, with harmless defaults.
_REQUIRED_DEFAULTS: dict[str, dict[str, Any]] = {
    "page_view": {"url": "https://www.example.com/"},
    "email_open": {},
    "email_click": {"url": "https://www.example.com/", "campaign_id": "campaign-1"},
    "download": {"asset_id": "asset-1"},
    "form_submit": {"form_id": "form-1"},
    "webinar": {"webinar_id": "webinar-1", "status": "registered"},
    "unsubscribe": {},
    "lead_profile": {},
    "track": {"event": "Product Added"},
    "score_adjusted": {"points": 10, "reason": "met at a fair", "author": "sales"},
    "score_reset": {"reason": "deal closed", "author": "crm-sync"},
    "lead_erased": {"reason": "erasure request", "author": "privacy"},
    "lead_linked": {"canonical_id": "lead-0"},
    "lead_absorbed": {"absorbed_id": "lead-0", "link_event_id": "link-0", "state": {}},
}


def event_dict(
    event_type: str,
    lead_id: str = "lead-1",
    at_ms: int = BASE_MS,
    event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The JSON a producer would send (``occurred_at`` as RFC 3339 text)."""
    data: dict[str, Any] = {
        "event_id": event_id or next_event_id(),
        "type": event_type,
        "lead_id": lead_id,
        "occurred_at": iso(at_ms),
        **_REQUIRED_DEFAULTS[event_type],
    }
    data.update(fields)
    return data


def event_from_dict(data: Mapping[str, Any]) -> LeadEvent:
    """Validate a JSON-able event dict (as :func:`event_dict` / :func:`generate_event_log`
    produce) into a schemas event, exactly as a consumer parses a message."""
    return EVENT_ADAPTER.validate_json(json.dumps(data))


def make_event(
    event_type: str,
    lead_id: str = "lead-1",
    at_ms: int = BASE_MS,
    event_id: str | None = None,
    **fields: Any,
) -> LeadEvent:
    """A validated event (via :data:`EVENT_ADAPTER`)."""
    data: dict[str, Any] = {
        "event_id": event_id or next_event_id(),
        "type": event_type,
        "lead_id": lead_id,
        "occurred_at": to_datetime(at_ms),
        **_REQUIRED_DEFAULTS[event_type],
    }
    data.update(fields)
    return EVENT_ADAPTER.validate_python(data)


def page_view(
    lead_id: str = "lead-1", at_ms: int = BASE_MS, url: str = "https://www.example.com/", **kw: Any
) -> LeadEvent:
    return make_event("page_view", lead_id, at_ms, url=url, **kw)


def email_open(lead_id: str = "lead-1", at_ms: int = BASE_MS, **kw: Any) -> LeadEvent:
    return make_event("email_open", lead_id, at_ms, **kw)


def email_click(lead_id: str = "lead-1", at_ms: int = BASE_MS, **kw: Any) -> LeadEvent:
    return make_event("email_click", lead_id, at_ms, **kw)


def download(lead_id: str = "lead-1", at_ms: int = BASE_MS, **kw: Any) -> LeadEvent:
    return make_event("download", lead_id, at_ms, **kw)


def form_submit(lead_id: str = "lead-1", at_ms: int = BASE_MS, **kw: Any) -> LeadEvent:
    return make_event("form_submit", lead_id, at_ms, **kw)


def webinar(lead_id: str = "lead-1", at_ms: int = BASE_MS, **kw: Any) -> LeadEvent:
    return make_event("webinar", lead_id, at_ms, **kw)


def unsubscribe(lead_id: str = "lead-1", at_ms: int = BASE_MS, **kw: Any) -> LeadEvent:
    return make_event("unsubscribe", lead_id, at_ms, **kw)


def lead_profile(lead_id: str = "lead-1", at_ms: int = BASE_MS, **kw: Any) -> LeadEvent:
    return make_event("lead_profile", lead_id, at_ms, **kw)


def rules_from(
    rules: Sequence[Mapping[str, Any]],
    *,
    hot: float = 70,
    cool: float = 50,
    half_life: str | int | float = "1h",
    version: str = "test-1",
    min_grade: str | None = None,
    fit: Mapping[str, Any] | None = None,
    source: str = "test.yaml",
    adjustments: Mapping[str, Any] | None = None,
) -> RuleSet:
    """A RuleSet from a few rule dicts (validated exactly like a rules file)."""
    thresholds: dict[str, Any] = {"hot": hot, "cool": cool}
    if min_grade is not None:
        thresholds["min_grade"] = min_grade
    doc: dict[str, Any] = {
        "version": version,
        "half_life": half_life,
        "thresholds": thresholds,
        "rules": [dict(r) for r in rules],
    }
    if fit is not None:
        doc["fit"] = dict(fit)
    if adjustments is not None:
        doc["adjustments"] = dict(adjustments)
    return build_ruleset(doc, source=source)


# --------------------------------------------------------------------------- references


def dedupe(events: Iterable[LeadEvent]) -> list[LeadEvent]:
    """First occurrence of each ``(lead_id, event_id)``, in order (what the engine applies
    when no positions are given)."""
    seen: set[tuple[str, str]] = set()
    out: list[LeadEvent] = []
    for event in events:
        key = (event.lead_id, event.event_id)
        if key not in seen:
            seen.add(key)
            out.append(event)
    return out


def naive_contributions(
    events: Iterable[LeadEvent], rules: RuleSet, at_ms: int
) -> dict[str, float]:
    """Rule id -> capped contribution at ``at_ms``, straight from the spec: the sum over
    applied (de-duplicated) events matching the rule of ``points * 2**(-(t - s)/h)``,
    clamped to the rule's cap. Rules that never matched are absent."""
    totals: dict[str, float] = {}
    for event in dedupe(events):
        for rule in rules.by_event.get(rule_event_of(event), ()):
            if rule.matches(event.field_value):
                elapsed = at_ms - event.occurred_at_ms
                # a score_adjusted brings its own points (the adjustment rule's are 1)
                points = event.points if isinstance(event, ScoreAdjusted) else rule.points
                value = points * 2.0 ** (-elapsed / rule.half_life_ms)
                totals[rule.id] = totals.get(rule.id, 0.0) + value
    return {rule_id: clamp(v, rules.by_id[rule_id].cap) for rule_id, v in totals.items()}


def naive_score(events: Iterable[LeadEvent], rules: RuleSet, at_ms: int) -> float:
    """Brute-force score of one lead at ``at_ms`` (see :func:`naive_contributions`)."""
    return sum(naive_contributions(events, rules, at_ms).values())


def run_events(
    events: Iterable[LeadEvent],
    rules: RuleSet,
    *,
    batch_size: int = 1,
    positions: Iterable[Position | None] | None = None,
) -> tuple[MemoryStore, list[Crossing]]:
    """Feed a log to a fresh MemoryStore in batches; returns the store and all crossings."""
    event_list = list(events)
    pos = list(positions) if positions is not None else [None] * len(event_list)
    items = list(zip(event_list, pos, strict=True))
    store = MemoryStore(rules)
    crossings: list[Crossing] = []
    for start in range(0, len(items), batch_size):
        crossings.extend(store.apply_batch_sync(items[start : start + batch_size]).crossings)
    return store, crossings


# --------------------------------------------------------------------------- value pools
# Small pools, so that random rules and random events actually meet.

URLS = (
    "https://www.example.com/",
    "https://www.example.com/pricing",
    "https://WWW.EXAMPLE.COM/Pricing/Enterprise",
    "https://www.example.com/careers",
    "https://www.example.com/blog/42",
    "https://www.example.com/docs/api",
)
ASSET_TYPES = ("ebook", "whitepaper", "WhitePaper", "pricing", "case-study")
FORM_IDS = ("demo", "contact-sales", "newsletter", "trial")
CAMPAIGNS = ("spring-launch", "nov-newsletter")
UTM_SOURCES = ("google", "Google", "linkedin", "newsletter")
COMPANY_SIZES = ("1-10", "11-50", "51-200", "201-1000", "1001-5000")
COUNTRIES = ("US", "DE", "GB", "BR", "IN")
EMAILS = ("jane@gmail.com", "bob@acme.example", "x@Yahoo.com", "cto@bigcorp.example")
SENIORITIES = ("individual", "manager", "director", "c-level")
JOB_TITLES = ("Student", "Marketing Intern", "CTO", "Head of Sales")

#: The built-in input event types (``track`` events come by name: :data:`TRACK_NAMES`).
EVENT_TYPES = BUILT_IN_TYPES
#: Names of track events in random rule sets and logs (with numeric properties).
TRACK_NAMES = ("Product Added", "Trial Started")
PRICES = (5, 19.99, 50, 120, "50")

#: Conditions a random rule may carry, per event type (all valid for that type).
RULE_CONDITIONS: dict[str, tuple[dict[str, Any], ...]] = {
    "page_view": (
        {},
        {"url_contains": "/PRICING"},
        {"url_contains": "/careers"},
        {"url_regex": r"/blog/\d+$"},
        {"properties.utm_source": "google"},
        {"where": {"properties.utm_source": ["linkedin", "newsletter"]}},
    ),
    "email_open": ({}, {"campaign_id": "spring-launch"}),
    "email_click": ({}, {"contains": {"url": ["pricing", "docs"]}}),
    "download": (
        {},
        {"asset_type": ["ebook", "whitepaper"]},
        {"unless": {"asset_type": "pricing"}},
    ),
    "form_submit": ({}, {"form_id": ["demo", "contact-sales"]}),
    "webinar": ({}, {"status": "attended"}, {"status": "registered"}),
    "unsubscribe": ({},),
    "lead_profile": ({"unless": {"country": ["US", "GB", "DE"]}},),
    "Product Added": (
        {},
        {"where": {"properties.price": {"gte": 50}}},
        {"properties.price": {"between": [10, 60]}},
        {"where": {"properties.price": {"lt": 20, "exists": True}}},
    ),
    "Trial Started": ({}, {"where": {"properties.plan": {"exists": False}}}),
}

#: Fit rules a random rules file may carry.
FIT_RULES: tuple[dict[str, Any], ...] = (
    {"id": "fit-size", "company_size": ["51-200", "201-1000", "1001-5000"], "points": 20},
    {"id": "fit-senior", "seniority": ["director", "c-level"], "points": 15},
    {"id": "fit-free-mail", "email_domain": ["gmail.com", "yahoo.com"], "points": -20},
    {"id": "fit-student", "contains": {"job_title": ["student", "intern"]}, "points": -30},
    {"id": "fit-country", "unless": {"country": ["US", "GB", "DE"]}, "points": -15},
    {"id": "fit-plan", "properties.plan": ["enterprise", "team"], "points": 12},
    {"id": "fit-seats", "where": {"properties.seats": {"gte": 50}}, "points": 8},
)

#: Half-lives of random rule sets: short enough that decay matters over a log's span.
HALF_LIVES = ("20m", "1h", "90m", "3h", "1d")


# --------------------------------------------------------------------------- strategies


@st.composite
def rule_sets(
    draw: st.DrawFn,
    *,
    max_rules: int = 6,
    fit: bool | None = None,
    caps: bool = True,
    event_types: Sequence[str] = EVENT_TYPES,
    version: str = "prop-1",
) -> RuleSet:
    """Small random RuleSets: mixed half-lives, negative points, caps, optional fit section
    and ``min_grade`` (``fit=None``: maybe; True/False: always/never). ``caps=False``
    leaves caps out. Thresholds are scaled so that random logs cross them often."""
    n = draw(st.integers(1, max_rules))
    rules: list[dict[str, Any]] = []
    for i in range(n):
        event_type = draw(st.sampled_from((*event_types, *TRACK_NAMES)))
        rule: dict[str, Any] = {"id": f"r{i}-{event_type}", "event": event_type}
        if i == 0:
            # One broad positive rule, so that random logs do make leads hot.
            rule["points"] = draw(st.one_of(st.integers(15, 60), st.floats(15, 60)))
        else:
            rule.update(draw(st.sampled_from(RULE_CONDITIONS[event_type])))
            rule["points"] = draw(
                st.one_of(
                    st.integers(1, 60),
                    st.integers(-40, -1),
                    st.floats(0.5, 60),
                    st.floats(-40, -0.5),
                )
            )
        if draw(st.booleans()):
            rule["half_life"] = draw(st.sampled_from(HALF_LIVES))
        cap = draw(st.sampled_from((None, None, 10, 25, 60))) if caps else None
        if cap is not None:
            rule["cap"] = cap
        rules.append(rule)
    hot = draw(st.integers(15, 70))
    cool = hot - draw(st.integers(0, min(40, hot - 1)))
    with_fit = draw(st.booleans()) if fit is None else fit
    fit_section = None
    min_grade = None
    if with_fit:
        chosen = draw(
            st.lists(
                st.sampled_from(FIT_RULES), min_size=1, max_size=4, unique_by=lambda r: r["id"]
            )
        )
        fit_section = {"grades": {"A": 30, "B": 10, "C": 0}, "rules": chosen}
        min_grade = draw(st.sampled_from((None, None, "C", "B")))
    return rules_from(
        rules,
        hot=hot,
        cool=cool,
        half_life=draw(st.sampled_from(HALF_LIVES)),
        version=version,
        min_grade=min_grade,
        fit=fit_section,
        source="random.yaml",
    )


@st.composite
def rules_and_logs(
    draw: st.DrawFn,
    *,
    lead_ids: Sequence[str] = ("lead-1",),
    n: tuple[int, int] | int = (0, 25),
    span_ms: int = 2 * DAY_MS,
    late: bool = True,
    duplicates: bool = True,
    fit: bool | None = None,
    caps: bool = True,
) -> tuple[RuleSet, list[LeadEvent]]:
    """A random RuleSet and a log whose events are mostly of the types it scores (so that
    leads do become hot and cool): see :func:`rule_sets` and :func:`event_logs`."""
    rules = draw(rule_sets(fit=fit, caps=caps))
    favour = sorted(rules.by_event)
    if rules.has_fit:
        favour.append("lead_profile")
    log = draw(
        event_logs(
            lead_ids=lead_ids,
            n=n,
            span_ms=span_ms,
            late=late,
            duplicates=duplicates,
            favour=favour,
        )
    )
    return rules, log


@st.composite
def event_fields(draw: st.DrawFn, event_type: str) -> dict[str, Any]:
    """Type-specific fields drawn from the pools above."""
    fields: dict[str, Any] = {}
    if event_type == "page_view":
        fields["url"] = draw(st.sampled_from(URLS))
    elif event_type == "email_open":
        fields["campaign_id"] = draw(st.sampled_from((None, *CAMPAIGNS)))
    elif event_type == "email_click":
        fields["url"] = draw(st.sampled_from(URLS))
        fields["campaign_id"] = draw(st.sampled_from(CAMPAIGNS))
    elif event_type == "download":
        fields["asset_id"] = draw(st.sampled_from(("wp-1", "ebook-2", "prices")))
        fields["asset_type"] = draw(st.sampled_from((None, *ASSET_TYPES)))
    elif event_type == "form_submit":
        fields["form_id"] = draw(st.sampled_from(FORM_IDS))
    elif event_type == "webinar":
        fields["webinar_id"] = "webinar-1"
        fields["status"] = draw(st.sampled_from(("registered", "attended")))
    elif event_type == "unsubscribe":
        fields["list_id"] = draw(st.sampled_from((None, "newsletter")))
    elif event_type == "score_adjusted":  # a control event (leadscore adjust)
        fields["points"] = draw(st.sampled_from((-40, -7.5, 5, 25, 60)))
        fields["reason"] = "by hand"
        fields["author"] = "sales"
    elif event_type in TRACK_NAMES:
        properties: dict[str, Any] = {"price": draw(st.sampled_from(PRICES))}
        if draw(st.booleans()):
            properties["plan"] = "pro"
        return {"event": event_type, "properties": properties}
    elif event_type == "lead_profile":
        for name, pool in (
            ("email", EMAILS),
            ("company_size", COMPANY_SIZES),
            ("country", COUNTRIES),
            ("seniority", SENIORITIES),
            ("job_title", JOB_TITLES),
        ):
            value = draw(st.sampled_from((None, *pool)))
            if value is not None:
                fields[name] = value
        if draw(st.booleans()):
            fields["properties"] = {
                "plan": draw(st.sampled_from(("free", "team", "Enterprise"))),
                "seats": draw(st.sampled_from((3, 50, 51.5, "80"))),
            }
    if event_type != "lead_profile" and draw(st.booleans()):
        fields["properties"] = {"utm_source": draw(st.sampled_from(UTM_SOURCES))}
    return fields


@st.composite
def event_logs(
    draw: st.DrawFn,
    *,
    lead_ids: Sequence[str] = ("lead-1",),
    n: tuple[int, int] | int = (0, 25),
    start_ms: int = BASE_MS,
    span_ms: int = 2 * DAY_MS,
    event_types: Sequence[str] = EVENT_TYPES,
    late: bool = True,
    duplicates: bool = True,
    favour: Sequence[str] = (),
) -> list[LeadEvent]:
    """A log of valid events in *arrival* order: timestamps within
    ``[start_ms, start_ms + span_ms]``, some events arriving late (after events that
    happened later), and some re-sent (exact copies of an earlier event: same event_id).

    ``n`` is the number of distinct events (an int, or an inclusive ``(min, max)``).
    Event types are drawn from ``event_types``; three times in four from ``favour``
    instead, when given (e.g. the types a rule set scores)."""
    lo, hi = (n, n) if isinstance(n, int) else n
    count = draw(st.integers(lo, hi))
    # Activity comes in bursts (sessions) separated by quiet spells, so that points pile
    # up (leads get hot) and then decay (leads cool).
    sessions = draw(st.lists(st.integers(0, span_ms), min_size=1, max_size=4))
    burst_ms = max(1, min(span_ms, 45 * MINUTE_MS))
    keyed: list[tuple[int, int, LeadEvent]] = []
    for i in range(count):
        if favour and draw(st.integers(0, 3)) > 0:
            event_type = draw(st.sampled_from(favour))
        else:
            event_type = draw(st.sampled_from(event_types))
        if draw(st.integers(0, 3)) == 0:  # now and then, any time at all
            occurred = start_ms + draw(st.integers(0, span_ms))
        else:
            session = draw(st.sampled_from(sessions))
            occurred = start_ms + min(span_ms, session + draw(st.integers(0, burst_ms)))
        lead_id = draw(st.sampled_from(lead_ids))
        fields = draw(event_fields(event_type))
        if event_type in TRACK_NAMES:
            event_type = "track"
        event = make_event(event_type, lead_id, occurred, event_id=f"e{i}", **fields)
        delay = draw(st.one_of(st.just(0), st.integers(1, span_ms))) if late else 0
        keyed.append((occurred + delay, i, event))
    if duplicates and keyed:
        resend = draw(
            st.lists(
                st.tuples(st.integers(0, count - 1), st.integers(0, span_ms)),
                max_size=max(1, count // 3),
            )
        )
        for j, (index, extra) in enumerate(resend):
            arrival, _, original = keyed[index]
            keyed.append((arrival + extra, count + j, original))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [event for _, _, event in keyed]


@st.composite
def curve_terms(
    draw: st.DrawFn,
    *,
    max_terms: int = 4,
    half_lives: Sequence[int] | None = None,
    negative: bool = True,
    caps: bool = True,
) -> list[Term]:
    """Terms for a :class:`tests.decay_curve.Curve` with landmark 0 and *small* half-lives
    (milliseconds), so that a brute-force scan of every millisecond is cheap."""
    n = draw(st.integers(1, max_terms))
    hl_strategy = st.sampled_from(half_lives) if half_lives else st.integers(3, 400)
    terms: list[Term] = []
    for i in range(n):
        magnitude = draw(st.floats(0.5, 200, allow_nan=False))
        sign = -1.0 if negative and draw(st.integers(0, 2)) == 0 else 1.0
        cap = draw(st.sampled_from((None, None, 5.0, 30.0, 80.0))) if caps else None
        terms.append(Term(f"t{i}", sign * magnitude, draw(hl_strategy), cap))
    return terms


# --------------------------------------------------------------------------- random logs

_TYPE_WEIGHTS: dict[str, tuple[tuple[str, float], ...]] = {
    # Browsing leads: mostly page views and emails.
    "browsing": (
        ("page_view", 60),
        ("email_open", 20),
        ("email_click", 7),
        ("download", 4),
        ("form_submit", 1),
        ("webinar", 2),
        ("unsubscribe", 1.5),
        ("lead_profile", 4.5),
    ),
    # Buying leads: pricing pages, downloads, demo requests.
    "buying": (
        ("page_view", 45),
        ("email_open", 10),
        ("email_click", 12),
        ("download", 12),
        ("form_submit", 8),
        ("webinar", 6),
        ("unsubscribe", 0.5),
        ("lead_profile", 6.5),
    ),
}

_PAGES = (
    ("https://www.example.com/", 25),
    ("https://www.example.com/blog/lead-scoring-101", 20),
    ("https://www.example.com/product", 15),
    ("https://www.example.com/pricing", 12),
    ("https://www.example.com/docs/getting-started", 10),
    ("https://www.example.com/careers", 4),
    ("https://www.example.com/customers", 8),
    ("https://www.example.com/pricing/enterprise", 6),
)


def _weighted(rng: random.Random, options: Sequence[tuple[Any, float]]) -> Any:
    values = [value for value, _ in options]
    weights = [weight for _, weight in options]
    return rng.choices(values, weights=weights)[0]


def _random_event(
    rng: random.Random, event_id: str, lead_id: str, at_ms: int, event_type: str
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if event_type == "page_view":
        fields["url"] = _weighted(rng, _PAGES)
        fields["session_id"] = f"sess-{rng.randrange(16**6):06x}"
        if rng.random() < 0.3:
            fields["properties"] = {"utm_source": rng.choice(("google", "linkedin", "email"))}
    elif event_type == "email_open":
        fields["campaign_id"] = rng.choice(CAMPAIGNS)
        fields["email_id"] = f"eml-{rng.randrange(1000)}"
    elif event_type == "email_click":
        fields["url"] = _weighted(rng, _PAGES)
        fields["campaign_id"] = rng.choice(CAMPAIGNS)
    elif event_type == "download":
        kind = rng.choice(("whitepaper", "ebook", "case-study", "pricing"))
        fields["asset_id"] = f"{kind}-{rng.randrange(20)}"
        fields["asset_type"] = kind
    elif event_type == "form_submit":
        fields["form_id"] = _weighted(
            rng, (("newsletter", 50), ("demo", 20), ("contact-sales", 10), ("trial", 20))
        )
        fields["url"] = "https://www.example.com/contact"
    elif event_type == "webinar":
        fields["webinar_id"] = f"web-{rng.randrange(5)}"
        fields["status"] = rng.choice(("registered", "attended"))
    elif event_type == "unsubscribe":
        fields["list_id"] = rng.choice(("newsletter", None))
    elif event_type == "lead_profile":
        fields["email"] = f"{lead_id}@{rng.choice(('gmail.com', 'acme.example', 'corp.example'))}"
        fields["company_size"] = rng.choice(COMPANY_SIZES)
        fields["country"] = rng.choice(("US", "DE", "GB", "FR", "BR", "IN"))
        fields["seniority"] = rng.choice(SENIORITIES)
        if rng.random() < 0.5:
            fields["job_title"] = rng.choice(JOB_TITLES)
    return event_dict(event_type, lead_id, at_ms, event_id, **fields)


def generate_event_log(
    seed: int,
    n_events: int,
    n_leads: int,
    *,
    start_ms: int = BASE_MS,
    span_ms: int = 30 * DAY_MS,
    late_fraction: float = 0.05,
    duplicate_fraction: float = 0.02,
    max_late_ms: int = 3 * DAY_MS,
    buying_fraction: float = 0.1,
    lead_prefix: str = "lead-",
) -> list[dict[str, Any]]:
    """A realistic random event log as JSON-able dicts, in arrival order, the same for the
    same arguments.

    * ``n_events`` messages over ``span_ms`` from ``start_ms``, for ``n_leads`` leads whose
      activity is skewed (a few leads are much busier); about ``buying_fraction`` of the
      leads behave like buyers (pricing pages, downloads, demo requests) and tend to
      become hot under the default rules;
    * about ``late_fraction`` of the messages arrive late: their ``occurred_at`` lies up
      to ``max_late_ms`` before the newest event time already sent;
    * about ``duplicate_fraction`` of the messages are re-sends: an exact copy (same
      ``event_id``) of an earlier message.

    Event ids are ``evt-{seed}-{n:08d}``; lead ids ``{lead_prefix}{n:05d}``. Each dict
    validates with ``EVENT_ADAPTER.validate_json(json.dumps(d))`` (see
    :func:`event_from_dict`).
    """
    if n_leads < 1 and n_events > 0:
        raise ValueError("n_leads must be at least 1")
    rng = random.Random(seed)
    leads = [f"{lead_prefix}{i:05d}" for i in range(n_leads)]
    weights = [1.0 / (i + 1) ** 0.8 for i in range(n_leads)]  # Zipf-like activity
    rng.shuffle(weights)
    kind = {lead: ("buying" if rng.random() < buying_fraction else "browsing") for lead in leads}
    mean_gap = span_ms / max(n_events, 1)
    now = start_ms
    sent: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for n in range(n_events):
        if sent and rng.random() < duplicate_fraction:
            out.append(dict(rng.choice(sent[-1000:])))
            continue
        now += round(rng.expovariate(1.0 / mean_gap)) if mean_gap > 0 else 0
        at = now
        if rng.random() < late_fraction:
            at = max(start_ms, now - rng.randint(1, max_late_ms))
        lead = rng.choices(leads, weights=weights)[0]
        event_type = _weighted(rng, _TYPE_WEIGHTS[kind[lead]])
        event = _random_event(rng, f"evt-{seed}-{n:08d}", lead, at, event_type)
        sent.append(event)
        out.append(event)
    return out
