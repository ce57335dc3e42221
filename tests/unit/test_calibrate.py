"""Calibration (scoring/calibrate.py): the model finds the predictive rule, never looks past
``until``, keeps the alert volume, and writes a valid rules document."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from schemas.events import LeadEvent
from scoring.backtest import index_conversions
from scoring.calibrate import (
    VERSION_SUFFIX,
    CalibrationError,
    build_samples,
    calibrate_points,
    calibrated_document,
    fit_logistic,
    unit_rules,
)
from scoring.rules_file import build_ruleset
from tests.strategies import BASE_MS, DAY_MS, HOUR_MS, page_view

RULES_DOC: dict[str, Any] = {
    "version": "synthetic-1",
    "half_life": "1d",
    "thresholds": {"hot": 10, "cool": 5},
    "rules": [
        {"id": "pricing", "event": "page_view", "url_contains": "/pricing", "points": 5},
        {"id": "blog", "event": "page_view", "url_contains": "/blog", "points": 5},
        {
            "id": "careers",
            "event": "page_view",
            "url_contains": "/careers",
            "points": -5,
            "cap": 10,
        },
    ],
    "fit": {
        "grades": {"A": 10, "B": 5, "C": 0},
        "rules": [{"id": "de", "country": "DE", "points": 10}],
    },
}
UNTIL = BASE_MS + 14 * DAY_MS
WINDOW = DAY_MS


def _history(
    seed: int = 3, leads: int = 300, days: int = 20
) -> tuple[list[LeadEvent], list[tuple[str, int]]]:
    """Everyone reads the blog (noise); a third of the leads are buyers who look at the
    pricing page twice and convert a few hours later."""
    rng = random.Random(seed)
    events: list[LeadEvent] = []
    conversions: list[tuple[str, int]] = []
    for n in range(leads):
        lead = f"lead-{n:04d}"
        for _ in range(rng.randint(2, 8)):
            at = BASE_MS + rng.randrange(days * DAY_MS)
            events.append(page_view(lead, at, url="https://example.com/blog/post"))
        if rng.random() < 0.1:
            events.append(page_view(lead, BASE_MS + rng.randrange(days * DAY_MS), url="/careers"))
        if n % 3 == 0:
            at = BASE_MS + rng.randrange(DAY_MS, (days - 1) * DAY_MS)
            events.append(page_view(lead, at, url="https://example.com/pricing"))
            events.append(page_view(lead, at + HOUR_MS, url="https://example.com/pricing"))
            conversions.append((lead, at + HOUR_MS + rng.randrange(1, 6 * HOUR_MS)))
    events.sort(key=lambda e: e.occurred_at_ms)
    return events, conversions


@pytest.fixture(scope="module")
def history() -> tuple[list[LeadEvent], list[tuple[str, int]]]:
    return _history()


def _calibrate(events: list[LeadEvent], conversions: list[tuple[str, int]]) -> Any:
    base = build_ruleset(RULES_DOC)
    return calibrate_points(
        events, index_conversions(conversions), base, until_ms=UNTIL, window_ms=WINDOW
    )


def test_the_predictive_rule_gets_the_points(history: Any) -> None:
    result = _calibrate(*history)
    points = result.points
    assert points["pricing"] > 2 * abs(points["blog"]), points
    assert points["pricing"] > 0
    assert result.version == "synthetic-1" + VERSION_SUFFIX
    assert result.positives > 0 and result.samples > result.positives
    assert result.conversion_moments + result.control_moments == result.samples
    assert result.l2 in [l2 for l2, _, _ in result.validation]
    assert any("pricing" in line for line in result.describe())


def test_nothing_after_until_is_used(history: Any) -> None:
    events, conversions = history
    before = _calibrate(events, conversions)
    # After `until`, blog readers convert massively and pricing means nothing: ignored.
    late = [
        page_view(f"lead-{n:04d}", UNTIL + 1 + n * 1000, url="https://example.com/blog/x")
        for n in range(300)
    ]
    late_conversions = [(f"lead-{n:04d}", UNTIL + 2 + n * 1000) for n in range(300)]
    after = _calibrate(events + late, conversions + late_conversions)
    assert after.points == before.points
    assert after.samples == before.samples


def test_samples_come_from_the_training_period_only(history: Any) -> None:
    events, conversions = history
    samples = build_samples(
        events,
        index_conversions(conversions),
        build_ruleset(RULES_DOC),
        until_ms=UNTIL,
        window_ms=WINDOW,
    )
    assert samples.times_ms.max() <= UNTIL
    assert samples.times_ms[samples.is_control].max() <= UNTIL - WINDOW
    assert samples.features.shape == (len(samples.labels), 3)
    # conversion moments are all positive
    assert samples.labels[~samples.is_control].min() == 1.0


def test_alert_volume_is_kept(history: Any) -> None:
    events, conversions = history
    base = build_ruleset(RULES_DOC)
    result = _calibrate(events, conversions)
    samples = build_samples(
        events, index_conversions(conversions), base, until_ms=UNTIL, window_ms=WINDOW
    )
    controls = samples.features[samples.is_control]
    new_points = np.asarray([result.points[r.id] for r in base.rules])
    share = float(np.mean(controls @ new_points >= base.thresholds.hot))
    assert result.hot_share > 0
    assert share == pytest.approx(result.hot_share, abs=3 / len(controls))


def test_when_the_base_rules_are_never_hot_the_total_points_are_kept(history: Any) -> None:
    events, conversions = history
    doc = {**RULES_DOC, "thresholds": {"hot": 1000, "cool": 5}}
    result = calibrate_points(
        events,
        index_conversions(conversions),
        build_ruleset(doc),
        until_ms=UNTIL,
        window_ms=WINDOW,
    )
    assert result.hot_share == 0.0
    total = sum(abs(p) for p in result.points.values())
    assert total == pytest.approx(15.0, abs=0.05)  # 5 + 5 + 5 in the base rules


def test_calibrated_document_keeps_everything_but_points_and_version(history: Any) -> None:
    result = _calibrate(*history)
    doc = calibrated_document(RULES_DOC, result)
    assert doc["version"] == result.version
    assert [r["id"] for r in doc["rules"]] == ["pricing", "blog", "careers"]
    for old, new in zip(RULES_DOC["rules"], doc["rules"], strict=True):
        assert new["points"] == result.points[old["id"]]
        assert {k: v for k, v in new.items() if k not in ("points", "cap")} == {
            k: v for k, v in old.items() if k not in ("points", "cap")
        }
    # a cap stays "at most two events' worth"
    careers = doc["rules"][2]
    assert careers["cap"] == pytest.approx(2 * abs(careers["points"]), abs=0.01)
    assert doc["thresholds"] == RULES_DOC["thresholds"] and doc["fit"] == RULES_DOC["fit"]
    assert RULES_DOC["version"] == "synthetic-1"  # the base document is not modified
    rules = build_ruleset(doc)
    assert rules.by_id["pricing"].points == result.points["pricing"]


def test_no_conversion_before_until_is_an_error(history: Any) -> None:
    events, _ = history
    with pytest.raises(CalibrationError, match="positive"):
        _calibrate(events, [("lead-0000", UNTIL + 5)])


def test_unit_rules() -> None:
    unit = unit_rules(build_ruleset(RULES_DOC))
    assert {r.points for r in unit.rules} == {1.0}
    assert unit.by_id["careers"].cap == 2.0  # cap 10 at 5 points: two events' worth
    assert unit.by_id["pricing"].cap is None
    assert math.isinf(unit.thresholds.hot)
    assert unit.by_id["blog"].conditions == build_ruleset(RULES_DOC).by_id["blog"].conditions


def test_fit_logistic_recovers_known_weights() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 2))
    true_w = np.asarray([1.5, -0.7])
    y = (rng.random(20_000) < 1 / (1 + np.exp(-(-1.0 + x @ true_w)))).astype(np.float64)
    intercept, w = fit_logistic(x, y, l2=1e-8)
    assert intercept == pytest.approx(-1.0, abs=0.1)
    assert w == pytest.approx(true_w, abs=0.1)


def test_fit_logistic_strong_penalty_stays_at_the_prior() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 2))
    y = (rng.random(500) < 0.3).astype(np.float64)
    prior = np.asarray([2.0, -3.0])
    _, w = fit_logistic(x, y, l2=1e6, prior=prior)
    assert w == pytest.approx(prior, abs=1e-3)
    # a feature that is always 0 carries no information: it keeps its prior weight
    x[:, 1] = 0.0
    _, w = fit_logistic(x, y, l2=1e-3, prior=prior)
    assert w[1] == pytest.approx(-3.0)
