"""``leadscore adjust``, ``reset`` and ``erase``: act on a lead by hand.

Each command validates one control event (:class:`schemas.events.ScoreAdjusted`,
:class:`schemas.events.ScoreReset`, :class:`schemas.events.LeadErasedEvent`) and sends it,
acknowledged, to the control topic (``LEADSCORE_CONTROL_TOPIC``), keyed by the lead id with
the producer settings of
``leadscore produce``, so it lands on the partition the lead's tracking events use. The
worker applies it exactly once (its id and position are remembered like any event's), and
a replay of a log that holds it applies it the same way.
"""

from __future__ import annotations

import getpass
import uuid
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from confluent_kafka import KafkaException

from schemas.events import LEAD_ERASED, SCORE_ADJUSTED, SCORE_RESET
from schemas.times import format_ms
from schemas.validation import Rejected, parse_control_event

from ..kafka import AckedProducer, KafkaUnavailableError, ProduceError, ensure_topics
from .commands import _parse_at, _settings

#: How long a command waits for an unreachable Kafka before it gives up (not sent).
CONNECT_TIMEOUT_S = 20.0


def _author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment
        return "leadscore-cli"


_LEAD = click.argument("lead_id")
_REASON = click.option("--reason", required=True, help="Why (kept with the event, for audits).")
_AUTHOR = click.option(
    "--author", default=_author, show_default="your user name", help="Who is acting."
)
_AT = click.option("--at", "at_text", help="RFC 3339 time it takes effect (default: now).")
_ID = click.option(
    "--id",
    "event_id",
    help="Event id (default: a new one). Sending the same id again changes nothing: "
    "give one when a script may retry.",
)


def _send(
    ctx: click.Context,
    event_type: str,
    lead_id: str,
    at: datetime,
    event_id: str | None,
    **fields: Any,
) -> None:
    settings = _settings(ctx)
    prefix = {SCORE_ADJUSTED: "adj", SCORE_RESET: "rst", LEAD_ERASED: "era"}[event_type]
    at_ms = int(at.timestamp() * 1000)
    event = {
        "event_id": event_id or f"{prefix}-{uuid.uuid4().hex}",
        "type": event_type,
        "lead_id": lead_id,
        "occurred_at": datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="milliseconds"),
        **fields,
    }
    value = orjson.dumps(event)
    checked = parse_control_event(value, lead_id.encode(), require_key=True)
    if isinstance(checked, Rejected):
        raise click.ClickException(f"not sent: {checked.error}")
    topic = settings.control_topic
    try:  # (only the control topic: with least-privilege ACLs the others are not ours)
        ensure_topics(settings, only=[topic], timeout=CONNECT_TIMEOUT_S)
        AckedProducer(settings).send_all(topic, [(lead_id.encode(), value)])
    except (KafkaUnavailableError, KafkaException, ProduceError) as exc:
        raise click.ClickException(f"not sent: {exc}") from None
    except RuntimeError as exc:  # not acknowledged in time: it may have gone out
        raise click.ClickException(
            f"maybe not sent ({exc}): send it again with --id {event['event_id']} (the same "
            "id twice changes nothing)"
        ) from None
    click.echo(
        f"{event_type} for {lead_id} at {format_ms(at_ms)} (id {event['event_id']}) -> {topic}"
    )


# (unknown options pass as arguments: `adjust LEAD -40` is a negative number, not an option)
@click.command(context_settings={"ignore_unknown_options": True})
@_LEAD
@click.argument("points", type=float)
@_REASON
@_AUTHOR
@_AT
@_ID
@click.pass_context
def adjust(
    ctx: click.Context,
    lead_id: str,
    points: float,
    reason: str,
    author: str,
    at_text: str | None,
    event_id: str | None,
) -> None:
    """Add POINTS to a lead's score (negative: remove them), fading with the rules file's
    adjustments.half_life from then on.

    \b
    Examples:
      leadscore adjust lead-7f3c9a 25 --reason "met at the trade fair"
      leadscore adjust lead-7f3c9a -40 --reason "wrong contact" --author crm-sync
    """
    _send(
        ctx,
        SCORE_ADJUSTED,
        lead_id,
        _parse_at(at_text),
        event_id,
        points=points,
        reason=reason,
        author=author,
    )


def _lead_command(event_type: str, name: str, help_text: str) -> click.Command:
    """A command that sends one ``event_type`` about a lead, with a reason and author."""

    @click.command(name=name, help=help_text)
    @_LEAD
    @_REASON
    @_AUTHOR
    @_AT
    @_ID
    @click.pass_context
    def command(
        ctx: click.Context,
        lead_id: str,
        reason: str,
        author: str,
        at_text: str | None,
        event_id: str | None,
    ) -> None:
        at = _parse_at(at_text)
        _send(ctx, event_type, lead_id, at, event_id, reason=reason, author=author)

    return command


reset = _lead_command(
    SCORE_RESET,
    "reset",
    """Set a lead's behaviour score to zero as of now (or --at): events dated at or
    before it never count again, even if they arrive later. The profile (fit) stays.

    \b
    Example:
      leadscore reset lead-7f3c9a --reason 'deal closed; score upsell from zero'
    """,
)

erase = _lead_command(
    LEAD_ERASED,
    "erase",
    """Erase a lead (GDPR art. 17): its score, profile and event ids are deleted from
    Redis, leaving a tombstone under a hashed key, and a lead_erased record on the hot
    topic tells downstream copies to forget it. Its old messages, re-delivered, change
    nothing; new events for the id start a fresh lead.

    Raw events stay in the input and dead-letter topics until their retention ends
    (docs/operations.md, "Erasure").

    \b
    Example:
      leadscore erase lead-7f3c9a --reason 'erasure request #4711'
    """,
)
