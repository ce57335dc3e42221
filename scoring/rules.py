"""Rules files: what earns (or costs) a lead points, how fast points fade, when a lead is hot.

A rules file is YAML (see ``scoring/default_rules.yaml`` for a documented example)::

    version: default-1            # echoed into every output event
    half_life: 14d                # default half-life; units s m h d w
    thresholds: {hot: 70, cool: 50, min_grade: C}
    rules:
      - {id: pricing-page, event: page_view, url_contains: /pricing, points: 15}
      - {id: ebook, event: download, asset_type: [ebook, whitepaper], points: 20, half_life: 30d}
    fit:
      grades: {A: 60, B: 30, C: 0}   # minimum fit score per grade; below the last: D
      rules:
        - {id: free-mail, email_domain: [gmail.com, yahoo.com], points: -30}

Conditions of a rule (all must hold):

* ``event``: the event type (behaviour rules only);
* ``url_contains: TEXT`` (case-insensitive) and ``url_regex: REGEX`` on the event's ``url``;
* ``FIELD: VALUE`` or ``FIELD: [V1, V2]`` (also inside ``where:``): equality / membership on
  an event field or ``properties.NAME``; strings compare case-insensitively;
* ``contains: {FIELD: TEXT or [TEXTS]}``: the field contains one of the texts (any case);
* ``unless: {FIELD: VALUE or [VALUES]}``: the field is present and NOT one of the values.

A condition on a field the event does not carry never holds (so ``unless`` does not fire for
leads who never told us their country).

Errors name the file, the rule and the field: ``rules.yaml: rule 'pricing': points: ...``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import leadscore_core as _core
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.events import EVENT_MODELS, PROFILE_FIELDS, event_fields

_UNITS_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")

#: Fit grades, best first.
GRADES: tuple[str, ...] = ("A", "B", "C", "D")

Scalar = str | int | float | bool


class RulesError(ValueError):
    """A rules file is invalid; the message says where (file, rule id, field) and why."""


def parse_duration_ms(text: str | int | float) -> int:
    """Parse ``14d``, ``12h``, ``90m``, ``30s``, ``2w`` (or plain seconds) into milliseconds."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration like 14d, got {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"expected a duration like 14d, 12h, 90m or 30s, got {text!r}")
        seconds = float(match.group(1)) * _UNITS_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    ms = round(seconds * 1000)
    if ms < 1:
        raise ValueError(f"duration must be at least 1 millisecond, got {text!r}")
    return ms


def format_duration_ms(ms: int) -> str:
    """Inverse of :func:`parse_duration_ms` for display (largest whole unit)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_SECONDS[unit] * 1000
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms / 1000:g}s"


# --------------------------------------------------------------------------- file model
# The YAML is validated with pydantic models (these), then compiled into the small
# immutable types below that the engine uses.

_ScalarOrList = Scalar | list[Scalar]
_TextOrList = str | list[str]


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    points: float
    half_life: str | int | float | None = None
    cap: float | None = Field(default=None, gt=0)
    url_contains: str | None = Field(default=None, min_length=1)
    url_regex: str | None = None
    where: dict[str, _ScalarOrList] = Field(default_factory=dict)
    contains: dict[str, _TextOrList] = Field(default_factory=dict)
    unless: dict[str, _ScalarOrList] = Field(default_factory=dict)

    @field_validator("points")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("points must be a finite number")
        return value


class _BehaviourRuleModel(_RuleModel):
    event: str


class _ThresholdsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hot: float
    cool: float
    min_grade: Literal["A", "B", "C", "D"] | None = None


class _FitModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    grades: dict[Literal["A", "B", "C"], float] = Field(
        default_factory=lambda: {"A": 60.0, "B": 30.0, "C": 0.0}  # type: ignore[arg-type]
    )
    rules: list[_RuleModel] = Field(default_factory=list)


class _RulesFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=128)
    half_life: str | int | float = "14d"
    thresholds: _ThresholdsModel
    rules: list[_BehaviourRuleModel] = Field(min_length=1)
    fit: _FitModel | None = None


# --------------------------------------------------------------------------- compiled types


def _norm(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on one field. ``kind`` is ``equals`` (membership), ``contains``,
    ``regex`` or ``unless``; ``values`` are pre-normalised (strings case-folded)."""

    field: str
    kind: Literal["equals", "contains", "regex", "unless"]
    values: tuple[Any, ...] = ()
    pattern: re.Pattern[str] | None = None

    def holds(self, value: Any) -> bool:
        if value is None:
            return False
        if self.kind == "equals" and isinstance(value, str):  # the common case, fast
            return value.casefold() in self.values
        values = value if isinstance(value, list) else (value,)
        if self.kind == "regex":
            assert self.pattern is not None
            return any(isinstance(v, str) and self.pattern.search(v) for v in values)
        normed = [_norm(v) for v in values]
        if self.kind == "equals":
            return any(v in self.values for v in normed)
        if self.kind == "unless":
            return not any(v in self.values for v in normed)
        return any(isinstance(v, str) and t in v for v in normed for t in self.values)


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
    #: Behaviour rule ids in file order, and id -> position: how the native core names rules.
    rule_ids: tuple[str, ...] = field(init=False, compare=False, repr=False)
    rule_index: Mapping[str, int] = field(init=False, compare=False, repr=False)
    #: The state machine for these rules (native core).
    kernel: _core.Kernel = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        by_event: dict[str, list[Rule]] = {}
        for rule in self.rules:
            assert rule.event is not None
            by_event.setdefault(rule.event, []).append(rule)
        object.__setattr__(self, "by_event", {k: tuple(v) for k, v in by_event.items()})
        object.__setattr__(self, "by_id", {r.id: r for r in self.rules})
        index = {
            event: built
            for event, rules in self.by_event.items()
            if (built := _EqualityIndex.build(rules)) is not None
        }
        object.__setattr__(self, "equality_index", index)
        params = {r.id: (r.half_life_ms, r.cap) for r in self.rules}
        object.__setattr__(self, "decay_params", params)
        object.__setattr__(self, "min_half_life_ms", min(h for h, _ in params.values()))
        object.__setattr__(self, "rule_ids", tuple(r.id for r in self.rules))
        object.__setattr__(self, "rule_index", {r.id: i for i, r in enumerate(self.rules)})
        object.__setattr__(self, "kernel", self._build_kernel())

    def _build_kernel(self) -> _core.Kernel:
        # A lead with no profile yet: every fit condition fails (no field is present).
        empty = float(sum(r.points for r in self.fit_rules if r.matches(lambda _: None)))
        grade = self.grade(empty) if self.has_fit else None
        return _core.Kernel(
            [(r.id, r.points, r.half_life_ms, r.cap) for r in self.rules],
            self.thresholds.hot,
            self.thresholds.cool,
            (empty, self.grade_allows_hot(grade)),
        )

    def candidates(self, event_type: str, get: Callable[[str], Any]) -> Sequence[Rule]:
        """The rules of ``event_type`` that may match (a superset, in file order): all of
        them, or for event types with many rules, only those whose equality condition on
        the indexed field fits the event's value."""
        index = self.equality_index.get(event_type)
        if index is None:
            return self.by_event.get(event_type, ())
        return index.candidates(get(index.field))

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
        """Distinct half-lives in use, shortest first."""
        return tuple(sorted({r.half_life_ms for r in self.rules}))


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
            return self.by_value.get(_norm(value), self.always)
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


# --------------------------------------------------------------------------- loading


def _format_loc(loc: Sequence[int | str], raw: Mapping[str, Any]) -> str:
    """Turn a pydantic error location into ``rule 'id': field`` wording."""
    parts = list(loc)
    prefix = ""
    if len(parts) >= 2 and parts[0] == "rules" and isinstance(parts[1], int):
        prefix = _rule_label(raw.get("rules"), parts[1])
        parts = parts[2:]
    elif len(parts) >= 3 and parts[:2] == ["fit", "rules"] and isinstance(parts[2], int):
        fit = raw.get("fit") if isinstance(raw.get("fit"), dict) else {}
        prefix = "fit " + _rule_label(fit.get("rules") if fit else None, parts[2])
        parts = parts[3:]
    # Drop pydantic's union-member tags (e.g. 'str', 'list[...]') from the path.
    names = [str(p) for p in parts if not (isinstance(p, str) and ("[" in p or p in _TAGS))]
    where = ".".join(names) or "(top level)"
    return f"{prefix}: {where}" if prefix else where


_TAGS = {"str", "int", "float", "bool"}


def _rule_label(rules: Any, index: int) -> str:
    try:
        rule_id = rules[index].get("id")
    except (TypeError, IndexError, AttributeError):
        rule_id = None
    return f"rule {rule_id!r}" if rule_id else f"rule #{index + 1}"


def _conditions(model: _RuleModel, allowed: frozenset[str], where_label: str) -> list[Condition]:
    equals: dict[str, Any] = dict(model.where)
    for key, value in (model.model_extra or {}).items():
        if key == "event":
            continue
        if not isinstance(value, str | int | float | bool | list):
            raise RulesError(f"{where_label}: {key}: expected a value or a list of values")
        equals[key] = value

    def check_field(name: str) -> None:
        if name.startswith("properties.") and len(name) > len("properties."):
            return
        if name not in allowed:
            raise RulesError(
                f"{where_label}: unknown condition or field {name!r}; "
                f"fields here are: {', '.join(sorted(allowed))} or properties.NAME"
            )

    def as_tuple(value: Any) -> tuple[Any, ...]:
        items = value if isinstance(value, list) else [value]
        return tuple(_norm(v) for v in items)

    conditions: list[Condition] = []
    if model.url_contains is not None:
        check_field("url")
        conditions.append(Condition("url", "contains", (model.url_contains.casefold(),)))
    if model.url_regex is not None:
        check_field("url")
        conditions.append(Condition("url", "regex", pattern=_compile(model.url_regex, where_label)))
    for name, value in equals.items():
        check_field(name)
        conditions.append(Condition(name, "equals", as_tuple(value)))
    for name, value in model.contains.items():
        check_field(name)
        conditions.append(Condition(name, "contains", as_tuple(value)))
    for name, value in model.unless.items():
        check_field(name)
        conditions.append(Condition(name, "unless", as_tuple(value)))
    return conditions


def _compile(pattern: str, where_label: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise RulesError(f"{where_label}: url_regex: invalid regular expression: {exc}") from exc


def _half_life(value: str | int | float | None, default_ms: int, where_label: str) -> int:
    if value is None:
        return default_ms
    try:
        return parse_duration_ms(value)
    except ValueError as exc:
        raise RulesError(f"{where_label}: half_life: {exc}") from exc


def build_ruleset(raw: Any, source: str = "<memory>") -> RuleSet:
    """Validate a parsed rules document (a dict) and compile it. Raises :class:`RulesError`."""
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: expected a mapping with version, thresholds and rules")
    try:
        model = _RulesFileModel.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: {_format_loc(e['loc'], raw)}: {e['msg']}" for e in exc.errors()]
        raise RulesError("\n".join(lines)) from None

    default_half_life = _half_life(model.half_life, 0, source)
    seen: set[str] = set()
    rules: list[Rule] = []
    for rule_model in model.rules:
        label = f"{source}: rule {rule_model.id!r}"
        if rule_model.id in seen:
            raise RulesError(f"{label}: id: duplicate rule id")
        seen.add(rule_model.id)
        if rule_model.event not in EVENT_MODELS:
            raise RulesError(
                f"{label}: event: unknown event type {rule_model.event!r}; "
                f"expected one of {', '.join(EVENT_MODELS)}"
            )
        conditions = _conditions(rule_model, event_fields(rule_model.event), label)
        rules.append(
            Rule(
                id=rule_model.id,
                event=rule_model.event,
                points=rule_model.points,
                half_life_ms=_half_life(rule_model.half_life, default_half_life, label),
                cap=rule_model.cap,
                conditions=tuple(conditions),
            )
        )

    fit_rules: list[Rule] = []
    bands: tuple[tuple[str, float], ...] = (("A", 60.0), ("B", 30.0), ("C", 0.0))
    if model.fit is not None:
        bands = tuple(sorted(model.fit.grades.items(), key=lambda kv: GRADES.index(kv[0])))
        for (g1, m1), (g2, m2) in itertools.pairwise(bands):
            if m1 <= m2:
                raise RulesError(
                    f"{source}: fit.grades: grade {g1} needs a higher minimum than {g2} "
                    f"({m1} <= {m2})"
                )
        for fit_model in model.fit.rules:
            label = f"{source}: fit rule {fit_model.id!r}"
            if fit_model.id in seen:
                raise RulesError(f"{label}: id: duplicate rule id")
            seen.add(fit_model.id)
            if "event" in (fit_model.model_extra or {}):
                raise RulesError(
                    f"{label}: event: fit rules test the lead's profile (lead_profile "
                    "attributes), not an event type; remove `event`"
                )
            if fit_model.half_life is not None or fit_model.cap is not None:
                raise RulesError(f"{label}: fit rules do not decay; remove half_life/cap")
            conditions = _conditions(fit_model, frozenset(PROFILE_FIELDS), label)
            if not conditions:
                raise RulesError(f"{label}: a fit rule needs at least one condition")
            fit_rules.append(Rule(fit_model.id, None, fit_model.points, 0, None, tuple(conditions)))

    thresholds = Thresholds(
        hot=model.thresholds.hot,
        cool=model.thresholds.cool,
        min_grade=model.thresholds.min_grade,
    )
    if thresholds.cool > thresholds.hot:
        raise RulesError(
            f"{source}: thresholds: cool ({thresholds.cool:g}) must not be above "
            f"hot ({thresholds.hot:g})"
        )
    if thresholds.min_grade is not None and not fit_rules:
        raise RulesError(f"{source}: thresholds.min_grade needs a fit: section with rules")
    return RuleSet(
        version=model.version,
        half_life_ms=default_half_life,
        thresholds=thresholds,
        rules=tuple(rules),
        fit_rules=tuple(fit_rules),
        grade_bands=bands,
        source=source,
    )


class _RulesLoader(yaml.SafeLoader):
    """YAML 1.2-style booleans (only true/false: a country code NO or ON stays text) and
    duplicate keys rejected instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_RulesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RulesLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_rules_document(path: str | Path) -> Any:
    """A rules file parsed as YAML (not validated) with the rules loader: only true/false
    are booleans (country NO stays text), duplicate keys are errors. For tools that
    rewrite a rules file (``leadscore calibrate``). Raises :class:`RulesError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read rules file: {exc.strerror or exc}") from exc
    try:
        return yaml.load(text, Loader=_RulesLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesError(f"{path}{where}: not valid YAML: {problem}") from None


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules file. Raises :class:`RulesError` naming file/rule/field."""
    return build_ruleset(load_rules_document(path), source=str(path))


def default_rules_path() -> Path:
    """The rules file shipped with leadscore (``scoring/default_rules.yaml``)."""
    return Path(__file__).with_name("default_rules.yaml")
