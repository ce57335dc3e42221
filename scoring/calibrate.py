"""Learn the points of each rule from history (``leadscore calibrate``). Pure: events,
conversions and a base rule set in, new points out; the CLI reads and writes the files.

The model. A lead's score is linear in its rules' decayed contributions: with points
``p_r``, ``score(t) = sum_r p_r * x_r(t)`` where ``x_r(t)`` is rule ``r``'s contribution at
``t`` *per point* (each matching event counts ``2 ** -(age / half_life)``; a rule's
``cap`` limits it to ``cap / |p_r|`` events' worth). ``x_r(t)`` is computed with the
engine itself (:func:`scoring.state_machine.apply_event` and
:func:`scoring.state_machine.explain` on a copy of the rules with 1 point per rule). So we fit

    P(lead converts within W after t) = sigmoid(b + sum_r w_r * x_r(t))

by logistic regression, and the new points are ``p'_r = k * w_r``.

* **Samples** (all from the training period ``<= until``, never after): for every
  conversion at ``c`` of a lead with earlier events, the moment just before it (``c - 1
  ms``; positive); and for every lead, ``controls_per_lead`` random moments between its
  first event and ``until - W`` (positive when it converts in ``(t, t + W]``). This is
  case-control sampling: it shifts the intercept ``b`` only, which the points don't use.
* **Regularisation** pulls the weights towards the base rules' points (``w0 = beta * p``,
  ``beta`` fitted on the base score alone): a rule the data says little about keeps its
  base weight instead of dropping to 0. Its strength is chosen on the last quarter (in
  time) of the training samples, the model fitted on the first three quarters: time order
  is never shuffled. The final fit uses all training samples.
* **Scale** ``k``: the hot threshold keeps its meaning as "the alert volume": ``k`` is
  chosen so that the share of control moments at or above ``hot`` is the same as with the
  base rules (falling back to keeping the total absolute points when the base rules never
  reach ``hot`` on them). Thresholds, half-lives and conditions are unchanged; caps are
  scaled with their rule's points (a cap stays "at most N events' worth").
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.events import CONTROL_TYPES, LeadEvent

from .backtest import roc_auc
from .rules import RuleSet, Thresholds
from .state import LeadState
from .state_machine import apply_event, explain

Array = npt.NDArray[np.float64]

#: Regularisation strengths tried (penalty ``l2/2 * |w - w0|^2`` on the mean log-loss).
L2_GRID: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: Share of the training samples (the latest ones) used to choose the strength.
VALIDATION_SHARE = 0.25
#: Suffix of the calibrated rules' version.
VERSION_SUFFIX = "-calibrated"


class CalibrationError(ValueError):
    """The data cannot support a calibration (e.g. no conversion before ``until``)."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """New points and how they were found."""

    base_version: str
    version: str
    #: Rule id -> new points / base points, in the rules' order.
    points: Mapping[str, float]
    base_points: Mapping[str, float]
    #: Rule id -> new cap (only rules with a cap).
    caps: Mapping[str, float]
    until_ms: int
    window_ms: int
    samples: int
    positives: int
    #: Samples per lead kind: conversion moments and random control moments.
    conversion_moments: int
    control_moments: int
    #: ``(l2, validation log-loss, validation AUC)`` per strength tried.
    validation: tuple[tuple[float, float, float | None], ...]
    l2: float
    #: Logistic weight per rule (per unit of contribution), before scaling.
    weights: Mapping[str, float]
    #: Slope of the base score alone (the prior's scale) and the final scale ``k``.
    prior_slope: float
    scale: float
    #: Share of control moments at or above ``hot`` with the base rules (the alert volume).
    hot_share: float

    def describe(self) -> list[str]:
        """A few lines for the terminal."""
        lines = [
            f"trained on {self.samples:,} samples ({self.positives:,} positive): "
            f"{self.conversion_moments:,} conversion moments, "
            f"{self.control_moments:,} random lead moments",
            "regularisation (validation log-loss / AUC on the latest "
            f"{VALIDATION_SHARE:.0%} of training samples): "
            + ", ".join(
                f"{l2:g}: {loss:.4f}/{'n/a' if auc is None else f'{auc:.3f}'}"
                for l2, loss, auc in self.validation
            )
            + f"; chose {self.l2:g}",
            f"scale: {self.scale:.4g} points per logit unit (base alert volume: "
            f"{self.hot_share:.2%} of lead moments at or above hot)",
            f"points ({self.base_version} -> {self.version}), largest changes first:",
        ]
        changes = sorted(self.points, key=lambda r: -abs(self.points[r] - self.base_points[r]))
        for rule_id in changes[:20]:
            lines.append(
                f"  {rule_id:<28} {self.base_points[rule_id]:>9.2f} -> {self.points[rule_id]:>9.2f}"
            )
        if len(changes) > 20:
            lines.append(f"  ... and {len(changes) - 20} more")
        return lines


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True, slots=True)
class Samples:
    """Design matrix: one row per (lead, moment)."""

    times_ms: npt.NDArray[np.int64]
    features: Array  # (n, rules): contribution per point of each rule
    labels: Array  # 1.0 = converts within the window
    is_control: npt.NDArray[np.bool_]


def unit_rules(base: RuleSet) -> RuleSet:
    """``base`` with 1 point per rule and caps in events' worth (``cap / |points|``), and
    thresholds no score reaches: :func:`~scoring.state_machine.explain` on it gives the features."""
    rules = tuple(
        replace(
            rule,
            points=1.0,
            cap=rule.cap / abs(rule.points) if rule.cap is not None and rule.points else None,
        )
        for rule in base.rules
    )
    return replace(
        base,
        version=base.version + "-unit",
        rules=rules,
        thresholds=Thresholds(hot=math.inf, cool=math.inf, min_grade=None),
    )


def _training_events(events: Sequence[LeadEvent], until_ms: int) -> dict[str, list[LeadEvent]]:
    """Per lead, its first occurrence of each event id (as the engine dedupes), among the
    events that occurred by ``until_ms``, sorted by ``occurred_at`` (ties: read order).
    Control events (adjustments, resets, erasures by hand) are left out: the weights are
    learnt from what leads did."""
    by_lead: dict[str, list[LeadEvent]] = {}
    seen: dict[str, set[str]] = {}
    for event in events:
        if event.occurred_at_ms > until_ms or event.type in CONTROL_TYPES:
            continue
        ids = seen.setdefault(event.lead_id, set())
        if event.event_id in ids:
            continue
        ids.add(event.event_id)
        by_lead.setdefault(event.lead_id, []).append(event)
    for lead_events in by_lead.values():
        lead_events.sort(key=lambda e: e.occurred_at_ms)
    return by_lead


def build_samples(
    events: Sequence[LeadEvent],
    conversions: Mapping[str, Sequence[int]],
    base: RuleSet,
    *,
    until_ms: int,
    window_ms: int,
    controls_per_lead: int = 2,
    seed: int = 0,
) -> Samples:
    """Sample moments and their features, from data up to ``until_ms`` only."""
    unit = unit_rules(base)
    index = {rule.id: i for i, rule in enumerate(base.rules)}
    rng = random.Random(seed)
    times: list[int] = []
    rows: list[list[float]] = []
    labels: list[float] = []
    controls: list[bool] = []
    for lead_id, lead_events in sorted(_training_events(events, until_ms).items()):
        first = lead_events[0].occurred_at_ms
        lead_conversions = [c for c in conversions.get(lead_id, ()) if c <= until_ms]
        moments: list[tuple[int, float, bool]] = [
            (c - 1, 1.0, False) for c in lead_conversions if c - 1 >= first
        ]
        if first <= until_ms - window_ms:
            for _ in range(controls_per_lead):
                t = rng.randint(first, until_ms - window_ms)
                hit = any(t < c <= t + window_ms for c in lead_conversions)
                moments.append((t, 1.0 if hit else 0.0, True))
        moments.sort()
        state: LeadState | None = None
        applied = 0
        for t, label, control in moments:
            while applied < len(lead_events) and lead_events[applied].occurred_at_ms <= t:
                state = apply_event(state, lead_events[applied], unit).state
                applied += 1
            row = [0.0] * len(index)
            if state is not None:
                for part in explain(state, unit, t):
                    row[index[part.rule_id]] = part.points
            times.append(t)
            rows.append(row)
            labels.append(label)
            controls.append(control)
    return Samples(
        times_ms=np.asarray(times, dtype=np.int64),
        features=np.asarray(rows, dtype=np.float64).reshape(len(rows), len(index)),
        labels=np.asarray(labels, dtype=np.float64),
        is_control=np.asarray(controls, dtype=np.bool_),
    )


# --------------------------------------------------------------------------- the model


def _log1pexp(z: Array) -> Array:
    return np.logaddexp(0.0, z)


def _sigmoid(z: Array) -> Array:
    return np.exp(-np.logaddexp(0.0, -z))


def mean_log_loss(x: Array, y: Array, intercept: float, w: Array) -> float:
    """Mean negative log-likelihood of labels ``y`` under the logistic model."""
    z = intercept + x @ w
    return float(np.mean(_log1pexp(z) - y * z))


def fit_logistic(
    x: Array,
    y: Array,
    *,
    l2: float,
    prior: Array | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[float, Array]:
    """``(intercept, weights)`` minimising mean log-loss + ``l2/2 * |w - prior|^2``
    (intercept not penalised), by Newton's method with step halving."""
    n, d = x.shape
    prior = np.zeros(d) if prior is None else prior
    rate = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
    theta = np.concatenate(([math.log(rate / (1 - rate))], prior)).astype(np.float64)
    design = np.hstack((np.ones((n, 1)), x))
    penalty = np.full(d + 1, l2)
    penalty[0] = 0.0
    target = np.concatenate(([0.0], prior))

    def objective(t: Array) -> float:
        z = design @ t
        diff = t - target
        return float(np.mean(_log1pexp(z) - y * z) + 0.5 * np.sum(penalty * diff * diff))

    current = objective(theta)
    for _ in range(max_iter):
        z = design @ theta
        p = _sigmoid(z)
        gradient = design.T @ (p - y) / n + penalty * (theta - target)
        curvature = p * (1 - p)
        hessian = (design.T * curvature) @ design / n + np.diag(penalty)
        hessian[np.diag_indices_from(hessian)] += 1e-12  # never exactly singular
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-8:
            candidate = theta - size * step
            value = objective(candidate)
            if value <= current:
                break
            size /= 2
        else:
            break  # no descent possible: converged as far as floats allow
        improvement = current - value
        theta, current = candidate, value
        if improvement < tol:
            break
    return float(theta[0]), theta[1:]


def _choose_l2(
    samples: Samples, prior: Array, grid: Sequence[float]
) -> tuple[float, tuple[tuple[float, float, float | None], ...]]:
    """Fit on the earliest samples, score on the latest: the strength with the lowest
    validation log-loss (ties: the stronger)."""
    order = np.argsort(samples.times_ms, kind="stable")
    cut = int(len(order) * (1 - VALIDATION_SHARE))
    fit_rows, val_rows = order[:cut], order[cut:]
    x, y = samples.features, samples.labels
    results: list[tuple[float, float, float | None]] = []
    if len(val_rows) == 0 or not 0 < y[fit_rows].sum() < len(fit_rows):
        middle = grid[len(grid) // 2]
        return middle, ()
    for l2 in grid:
        intercept, w = fit_logistic(x[fit_rows], y[fit_rows], l2=l2, prior=prior)
        loss = mean_log_loss(x[val_rows], y[val_rows], intercept, w)
        scores = (x[val_rows] @ w).tolist()
        auc = roc_auc(scores, [bool(v) for v in y[val_rows]])
        results.append((l2, loss, auc))
    best = min(results, key=lambda r: (round(r[1], 12), -r[0]))
    return best[0], tuple(results)


def _quantile_share(values: Array, share: float) -> float:
    """The value with ``share`` of ``values`` at or above it."""
    ordered = np.sort(values)[::-1]
    k = max(1, round(share * len(ordered)))
    return float(ordered[min(k, len(ordered)) - 1])


def calibrate_points(
    events: Sequence[LeadEvent],
    conversions: Mapping[str, Sequence[int]],
    base: RuleSet,
    *,
    until_ms: int,
    window_ms: int,
    seed: int = 0,
    controls_per_lead: int = 2,
    l2_grid: Sequence[float] = L2_GRID,
) -> Calibration:
    """Fit new points for ``base``'s behaviour rules from events and conversions up to
    ``until_ms`` (see the module docstring). Raises :class:`CalibrationError` when the
    training period has no positive or no negative sample."""
    samples = build_samples(
        events,
        conversions,
        base,
        until_ms=until_ms,
        window_ms=window_ms,
        controls_per_lead=controls_per_lead,
        seed=seed,
    )
    positives = int(samples.labels.sum())
    if positives == 0 or positives == len(samples.labels):
        raise CalibrationError(
            f"the training period (up to until) has {positives} positive sample(s) out of "
            f"{len(samples.labels)}: need both converting and non-converting moments "
            "(move --until later, or lengthen --window)"
        )
    base_points = np.asarray([rule.points for rule in base.rules], dtype=np.float64)
    base_score = samples.features @ base_points

    # The prior: the base rules' points, on the logit scale of their own score.
    _, slope = fit_logistic(base_score.reshape(-1, 1), samples.labels, l2=1e-6)
    beta = max(float(slope[0]), 0.0)
    prior = beta * base_points

    l2, validation = _choose_l2(samples, prior, l2_grid)
    _, weights = fit_logistic(samples.features, samples.labels, l2=l2, prior=prior)

    # Scale: keep the base alert volume on the control moments.
    hot = base.thresholds.hot
    control_base = base_score[samples.is_control]
    share = float(np.mean(control_base >= hot)) if len(control_base) else 0.0
    raw = samples.features[samples.is_control] @ weights
    scale = 0.0
    if share > 0 and len(raw):
        level = _quantile_share(raw, share)
        if level > 0:
            scale = hot / level
    if scale <= 0:
        total = float(np.sum(np.abs(weights)))
        scale = float(np.sum(np.abs(base_points))) / total if total > 0 else 1.0

    points = {
        rule.id: round(float(scale * w), 2) for rule, w in zip(base.rules, weights, strict=True)
    }
    caps = {}
    for rule in base.rules:
        if rule.cap is not None:
            new = points[rule.id]
            caps[rule.id] = (
                round(rule.cap * abs(new / rule.points), 2) if rule.points and new else rule.cap
            )
    return Calibration(
        base_version=base.version,
        version=base.version + VERSION_SUFFIX,
        points=points,
        base_points={rule.id: rule.points for rule in base.rules},
        caps={k: v for k, v in caps.items() if v > 0},
        until_ms=until_ms,
        window_ms=window_ms,
        samples=len(samples.labels),
        positives=positives,
        conversion_moments=int((~samples.is_control).sum()),
        control_moments=int(samples.is_control.sum()),
        validation=validation,
        l2=l2,
        weights={rule.id: float(w) for rule, w in zip(base.rules, weights, strict=True)},
        prior_slope=beta,
        scale=scale,
        hot_share=share,
    )


def calibrated_document(base_doc: Mapping[str, Any], calibration: Calibration) -> dict[str, Any]:
    """The base rules document (as parsed from YAML) with the new version, points and
    caps; everything else (conditions, half-lives, thresholds, fit section) unchanged."""
    doc = dict(base_doc)
    doc["version"] = calibration.version
    rules = []
    for raw in base_doc.get("rules", []):
        rule = dict(raw)
        rule_id = str(rule.get("id"))
        if rule_id in calibration.points:
            rule["points"] = calibration.points[rule_id]
            if rule_id in calibration.caps:
                rule["cap"] = calibration.caps[rule_id]
        rules.append(rule)
    doc["rules"] = rules
    return doc
