"""The contract commands: ``leadscore rules check`` (a rules file) and ``leadscore schemas
export`` (the JSON Schema files of the event contract). Neither needs Kafka or Redis."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from schemas.export import SCHEMA_DIR, check_schemas, export_schemas
from schemas.times import format_duration_ms
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
    click.echo(f"  {len(ruleset.rules)} behaviour rule(s):")
    for r in ruleset.rules:
        extra = f" half-life {format_duration_ms(r.half_life_ms)}"
        extra += f", cap {r.cap:g}" if r.cap is not None else ""
        conds = ", ".join(
            f"{c.field} {c.kind} {list(c.values) or c.pattern.pattern}"  # type: ignore[union-attr]
            for c in r.conditions
        )
        click.echo(
            f"    {r.id:<22} {r.event:<12} {r.points:+g}{extra}" + (f"  [{conds}]" if conds else "")
        )
    if ruleset.fit_rules:
        bands = ", ".join(f"{g} >= {m:g}" for g, m in ruleset.grade_bands)
        click.echo(f"  {len(ruleset.fit_rules)} fit rule(s); grades: {bands}, else D")
        for r in ruleset.fit_rules:
            click.echo(f"    {r.id:<22} {r.points:+g}")


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
