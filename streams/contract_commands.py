"""The contract commands: ``leadscore rules check`` (a rules file) and ``leadscore schemas
export`` (the JSON Schema files of the event contract). Neither needs Kafka or Redis."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from schemas.export import SCHEMA_DIR, check_schemas, export_schemas
from schemas.times import format_duration_ms
from scoring.rules import ADJUSTMENT_RULE_ID, NO_DECAY_HALF_LIFE_MS, Condition
from scoring.rules_file import RulesError, load_rules


@click.group()
def rules() -> None:
    """Rules files: validate and summarise."""


@rules.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def rules_check(file: Path) -> None:
    """Validate a rules file and print a summary (exit 1 with pointed errors if invalid)."""
    try:
        ruleset = load_rules(file)
    except RulesError as exc:
        click.echo(f"invalid rules file:\n{exc}", err=True)
        sys.exit(1)
    t = ruleset.thresholds
    click.echo(f"{file}: OK, version {ruleset.version}")
    click.echo(
        f"  default half-life {format_duration_ms(ruleset.half_life_ms)}; "
        f"hot at {t.hot:g}, cools below {t.cool:g}"
        + (f", minimum fit grade {t.min_grade}" if t.min_grade else "")
    )
    adjusted = ruleset.by_id[ADJUSTMENT_RULE_ID].half_life_ms
    fading = "never fade" if adjusted == NO_DECAY_HALF_LIFE_MS else "half-life "
    fading += "" if adjusted == NO_DECAY_HALF_LIFE_MS else format_duration_ms(adjusted)
    click.echo(f"  manual adjustments (leadscore adjust): {fading}")
    click.echo(f"  {len(ruleset.rules)} behaviour rule(s):")
    width = max(12, *(len(r.event or "") for r in ruleset.rules))
    for r in ruleset.rules:
        extra = f" half-life {format_duration_ms(r.half_life_ms)}"
        extra += f", cap {r.cap:g}" if r.cap is not None else ""
        conds = ", ".join(describe_condition(c) for c in r.conditions)
        click.echo(
            f"    {r.id:<22} {r.event or '':<{width}} {r.points:+g}{extra}"
            + (f"  [{conds}]" if conds else "")
        )
    if ruleset.fit_rules:
        bands = ", ".join(f"{g} >= {m:g}" for g, m in ruleset.grade_bands)
        click.echo(f"  {len(ruleset.fit_rules)} fit rule(s); grades: {bands}, else D")
        for r in ruleset.fit_rules:
            conds = ", ".join(describe_condition(c) for c in r.conditions)
            click.echo(f"    {r.id:<22} {r.points:+g}  [{conds}]")


_SYMBOLS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def describe_condition(condition: Condition) -> str:
    """A rule condition as ``rules check`` prints it, e.g. ``properties.price >= 50``."""
    field, kind, values = condition.field, condition.kind, list(condition.values)
    if kind in _SYMBOLS:
        return f"{field} {_SYMBOLS[kind]} {values[0]:g}"
    if kind == "exists":
        return f"{field} exists"
    if kind == "missing":
        return f"{field} is absent"
    if kind == "regex":
        assert condition.pattern is not None
        return f"{field} matches /{condition.pattern.pattern}/"
    words = {"equals": "in", "unless": "not in", "contains": "contains"}[kind]
    return f"{field} {words} {values}"


@click.group()
def schemas() -> None:
    """JSON Schema files of the event contract."""


@schemas.command("export")
@click.option("--check", is_flag=True, help="Only check that the files are up to date.")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
def schemas_export(check: bool, directory: Path | None) -> None:
    """Write schemas/json/*.schema.json (or check them with --check)."""
    target = directory or SCHEMA_DIR
    if check:
        stale = check_schemas(target)
        if stale:
            click.echo(
                f"stale schema files in {target}: {', '.join(stale)}; "
                "run `leadscore schemas export`",
                err=True,
            )
            sys.exit(1)
        click.echo(f"{target}: up to date")
        return
    for path in export_schemas(target):
        click.echo(f"wrote {path}")
