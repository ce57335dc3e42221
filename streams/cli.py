"""``leadscore``: the command line.

Settings come from ``LEADSCORE_*`` environment variables (or ``.env``); see
``streams/settings.py``. Run ``leadscore COMMAND --help`` for each command.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from schemas.times import format_duration_ms
from scoring.rules_file import RulesError, load_rules

from .settings import Settings, SettingsError, load_settings


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.obj.get("settings") if ctx.obj else None
    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None
        ctx.ensure_object(dict)["settings"] = settings
    return settings


def _parse_at(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no timezone offset; add Z or +HH:MM")
    return at


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="leadscore")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Real-time lead scoring: exact event-time decay, hot-lead events, replay.

    Configuration comes from LEADSCORE_* environment variables (e.g.
    LEADSCORE_KAFKA_BOOTSTRAP_SERVERS, LEADSCORE_REDIS_URL, LEADSCORE_RULES_FILE).
    """
    ctx.ensure_object(dict)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


# ---------------------------------------------------------------------------- worker


@cli.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run the stream processor until SIGTERM/SIGINT.

    Creates the topics if missing, consumes the input topic(s), scores leads in Redis and
    publishes lead_became_hot / lead_cooled to the hot-lead topic. Serves /healthz and
    /metrics on LEADSCORE_WEB_HOST:LEADSCORE_WEB_PORT.
    """
    from .app import run_worker

    settings = _settings(ctx)
    try:
        load_rules(settings.rules_file)
    except RulesError as exc:
        raise click.ClickException(str(exc)) from None
    # Faust parses sys.argv itself: hand it only the program name.
    sys.argv = sys.argv[:1]
    run_worker(settings)


# ---------------------------------------------------------------------------- produce


def _key_of(line: bytes) -> bytes | None:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    lead = data.get("lead_id") if isinstance(data, dict) else None
    return lead.encode() if isinstance(lead, str) and lead else None


def _lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield line


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--topic", help="Topic to send to (default: the first input topic).")
@click.option("--batch", default=5000, show_default=True, help="Records per acknowledged batch.")
@click.pass_context
def produce(ctx: click.Context, files: tuple[Path, ...], topic: str | None, batch: int) -> None:
    """Send JSONL event logs (optionally .gz) to Kafka, keyed by lead_id.

    Lines are sent as they are, bad ones included: the worker dead-letters those.

    \b
    Example:
      leadscore produce examples/events.jsonl
    """
    from .kafka import AckedProducer, ensure_topics

    settings = _settings(ctx)
    topic = topic or settings.input_topics[0]
    ensure_topics(settings)
    producer = AckedProducer(settings)
    total = 0
    for path in files:
        size = path.stat().st_size
        with click.progressbar(
            length=size, label=f"{path.name} -> {topic}", file=sys.stderr, show_pos=True
        ) as bar:
            pending: list[tuple[bytes | None, bytes]] = []
            for line in _lines(path):
                pending.append((_key_of(line), line))
                bar.update(len(line) + 1)
                if len(pending) >= batch:
                    producer.send_all(topic, pending)
                    total += len(pending)
                    pending = []
            producer.send_all(topic, pending)
            total += len(pending)
    click.echo(f"sent {total} record(s) to {topic}", err=True)


# ---------------------------------------------------------------------------- reads


def _run_redis(settings: Settings, work: Any) -> Any:
    """Run an async Redis read; an unreachable Redis is a message, not a traceback."""
    import redis.exceptions

    try:
        return asyncio.run(work)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise click.ClickException(
            f"cannot reach Redis at {settings.redis_url} ({exc}). Is it running? "
            "(scripts/services up; LEADSCORE_REDIS_URL)"
        ) from None


def _redis_store(settings: Settings) -> Any:
    from .app import redis_client
    from .redis_store import RedisStore

    rules = load_rules(settings.rules_file)
    return RedisStore(redis_client(settings), rules, settings.redis_key_prefix)


@cli.command()
@click.argument("lead_id")
@click.option("--at", "at_text", help="RFC 3339 time to score at (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def score(ctx: click.Context, lead_id: str, at_text: str | None, as_json: bool) -> None:
    """Show a lead's current decayed score, grade, hot state and explanation."""
    from schemas.times import datetime_to_ms, ms_to_datetime
    from scoring.profile import fit_grade, fit_score
    from scoring.state_machine import explain

    settings = _settings(ctx)
    store = _redis_store(settings)
    at = _parse_at(at_text)

    async def load() -> Any:
        try:
            return await store.get(lead_id)
        finally:
            await store.client.aclose()

    state = _run_redis(settings, load())
    if state is None:
        raise click.ClickException(
            f"no lead {lead_id!r} in Redis ({settings.redis_url}, key prefix "
            f"{settings.redis_key_prefix!r})"
        )
    at_ms = max(datetime_to_ms(at), state.clock_ms)
    parts = explain(state, store.rules, at_ms)
    total = sum(p.points for p in parts)
    info = {
        "lead_id": lead_id,
        "at": ms_to_datetime(at_ms).isoformat(),
        "score": total,
        "hot": state.hot,
        "fit_grade": fit_grade(state, store.rules),
        "fit_score": fit_score(state, store.rules) if store.rules.has_fit else None,
        "last_event_at": ms_to_datetime(state.clock_ms).isoformat(),
        "events_applied": state.events_applied,
        "rules_version": store.rules.version,
        "explanation": [{"rule_id": p.rule_id, "points": p.points} for p in parts],
    }
    if as_json:
        click.echo(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"lead {lead_id} at {info['at']}")
    hot = "HOT" if state.hot else "not hot"
    click.echo(
        f"  score {total:.2f} ({hot}; hot at {store.rules.thresholds.hot:g}, "
        f"cools below {store.rules.thresholds.cool:g})"
    )
    if info["fit_grade"]:
        click.echo(f"  fit grade {info['fit_grade']} (fit score {info['fit_score']:g})")
    click.echo(f"  {state.events_applied} events, last at {info['last_event_at']}")
    for p in parts:
        rule = store.rules.by_id[p.rule_id]
        click.echo(
            f"  {p.points:+9.2f}  {p.rule_id}  (half-life {format_duration_ms(rule.half_life_ms)})"
        )


@cli.command()
@click.option("-n", "count", default=10, show_default=True, help="How many leads.")
@click.option("--at", "at_text", help="RFC 3339 time to rank at (default: now).")
@click.pass_context
def top(ctx: click.Context, count: int, at_text: str | None) -> None:
    """List the hottest leads by current decayed score."""
    from schemas.times import datetime_to_ms

    settings = _settings(ctx)
    store = _redis_store(settings)
    at_ms = datetime_to_ms(_parse_at(at_text))

    async def ranked() -> Any:
        try:
            leads = await store.top(count, at_ms)
            states = [await store.get(lead) for lead, _ in leads]
            return leads, states
        finally:
            await store.client.aclose()

    leads, states = _run_redis(settings, ranked())
    if not leads:
        click.echo("no scored leads yet", err=True)
        return
    click.echo(f"{'rank':>4}  {'score':>9}  hot  lead")
    for i, ((lead, value), state) in enumerate(zip(leads, states, strict=True), 1):
        flag = "yes" if state is not None and state.hot else "   "
        click.echo(f"{i:>4}  {value:>9.2f}  {flag}  {lead}")


@cli.command()
@click.option("--from-beginning", is_flag=True, help="Start at the oldest record.")
@click.option("--max", "limit", type=int, help="Stop after this many records.")
@click.option("--timeout", type=float, help="Stop after this many idle seconds.")
@click.pass_context
def tail(
    ctx: click.Context, from_beginning: bool, limit: int | None, timeout: float | None
) -> None:
    """Print lead_became_hot / lead_cooled records as they arrive (one JSON per line).

    Reads the hot-lead topic without joining a consumer group (it never moves anyone's
    offsets).
    """
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    from .kafka import confluent_config

    settings = _settings(ctx)
    consumer = Consumer(
        confluent_config(settings, **{"group.id": "leadscore-tail", "enable.auto.commit": False})
    )
    meta = consumer.list_topics(settings.hot_topic, timeout=10).topics[settings.hot_topic]
    if meta.error is not None:
        raise click.ClickException(f"topic {settings.hot_topic}: {meta.error}")
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(settings.hot_topic, p, start) for p in meta.partitions])
    seen = 0
    idle = 0.0
    try:
        while limit is None or seen < limit:
            message = consumer.poll(0.5)
            if message is None:
                idle += 0.5
                if timeout is not None and idle >= timeout:
                    break
                continue
            idle = 0.0
            if message.error():
                click.echo(f"error: {message.error()}", err=True)
                continue
            click.echo((message.value() or b"").decode("utf-8", "replace"))
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


# ---------------------------------------------------------------------------- rules, schemas


@cli.group()
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


@cli.group()
def schemas() -> None:
    """JSON Schema files of the event contract."""


@schemas.command("export")
@click.option("--check", is_flag=True, help="Only check that the files are up to date.")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
def schemas_export(check: bool, directory: Path | None) -> None:
    """Write schemas/json/*.schema.json (or check them with --check)."""
    from schemas.export import SCHEMA_DIR, check_schemas, export_schemas

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


# ---------------------------------------------------------------------------- replay, calibrate


def _register_replay_commands() -> None:
    from .replay_cli import calibrate, replay

    cli.add_command(replay)
    cli.add_command(calibrate)


_register_replay_commands()


def main() -> None:
    """Console-script entry point."""
    cli(obj={})


if __name__ == "__main__":
    main()
