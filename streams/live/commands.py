"""The worker-side commands: ``leadscore worker``, ``produce``, ``score``, ``top`` and
``tail`` (registered on the group in ``streams/cli.py``).

Settings come from ``LEADSCORE_*`` environment variables (or ``.env``); see
``streams/settings.py``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
import redis.exceptions
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from schemas.formats import INPUT_FORMATS, InputFormat
from schemas.times import (
    datetime_to_ms,
    format_duration_ms,
    format_ms,
    ms_to_datetime,
    parse_aware,
)
from scoring.identity import resolve
from scoring.profile import fit_grade, fit_score
from scoring.rules import RuleSet
from scoring.rules_file import RulesError, load_rules
from scoring.state import LeadState
from scoring.state_machine import explain

from ..jsonl import JsonlError, iter_lines
from ..kafka import AckedProducer, KafkaUnavailableError, confluent_config, ensure_topics
from ..redaction import redact_url
from ..settings import Settings, SettingsError, load_settings
from .redis_errors import StoreFormatError
from .redis_store import RedisStore

T = TypeVar("T")


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.obj.get("settings") if ctx.obj else None
    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None
        ctx.ensure_object(dict)["settings"] = settings
    return settings


def _rules(settings: Settings) -> RuleSet:
    try:
        return load_rules(settings.rules_file)
    except RulesError as exc:
        raise click.ClickException(str(exc)) from None


def _parse_at(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        return parse_aware(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


# ---------------------------------------------------------------------------- worker


@click.command()
@click.option(
    "--processes",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Worker processes on this machine, in one consumer group (one core each); "
    "process i serves /healthz and /metrics on LEADSCORE_WEB_PORT + i.",
)
@click.pass_context
def worker(ctx: click.Context, processes: int) -> None:
    """Run the stream processor until SIGTERM/SIGINT.

    Creates the topics if missing, consumes the input topic(s), scores leads in Redis and
    publishes lead_became_hot / lead_cooled to the hot-lead topic. Serves /healthz and
    /metrics on LEADSCORE_WEB_HOST:LEADSCORE_WEB_PORT.
    """
    settings = _settings(ctx)
    _rules(settings)  # a bad rules file is a message, not a traceback from inside Faust
    try:
        if processes > 1:
            from .supervisor import run_processes  # noqa: PLC0415 (not for one process)

            sys.exit(run_processes(settings, processes))
        # Faust (slow to import) only for this command.
        from .app import run_worker  # noqa: PLC0415

        # Faust parses sys.argv itself: hand it only the program name.
        sys.argv = sys.argv[:1]
        run_worker(settings)
    except KafkaUnavailableError as exc:  # at start: a message, not a traceback
        raise click.ClickException(str(exc)) from None


# ---------------------------------------------------------------------------- produce


def _key_of(line: bytes, input_format: InputFormat = "leadscore") -> bytes | None:
    """The Kafka key of a record: its lead id (Segment: ``userId``, else ``anonymousId``),
    so that a lead's records share a partition; None when it has none."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    if input_format == "segment":
        lead = data.get("userId") or data.get("anonymousId")
    else:
        lead = data.get("lead_id")
    return lead.encode() if isinstance(lead, str) and lead else None


def _lines(path: Path) -> Iterator[bytes]:
    """The records of a log, cut as replay cuts them (:mod:`streams.jsonl`)."""
    try:
        for _, line in iter_lines(path):
            yield line
    except JsonlError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--topic", help="Topic to send to (default: the first input topic).")
@click.option("--batch", default=5000, show_default=True, help="Records per acknowledged batch.")
@click.option(
    "--format",
    "input_format",
    type=click.Choice(INPUT_FORMATS),
    default=None,
    help="What the lines are (default: LEADSCORE_INPUT_FORMAT, else leadscore); sets the key.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Records per second, one at a time, as live traffic arrives (default: as fast "
    "as the broker takes them, in batches).",
)
@click.pass_context
def produce(
    ctx: click.Context,
    files: tuple[Path, ...],
    topic: str | None,
    batch: int,
    input_format: InputFormat | None,
    rate: float | None,
) -> None:
    """Send JSONL event logs (optionally .gz) to Kafka, keyed by lead_id (Segment-spec
    messages: by userId, else anonymousId).

    Lines are sent as they are, bad ones included: the worker dead-letters those.

    \b
    Examples:
      leadscore produce examples/events.jsonl
      LEADSCORE_INPUT_FORMAT=segment leadscore produce examples/segment/events.jsonl --rate 4
    """
    settings = _settings(ctx)
    input_format = input_format or settings.input_format
    topic = topic or settings.input_topics[0]
    try:
        ensure_topics(settings)
    except KafkaUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    producer = AckedProducer(settings)
    if rate is not None:
        batch = 1
    started = time.monotonic()
    total = 0
    for path in files:
        size = path.stat().st_size
        with click.progressbar(
            length=size, label=f"{path.name} -> {topic}", file=sys.stderr, show_pos=True
        ) as bar:
            pending: list[tuple[bytes | None, bytes]] = []
            for line in _lines(path):
                pending.append((_key_of(line, input_format), line))
                bar.update(len(line) + 1)
                if len(pending) >= batch:
                    if rate is not None:  # (the next record is due at start + total / rate)
                        time.sleep(max(0.0, started + total / rate - time.monotonic()))
                    producer.send_all(topic, pending)
                    total += len(pending)
                    pending = []
            producer.send_all(topic, pending)
            total += len(pending)
    click.echo(f"sent {total} record(s) to {topic}", err=True)


# ---------------------------------------------------------------------------- reads


def _read(settings: Settings, store: RedisStore, work: Coroutine[Any, Any, T]) -> T:
    """Run an async read on the store, then close it; an unreachable Redis is a message,
    not a traceback."""

    async def run() -> T:
        try:
            return await work
        finally:
            await store.aclose()

    try:
        return asyncio.run(run())
    except (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        raise click.ClickException(
            f"Redis at {redact_url(settings.redis_url)} refused our credentials ({exc}): check "
            "LEADSCORE_REDIS_PASSWORD or the password in LEADSCORE_REDIS_URL, and the ACL user"
        ) from None
    except StoreFormatError as exc:
        raise click.ClickException(str(exc)) from None
    except redis.exceptions.RedisClusterException as exc:
        raise click.ClickException(
            f"cannot use Redis at {redact_url(settings.redis_url)} as a Redis Cluster ({exc}); "
            "LEADSCORE_REDIS_CLUSTER=true needs a node of a cluster"
        ) from None
    except Exception as exc:
        if not store.is_transient(exc):
            raise
        raise click.ClickException(
            f"cannot reach Redis at {redact_url(settings.redis_url)} ({exc}). Is it running? "
            "(scripts/services up; LEADSCORE_REDIS_URL)"
        ) from None


@click.command()
@click.argument("lead_id")
@click.option("--at", "at_text", help="RFC 3339 time to score at (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def score(ctx: click.Context, lead_id: str, at_text: str | None, as_json: bool) -> None:
    """Show a lead's current decayed score, grade, hot state and explanation."""
    settings = _settings(ctx)
    rules = _rules(settings)
    store = RedisStore.connect(settings, rules)
    at = _parse_at(at_text)
    asked = lead_id
    state, erased, lead_id = _read(settings, store, _lookup(store, lead_id))
    if lead_id != asked:
        click.echo(f"{asked!r} was merged into {lead_id!r} (identity merges): its score", err=True)
    if state is None:
        if erased is not None:
            raise click.ClickException(
                f"lead {lead_id!r} was erased as of {format_ms(erased)} (leadscore erase); "
                "a new event for it starts a fresh lead"
            )
        raise click.ClickException(
            f"no lead {lead_id!r} in Redis ({redact_url(settings.redis_url)}, key prefix "
            f"{settings.redis_key_prefix!r})"
        )
    info = _score_info(lead_id, state, rules, max(datetime_to_ms(at), state.clock_ms))
    if as_json:
        click.echo(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"lead {lead_id} at {info['at']}")
    hot = "HOT" if state.hot else "not hot"
    click.echo(
        f"  score {info['score']:.2f} ({hot}; hot at {rules.thresholds.hot:g}, "
        f"cools below {rules.thresholds.cool:g})"
    )
    if info["fit_grade"]:
        click.echo(f"  fit grade {info['fit_grade']} (fit score {info['fit_score']:g})")
    click.echo(f"  {state.events_applied} events, last at {info['last_event_at']}")
    for part in info["explanation"]:
        rule = rules.by_id[part["rule_id"]]
        click.echo(
            f"  {part['points']:+9.2f}  {part['rule_id']}  "
            f"(half-life {format_duration_ms(rule.half_life_ms)})"
        )


async def _lookup(store: RedisStore, lead_id: str) -> tuple[LeadState | None, int | None, str]:
    """The lead's state; without one, when it was erased (its tombstone's floor) if it
    was; and the lead it is: the one it joined, for an id merged into another."""
    state = await store.get(lead_id)
    if state is not None:
        return state, None, lead_id
    aliases = await store.aliases.resolve({lead_id})
    if lead_id in aliases:
        canonical = resolve(lead_id, aliases)[0][-1]
        if canonical != lead_id:
            state, erased, _ = await _lookup(store, canonical)
            return state, erased, canonical
    raw = await store.client.get(store.keys.tombstone(lead_id).state)
    return None, None if raw is None else (await store.decode(raw, lead_id)).floor_ms, lead_id


def _score_info(lead_id: str, state: LeadState, rules: RuleSet, at_ms: int) -> dict[str, Any]:
    """What ``leadscore score --json`` prints."""
    parts = explain(state, rules, at_ms)
    return {
        "lead_id": lead_id,
        "at": ms_to_datetime(at_ms).isoformat(),
        "score": sum(p.points for p in parts),
        "hot": state.hot,
        "fit_grade": fit_grade(state, rules),
        "fit_score": fit_score(state, rules) if rules.has_fit else None,
        "last_event_at": ms_to_datetime(state.clock_ms).isoformat(),
        "events_applied": state.events_applied,
        "rules_version": rules.version,
        "explanation": [{"rule_id": p.rule_id, "points": p.points} for p in parts],
    }


@click.command()
@click.option("-n", "count", default=10, show_default=True, help="How many leads.")
@click.option("--at", "at_text", help="RFC 3339 time to rank at (default: now).")
@click.pass_context
def top(ctx: click.Context, count: int, at_text: str | None) -> None:
    """List the hottest leads by current decayed score."""
    settings = _settings(ctx)
    store = RedisStore.connect(settings, _rules(settings))
    at_ms = datetime_to_ms(_parse_at(at_text))

    async def ranked() -> tuple[list[tuple[str, float]], list[LeadState | None]]:
        leads = await store.top(count, at_ms)
        return leads, [await store.get(lead) for lead, _ in leads]

    leads, states = _read(settings, store, ranked())
    if not leads:
        click.echo("no scored leads yet", err=True)
        return
    click.echo(f"{'rank':>4}  {'score':>9}  hot  lead")
    for i, ((lead, value), state) in enumerate(zip(leads, states, strict=True), 1):
        flag = "yes" if state is not None and state.hot else "   "
        click.echo(f"{i:>4}  {value:>9.2f}  {flag}  {lead}")


# ---------------------------------------------------------------------------- tail


@click.command()
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
