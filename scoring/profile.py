"""A lead's profile and fit: the latest value of each fit attribute (from ``lead_profile``
events: its fields, and the ``properties.NAME`` that fit rules test, see
:attr:`scoring.rules.RuleSet.profile_fields`), and the fit score and A-D grade that the
rules file's fit rules give it.

Fit points do not decay. The newest value of an attribute wins by ``occurred_at`` (ties: the
larger event id), so arrival order does not matter. ``thresholds.min_grade`` keeps poorly
fitting leads from being hot, and cools a hot lead whose grade falls below it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from schemas.events import PROFILE_FIELDS, LeadProfile

from .rules import RuleSet
from .state import LeadState, ProfileEntry


def lead_fit(profile: Mapping[str, ProfileEntry], rules: RuleSet) -> tuple[float, bool]:
    """``(fit score, whether its grade lets the lead be hot)`` for a profile."""
    if not rules.has_fit:
        return 0.0, rules.grade_allows_hot(None)
    values = {name: entry[2] for name, entry in profile.items()}
    return rules.fit_of(values)


def fit_score(state: LeadState, rules: RuleSet) -> float:
    """Sum of the fit rules that match the lead's profile (fit points do not decay)."""
    return lead_fit(state.profile, rules)[0]


def fit_grade(state: LeadState, rules: RuleSet) -> str | None:
    """A-D grade from the fit rules, or None when the rules file has no fit section."""
    if not rules.has_fit:
        return None
    return rules.grade(fit_score(state, rules))


def merge_profile(
    profile: Mapping[str, ProfileEntry],
    event: LeadProfile,
    names: Sequence[str] = PROFILE_FIELDS,
) -> dict[str, ProfileEntry]:
    """The profile after ``event``: the newest value of each of ``names`` (the rules'
    :attr:`~scoring.rules.RuleSet.profile_fields`) wins (by ``occurred_at``, then event
    id), so arrival order does not matter."""
    return merge_profile_values(
        profile, event.occurred_at_ms, event.event_id, profile_values(event, names), names
    )


def profile_values(event: LeadProfile, names: Sequence[str] = PROFILE_FIELDS) -> tuple[Any, ...]:
    """The event's values of ``names`` (fields, or ``properties.NAME``), in that order."""
    return tuple(event.field_value(name) for name in names)


def merge_profile_values(
    profile: Mapping[str, ProfileEntry],
    occurred_ms: int,
    event_id: str,
    values: Sequence[Any],
    names: Sequence[str] = PROFILE_FIELDS,
) -> dict[str, ProfileEntry]:
    """:func:`merge_profile` from the values alone (replay's native reader hands them
    over without building a pydantic model); ``names`` start with :data:`PROFILE_FIELDS`."""
    merged = dict(profile)
    stamp = (occurred_ms, event_id)
    has_email = values[0] is not None  # PROFILE_FIELDS[0] is "email"
    for name, value in zip(names, values, strict=True):
        if value is None and not (name == "email_domain" and has_email):
            continue  # not provided: keep what we know (email_domain follows email)
        current = merged.get(name)
        if current is None or (current[0], current[1]) <= stamp:
            merged[name] = (occurred_ms, event_id, value)
    return merged


assert PROFILE_FIELDS[0] == "email", "merge_profile_values relies on it"
