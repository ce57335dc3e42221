"""Rules files: reading and validating the YAML that says what earns (or costs) a lead
points, how fast points fade, and when a lead is hot.

A rules file is YAML (see ``scoring/default_rules.yaml`` for a documented example)::

    version: default-1            # echoed into every output event
    half_life: 14d                # default half-life; units s m h d w
    dedupe_window: 7d             # optional: how long a re-sent event id is recognised
    adjustments: {half_life: 30d} # optional: how `leadscore adjust` points fade (none: never)
    thresholds: {hot: 70, cool: 50, min_grade: C}
    rules:
      - {id: pricing-page, event: page_view, url_contains: /pricing, points: 15}
      - {id: ebook, event: download, asset_type: [ebook, whitepaper], points: 20, half_life: 30d}
    fit:
      grades: {A: 60, B: 30, C: 0}   # minimum fit score per grade; below the last: D
      rules:
        - {id: free-mail, email_domain: [gmail.com, yahoo.com], points: -30}

Conditions of a rule (all must hold):

* ``event``: the event type (behaviour rules only), or the name of a ``track`` event
  exactly as sent (``event: Product Added``);
* ``url_contains: TEXT`` (case-insensitive) and ``url_regex: REGEX`` on the event's ``url``;
* ``FIELD: VALUE`` or ``FIELD: [V1, V2]`` (also inside ``where:``): equality / membership on
  an event field or ``properties.NAME``; strings compare case-insensitively;
* ``FIELD: {OPERATOR: ..., ...}`` (also inside ``where:``), every operator must hold:
  ``eq`` (a value or a list), ``not`` (like ``unless``), ``gt``, ``gte``, ``lt``, ``lte``
  (a number; the field must be a number: ``properties.NAME`` only), ``between: [LOW,
  HIGH]`` (both included), ``exists: true|false``, ``contains`` (text or texts),
  ``regex``;
* ``contains: {FIELD: TEXT or [TEXTS]}``: the field contains one of the texts (any case);
* ``unless: {FIELD: VALUE or [VALUES]}``: the field is present and NOT one of the values.

A condition on a field the event does not carry never holds (so ``unless`` does not fire for
leads who never told us their country).

This module turns the YAML into the compiled model of :mod:`scoring.rules`. Errors name
the file, the rule and the field: ``rules.yaml: rule 'pricing': points: ...``.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas import events
from schemas.times import parse_duration_ms

from .rules import (
    ADJUSTMENT_RULE_ID,
    GRADES,
    NO_DECAY_HALF_LIFE_MS,
    Condition,
    Rule,
    RuleSet,
    Thresholds,
    normalise,
)

Scalar = str | int | float | bool


class RulesError(ValueError):
    """A rules file is invalid; the message says where (file, rule id, field) and why."""


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
    where: dict[str, _ScalarOrList | dict[str, Any]] = Field(default_factory=dict)
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


class _AdjustmentsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    half_life: str | int | float | None = None


class _RulesFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=128)
    half_life: str | int | float = "14d"
    dedupe_window: str | int | float = "7d"
    adjustments: _AdjustmentsModel = Field(default_factory=_AdjustmentsModel)
    thresholds: _ThresholdsModel
    rules: list[_BehaviourRuleModel] = Field(min_length=1)
    fit: _FitModel | None = None


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
    """The compiled conditions of a rule; ``allowed``: the fields it may test, besides
    ``properties.NAME``."""
    equals: dict[str, Any] = dict(model.where)
    for key, value in (model.model_extra or {}).items():
        if key == "event":
            continue
        if not isinstance(value, str | int | float | bool | list | dict):
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
        return tuple(normalise(v) for v in items)

    conditions: list[Condition] = []
    if model.url_contains is not None:
        check_field("url")
        conditions.append(Condition("url", "contains", (model.url_contains.casefold(),)))
    if model.url_regex is not None:
        check_field("url")
        pattern = _compile(model.url_regex, f"{where_label}: url_regex")
        conditions.append(Condition("url", "regex", pattern=pattern))
    for name, value in equals.items():
        check_field(name)
        if isinstance(value, dict):
            conditions += _operator_conditions(name, value, where_label)
        else:
            conditions.append(Condition(name, "equals", as_tuple(value)))
    for name, value in model.contains.items():
        check_field(name)
        conditions.append(Condition(name, "contains", as_tuple(value)))
    for name, value in model.unless.items():
        check_field(name)
        conditions.append(Condition(name, "unless", as_tuple(value)))
    return conditions


_NUMBER_OPERATORS = ("gt", "gte", "lt", "lte")
_COMPARISONS: dict[str, Literal["gt", "gte", "lt", "lte"]] = {
    "gt": "gt",
    "gte": "gte",
    "lt": "lt",
    "lte": "lte",
}
_OPERATORS = ("eq", "not", *_NUMBER_OPERATORS, "between", "exists", "contains", "regex")
_ITEM_KINDS: dict[str, Literal["equals", "unless", "contains"]] = {
    "eq": "equals",
    "not": "unless",
    "contains": "contains",
}


def _operator_conditions(name: str, ops: Mapping[str, Any], where_label: str) -> list[Condition]:
    """``FIELD: {gte: 50, lt: 100}`` and the like (see the module docstring); a
    condition that can never match is an error naming it."""
    label = f"{where_label}: {name}"
    if not ops:
        raise RulesError(f"{label}: expected operators, e.g. {{gte: 50}}; got {{}}")
    conditions: list[Condition] = []
    for op, value in ops.items():
        conditions += _operator_condition(name, op, value, label)
    lows = [(c.values[0], c.kind == "gt") for c in conditions if c.kind in ("gt", "gte")]
    highs = [(c.values[0], c.kind == "lt") for c in conditions if c.kind in ("lt", "lte")]
    for low, strict_low in lows:
        for high, strict_high in highs:
            if low > high or (low == high and (strict_low or strict_high)):
                raise RulesError(f"{label}: can never match: above {low:g} and below {high:g}")
    if any(c.kind == "missing" for c in conditions) and len(conditions) > 1:
        raise RulesError(f"{label}: can never match: exists: false with other operators")
    return conditions


def _operator_condition(name: str, op: str, value: Any, label: str) -> list[Condition]:
    if op not in _OPERATORS:
        raise RulesError(
            f"{label}: unknown operator {op!r}; operators are: {', '.join(_OPERATORS)}"
        )
    if (op in _NUMBER_OPERATORS or op == "between") and not name.startswith("properties."):
        raise RulesError(f"{label}: {op}: can never match: {name} is text, {op} compares numbers")
    if op in _NUMBER_OPERATORS:
        return [Condition(name, _COMPARISONS[op], (_number(op, value, label),))]
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise RulesError(f"{label}: between: expected [LOW, HIGH], got {value!r}")
        low, high = (_number(op, v, label) for v in value)
        if low > high:
            raise RulesError(f"{label}: between: can never match: {low:g} > {high:g}")
        return [Condition(name, "gte", (low,)), Condition(name, "lte", (high,))]
    if op == "exists":
        if not isinstance(value, bool):
            raise RulesError(f"{label}: exists: expected true or false, got {value!r}")
        return [Condition(name, "exists" if value else "missing")]
    if op == "regex":
        if not isinstance(value, str):
            raise RulesError(f"{label}: regex: expected a regular expression")
        return [Condition(name, "regex", pattern=_compile(value, label))]
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str | int | float | bool) for v in values):
        raise RulesError(f"{label}: {op}: expected a value or a list of values")
    return [Condition(name, _ITEM_KINDS[op], tuple(normalise(v) for v in values))]


def _number(op: str, value: Any, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RulesError(f"{label}: {op}: expected a number, got {value!r}")
    return value


def _misspelt_type(name: str) -> str | None:
    """The built-in type ``name`` most likely misspells: the same letters but for case,
    ``_`` or ``-`` (``PageView``), or one letter off or swapped (``page_veiw``); None for a
    name with spaces or one that only starts like a type (``page_viewed``, ``webinars``):
    track names."""
    if " " in name:
        return None  # "Page View": a track event's name, as Segment-style tracking names them
    squashed = re.sub(r"[_\-]", "", name).casefold()
    for built_in in events.BUILT_IN_TYPES:
        if squashed == built_in.replace("_", ""):
            return built_in
        if name.startswith(built_in) or abs(len(name) - len(built_in)) > 1:
            continue
        if difflib.SequenceMatcher(None, name, built_in).ratio() >= 0.85:
            return built_in
    return None


def _fields_of(event: str, label: str) -> frozenset[str]:
    """The fields a behaviour rule on ``event`` may test. An ``event:`` that is no built-in
    type names a track event, exactly as sent; one that looks like a misspelt built-in type
    (``pageview``) is more likely a typo: an error."""
    if event == events.LEAD_LINKED:
        raise RulesError(f"{label}: event: {event} is reserved (identity merges apply it)")
    if event in events.CONTROL_TYPES:
        raise RulesError(
            f"{label}: event: {event} is a control event: manual adjustments are scored "
            "by the rules file's `adjustments:` section (half_life), resets by no rule"
        )
    if event == "track":
        raise RulesError(
            f"{label}: event: name the track event as it is sent, e.g. "
            "`event: Product Added` (every track event has type track)"
        )
    if event in events.EVENT_MODELS:
        return events.event_fields(event)
    close = _misspelt_type(event)
    if close is not None:
        raise RulesError(
            f"{label}: event: unknown event type {event!r}: did you mean {close!r}? "
            f"(the types are {', '.join(events.BUILT_IN_TYPES)}; any other name is a track "
            "event's, exactly as sent)"
        )
    return events.event_fields("track")


def _compile(pattern: str, where_label: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise RulesError(f"{where_label}: invalid regular expression: {exc}") from exc


def _half_life(value: str | int | float | None, default_ms: int, where_label: str) -> int:
    if value is None:
        return default_ms
    return _duration(value, f"{where_label}: half_life")


def _duration(value: str | int | float, where_label: str) -> int:
    try:
        return parse_duration_ms(value)
    except ValueError as exc:
        raise RulesError(f"{where_label}: {exc}") from exc


def _adjustment_half_life(model: _AdjustmentsModel, default_ms: int, source: str) -> int:
    """``adjustments.half_life`` (default: ``half_life``; ``none``: no fading)."""
    value = model.half_life
    if isinstance(value, str) and value.strip().lower() == "none":
        return NO_DECAY_HALF_LIFE_MS
    return _half_life(value, default_ms, f"{source}: adjustments")


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
    dedupe_window = _duration(model.dedupe_window, f"{source}: dedupe_window")
    seen: set[str] = set()
    rules: list[Rule] = []
    for rule_model in model.rules:
        label = f"{source}: rule {rule_model.id!r}"
        if rule_model.id in seen:
            raise RulesError(f"{label}: id: duplicate rule id")
        if rule_model.id == ADJUSTMENT_RULE_ID:
            raise RulesError(f"{label}: id: {ADJUSTMENT_RULE_ID!r} is reserved (adjustments:)")
        seen.add(rule_model.id)
        conditions = _conditions(rule_model, _fields_of(rule_model.event, label), label)
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
            # Fit rules read the profile: lead_profile fields, and the properties.NAME
            # of lead_profile events (Segment: any other trait) that they test.
            conditions = _conditions(fit_model, frozenset(events.PROFILE_FIELDS), label)
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
        adjustment_half_life_ms=_adjustment_half_life(model.adjustments, default_half_life, source),
        thresholds=thresholds,
        dedupe_window_ms=dedupe_window,
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
