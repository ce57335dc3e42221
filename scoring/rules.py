r"""The rules model: compiled, immutable rules that the engine evaluates.

A :class:`RuleSet` is what a rules file becomes once :mod:`scoring.rules_file` has read and
validated it: behaviour rules (an event type, conditions, points, half-life, cap), fit
rules (conditions on profile attributes), thresholds and grade bands.

Conditions of a rule (all must hold), as compiled :class:`Condition`\ s:

* ``equals``: the field's value (or one item of a list value) is one of ``values``;
  strings compare case-insensitively;
* ``contains``: the field contains one of the texts (any case);
* ``regex``: the pattern matches somewhere in the text;
* ``unless``: the field is present and NOT one of ``values``;
* ``gt``, ``gte``, ``lt``, ``lte``: the field is a number (or a list holding one) above /
  at least / below / at most ``values[0]`` (text is never a number here);
* ``exists`` / ``missing``: the field is present / absent.

A condition on a field the event does not carry never holds (so ``unless`` does not fire for
leads who never told us their country), but ``missing``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.events import PROFILE_FIELDS, SCORE_ADJUSTED

from . import _native

#: Fit grades, best first.
GRADES: tuple[str, ...] = ("A", "B", "C", "D")


def normalise(value: Any) -> Any:
    """How rule values and event values are compared: strings case-folded."""
    return value.casefold() if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on one field. ``kind`` is ``equals`` (membership), ``contains``,
    ``regex``, ``unless``, a comparison (``gt``, ``gte``, ``lt``, ``lte``: with one number
    in ``values``), ``exists`` or ``missing``; ``values`` are pre-normalised (strings
    case-folded)."""

    field: str
    kind: Literal[
        "equals", "contains", "regex", "unless", "gt", "gte", "lt", "lte", "exists", "missing"
    ]
    values: tuple[Any, ...] = ()
    pattern: re.Pattern[str] | None = None

    def holds(self, value: Any) -> bool:
        if value is None:  # absent (or null)
            return self.kind == "missing"
        if self.kind == "equals" and isinstance(value, str):  # the common case, fast
            return value.casefold() in self.values
        values = value if isinstance(value, list) else (value,)
        compare = _COMPARE.get(self.kind)
        if compare is not None:
            return any(_is_number(v) and compare(v, self.values[0]) for v in values)
        if self.kind in ("exists", "missing"):
            return self.kind == "exists"
        if self.kind == "regex":
            assert self.pattern is not None
            return any(isinstance(v, str) and self.pattern.search(v) for v in values)
        normed = [normalise(v) for v in values]
        if self.kind == "equals":
            return any(v in self.values for v in normed)
        if self.kind == "unless":
            return not any(v in self.values for v in normed)
        if self.kind == "contains":
            return any(isinstance(v, str) and t in v for v in normed for t in self.values)
        raise ValueError(f"condition on {self.field!r}: unknown kind {self.kind!r}")


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda v, bound: v > bound,
    "gte": lambda v, bound: v >= bound,
    "lt": lambda v, bound: v < bound,
    "lte": lambda v, bound: v <= bound,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule: when all ``conditions`` hold, add ``points`` (fading with
    ``half_life_ms``; the rule's total contribution is clamped to +/- ``cap`` when read)."""

    id: str
    event: str | None  # None for fit rules
    points: float
    half_life_ms: int
    cap: float | None
    conditions: tuple[Condition, ...]

    def matches(self, get: Callable[[str], Any]) -> bool:
        """True when every condition holds for the values ``get(field)`` returns."""
        # A plain loop: measurably faster than all(<genexpr>) on the per-event hot path.
        for condition in self.conditions:  # noqa: SIM110
            if not condition.holds(get(condition.field)):
                return False
        return True


#: The rule every rules file gets for ``score_adjusted`` events (``leadscore adjust``):
#: each event brings its own points; they fade with ``adjustments.half_life``.
ADJUSTMENT_RULE_ID = "manual-adjustment"
#: ``adjustments: {half_life: none}``: 10,000 years, under 0.007 % a year; one formula for
#: every rule. (``top`` then bounds leads with the longest half-life: it reads more of the
#: rank index.)
NO_DECAY_HALF_LIFE_MS = 10_000 * 365 * 24 * 3600 * 1000

#: Signatures :meth:`RuleSet.match` remembers before it starts over.
MATCH_CACHE_SIZE = 65_536

#: ``dedupe_window`` of a rules file that does not set it: 7 days.
DEFAULT_DEDUPE_WINDOW_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Thresholds:
    hot: float
    cool: float
    min_grade: str | None = None


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A validated rules file, ready for the engine."""

    version: str
    half_life_ms: int
    thresholds: Thresholds
    rules: tuple[Rule, ...]
    fit_rules: tuple[Rule, ...] = ()
    grade_bands: tuple[tuple[str, float], ...] = (("A", 60.0), ("B", 30.0), ("C", 0.0))
    source: str = "<memory>"
    #: A re-sent event (same ``event_id``) is recognised while its lead's clock is at most
    #: this far past the event's ``occurred_at`` (event time, so replay agrees); a lead
    #: remembers the ids of that window only (docs/architecture.md, "Duplicates").
    dedupe_window_ms: int = DEFAULT_DEDUPE_WINDOW_MS
    #: How ``score_adjusted`` points fade (None: like :attr:`half_life_ms`). They are
    #: scored by one more rule of the engine, :data:`ADJUSTMENT_RULE_ID`, after
    #: :attr:`rules` (which lists the file's rules only).
    adjustment_half_life_ms: int | None = None
    # Derived lookups (filled in __post_init__): rules by event type, and id -> rule.
    by_event: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict, compare=False)
    by_id: Mapping[str, Rule] = field(default_factory=dict, compare=False)
    #: For event types with many rules: (field, value -> candidate rules, rules to always
    #: check); see :meth:`candidates`.
    equality_index: Mapping[str, _EqualityIndex] = field(default_factory=dict, compare=False)
    #: rule id -> (half_life_ms, cap): what the decay math needs, in one lookup.
    decay_params: Mapping[str, tuple[int, float | None]] = field(
        default_factory=dict, compare=False
    )
    min_half_life_ms: int = field(default=0, compare=False)
    #: :attr:`rules` and the adjustment rule: what the engine scores with.
    engine_rules: tuple[Rule, ...] = field(init=False, compare=False, repr=False)
    #: Behaviour rule ids in file order (then the adjustment rule's), and id -> position:
    #: how the native core names rules.
    rule_ids: tuple[str, ...] = field(init=False, compare=False, repr=False)
    rule_index: Mapping[str, int] = field(init=False, compare=False, repr=False)
    #: The state machine for these rules (native core).
    kernel: _native.Kernel = field(init=False, compare=False, repr=False)
    #: Per event type, the fields its rules test: events that agree on them match alike.
    fields_by_event: Mapping[str, tuple[str, ...]] = field(init=False, compare=False, repr=False)
    #: The profile attributes a lead keeps: the ``lead_profile`` fields, and the
    #: ``properties.NAME`` of profile events that fit rules test (no others: bounded).
    profile_fields: tuple[str, ...] = field(init=False, compare=False, repr=False)
    #: Event types whose rules compare numbers: their match cache keys values with their
    #: type (``True == 1`` in Python, but a boolean is no number to ``gt``).
    typed_events: frozenset[str] = field(init=False, compare=False, repr=False)
    #: (event type, values of its tested fields) -> matched rule indices (see :meth:`match`).
    _matches: dict[tuple[Any, ...], list[int]] = field(
        init=False, compare=False, repr=False, default_factory=dict
    )
    #: sorted profile items -> fit (see :meth:`fit_of`).
    _fits: dict[tuple[Any, ...], tuple[float, bool]] = field(
        init=False, compare=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        adjustment = Rule(
            ADJUSTMENT_RULE_ID,
            SCORE_ADJUSTED,
            1.0,
            self.adjustment_half_life_ms or self.half_life_ms,
            None,
            (),
        )
        engine_rules = (*self.rules, adjustment)
        object.__setattr__(self, "engine_rules", engine_rules)
        by_event: dict[str, list[Rule]] = {}
        for rule in engine_rules:
            assert rule.event is not None
            by_event.setdefault(rule.event, []).append(rule)
        object.__setattr__(self, "by_event", {k: tuple(v) for k, v in by_event.items()})
        object.__setattr__(self, "by_id", {r.id: r for r in engine_rules})
        index = {
            event: built
            for event, rules in self.by_event.items()
            if (built := _EqualityIndex.build(rules)) is not None
        }
        object.__setattr__(self, "equality_index", index)
        params = {r.id: (r.half_life_ms, r.cap) for r in engine_rules}
        object.__setattr__(self, "decay_params", params)
        object.__setattr__(self, "min_half_life_ms", min(h for h, _ in params.values()))
        object.__setattr__(self, "rule_ids", tuple(r.id for r in engine_rules))
        object.__setattr__(self, "rule_index", {r.id: i for i, r in enumerate(engine_rules)})
        object.__setattr__(self, "kernel", self._build_kernel())
        tested = {
            event: tuple(sorted({c.field for r in rules for c in r.conditions}))
            for event, rules in self.by_event.items()
        }
        object.__setattr__(self, "fields_by_event", tested)
        typed = {
            event
            for event, rules in self.by_event.items()
            if any(c.kind in _COMPARE for r in rules for c in r.conditions)
        }
        object.__setattr__(self, "typed_events", frozenset(typed))
        extra = {c.field for r in self.fit_rules for c in r.conditions}
        extra = {f for f in extra if f.startswith("properties.")}
        object.__setattr__(self, "profile_fields", (*PROFILE_FIELDS, *sorted(extra)))
        object.__setattr__(self, "_matches", {})
        object.__setattr__(self, "_fits", {})

    def _build_kernel(self) -> _native.Kernel:
        # A lead with no profile yet: every fit condition fails (no field is present).
        empty = float(sum(r.points for r in self.fit_rules if r.matches(lambda _: None)))
        grade = self.grade(empty) if self.has_fit else None
        return _native.Kernel(
            [(r.id, r.points, r.half_life_ms, r.cap) for r in self.engine_rules],
            self.thresholds.hot,
            self.thresholds.cool,
            (empty, self.grade_allows_hot(grade)),
            self.dedupe_window_ms,
        )

    def candidates(self, event_type: str, get: Callable[[str], Any]) -> Sequence[Rule]:
        """The rules of ``event_type`` that may match (a superset, in file order): all of
        them, or for event types with many rules, only those whose equality condition on
        the indexed field fits the event's value."""
        index = self.equality_index.get(event_type)
        if index is None:
            return self.by_event.get(event_type, ())
        return index.candidates(get(index.field))

    def match(self, event_type: str, get: Callable[[str], Any]) -> list[int]:
        """Indices (into :attr:`rules`) of the behaviour rules an event matches, in file
        order. ``get(name)`` reads the event's field or ``properties.NAME`` (what
        ``LeadEvent.field_value`` returns), so callers without a pydantic event (replay's
        native reader) match the very same way. Results are remembered per event type and
        values of the fields its rules test (at most :data:`MATCH_CACHE_SIZE`): most
        events repeat a few signatures (pages, campaigns, forms). Treat the list as
        read-only."""
        fields = self.fields_by_event.get(event_type)
        if fields is None:
            return []
        if event_type in self.typed_events:
            key: tuple[Any, ...] = (event_type, *[(type(v), v) for v in map(get, fields)])
        else:
            key = (event_type, *[get(name) for name in fields])
        try:
            return self._matches[key]
        except KeyError:
            pass
        except TypeError:  # a list or mapping value: not hashable, match it directly
            return self._match(event_type, get)
        if len(self._matches) >= MATCH_CACHE_SIZE:
            self._matches.clear()
        matched = self._matches[key] = self._match(event_type, get)
        return matched

    def fit_of(self, values: Mapping[str, Any]) -> tuple[float, bool]:
        """``(fit score, whether its grade lets a lead be hot)`` for profile ``values``
        (field -> value); remembered per distinct profile (many leads share
        firmographics), at most :data:`MATCH_CACHE_SIZE` of them."""
        key = tuple(sorted(values.items()))
        try:
            return self._fits[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value: compute directly
            return self._fit(values)
        if len(self._fits) >= MATCH_CACHE_SIZE:
            self._fits.clear()
        fit = self._fits[key] = self._fit(values)
        return fit

    def _fit(self, values: Mapping[str, Any]) -> tuple[float, bool]:
        score = float(sum(r.points for r in self.fit_rules if r.matches(values.get)))
        return score, self.grade_allows_hot(self.grade(score))

    def _match(self, event_type: str, get: Callable[[str], Any]) -> list[int]:
        index = self.rule_index
        return [index[r.id] for r in self.candidates(event_type, get) if r.matches(get)]

    @property
    def has_fit(self) -> bool:
        return bool(self.fit_rules)

    def grade(self, fit_score: float) -> str:
        """Grade for a fit score: the first band whose minimum it reaches, else ``D``."""
        for grade, minimum in self.grade_bands:
            if fit_score >= minimum:
                return grade
        return "D"

    def grade_allows_hot(self, grade: str | None) -> bool:
        """Whether ``thresholds.min_grade`` lets a lead of ``grade`` be hot."""
        minimum = self.thresholds.min_grade
        if minimum is None:
            return True
        return grade is not None and GRADES.index(grade) <= GRADES.index(minimum)

    def half_lives_ms(self) -> tuple[int, ...]:
        """Distinct half-lives the engine uses (the adjustment rule's too), shortest
        first."""
        return tuple(sorted({r.half_life_ms for r in self.engine_rules}))


#: Event types with more rules than this get an equality index (below that, checking
#: every rule is as fast).
INDEX_MIN_RULES = 8


@dataclass(frozen=True, slots=True)
class _EqualityIndex:
    """Rules of one event type indexed by one field's ``equals`` condition, e.g. 125
    ``email_click`` rules on ``campaign_id``: an event is checked only against the rules
    for its value plus the rules without such a condition, in file order (so scores add up
    in the same order as without the index)."""

    field: str
    by_value: Mapping[Any, tuple[Rule, ...]]
    always: tuple[Rule, ...]
    all_rules: tuple[Rule, ...]

    def candidates(self, value: Any) -> tuple[Rule, ...]:
        if isinstance(value, list):  # a list-valued property: check every rule
            return self.all_rules
        try:
            return self.by_value.get(normalise(value), self.always)
        except TypeError:  # unhashable value
            return self.all_rules

    @classmethod
    def build(cls, rules: Sequence[Rule]) -> _EqualityIndex | None:
        if len(rules) <= INDEX_MIN_RULES:
            return None
        counts: dict[str, int] = {}
        for rule in rules:
            for c in rule.conditions:
                if c.kind == "equals":
                    counts[c.field] = counts.get(c.field, 0) + 1
        if not counts:
            return None
        field_name = max(sorted(counts), key=counts.__getitem__)
        by_value: dict[Any, list[int]] = {}
        always: list[int] = []
        for position, rule in enumerate(rules):
            values = next(
                (c.values for c in rule.conditions if c.kind == "equals" and c.field == field_name),
                None,
            )
            if values is None:
                always.append(position)
            for value in values or ():
                by_value.setdefault(value, []).append(position)
        merged = {
            value: tuple(rules[i] for i in sorted({*positions, *always}))
            for value, positions in by_value.items()
        }
        return cls(field_name, merged, tuple(rules[i] for i in always), tuple(rules))
