"""Turn one raw input message into a :data:`~schemas.events.LeadEvent` or a :class:`Rejected`.

The live worker (Kafka messages) calls :func:`parse_event` on every message, and replay on
every record its native fast path declines (that path accepts only what this function
certainly accepts, with the same values), so a message is accepted or rejected the same way
by both, with the same error text. A rejection becomes a dead-letter record with
:func:`dead_letter`::

    result = parse_event(message.value, message.key, require_key=True)
    if isinstance(result, Rejected):
        produce(dead_letter(result, value=message.value, key=message.key, topic=..., ...))
    else:
        score(result)

Checks run in this order; the first failure decides the rejection ``kind``:

* ``invalid_json``: no value at all (``None`` or empty: a tombstone, a blank line);
* ``oversized``: more than ``max_bytes`` bytes (checked before any parsing);
* ``invalid_utf8``: the bytes are not UTF-8 (the message gives the byte offset);
* ``invalid_json``: not JSON, or JSON that is not an object (with the parser's position);
* ``invalid_event``: a JSON object that is not a valid event (every problem, by field);
* ``invalid_json``: a valid event whose JSON repeats a key in one object, e.g. two
  ``"type"`` (JSON parsers silently keep the last value; we refuse to guess);
* ``missing_key`` / ``key_mismatch``: only with ``require_key=True``, the message key is
  missing or is not the event's ``lead_id``.

Speed: the worker parses ~100k events/s, so the happy path is a single
``EVENT_ADAPTER.validate_json`` call on the raw bytes (pydantic-core parses, checks UTF-8
and validates in one pass). Only when that fails do we spend time finding out *why*.

Error messages always start with the field they are about, as ``field: problem``, several
joined with ``"; "``, e.g. ``occurred_at: timestamp has no timezone offset (naive); use RFC
3339 like 2026-11-23T10:00:00Z``. Nested fields are dotted (``properties.plan``), list items
indexed (``properties.tags[2]``).
"""

from __future__ import annotations

import base64
import codecs
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from schemas.events import (
    CONTROL_TYPES,
    EVENT_ADAPTER,
    IDENTITY_TYPES,
    LEAD_LINKED,
    LeadEvent,
    Scorable,
)
from schemas.outputs import DeadLetter, ErrorKind
from schemas.times import format_duration_rough, format_ms

from . import _native
from .describe import describe_errors, describe_value, shorten

__all__ = [
    "DEAD_LETTER_ERROR_MAX",
    "DEAD_LETTER_KEY_MAX",
    "DEAD_LETTER_PAYLOAD_MAX",
    "DEFAULT_MAX_CLOCK_SKEW_MS",
    "MAX_EVENT_BYTES",
    "ErrorKind",
    "FastEvent",
    "Rejected",
    "check_key",
    "dead_letter",
    "dead_letter_key",
    "describe_errors",
    "message_bytes",
    "parse_event",
    "parse_for_scoring",
    "too_far_ahead",
]

#: Bytes of a rejected payload kept in its dead letter (JSON escaping at most ~6x this,
#: well under Kafka's default 1 MiB message limit).
DEAD_LETTER_PAYLOAD_MAX = 64 * 1024
#: Bytes of a message key kept in its dead letter (and used as the dead letter's own
#: Kafka key); a longer key is cut (its size and SHA-256 are kept), so that a dead letter
#: always fits in a Kafka message whatever the input.
DEAD_LETTER_KEY_MAX = 1024
#: Characters of a rejection reason kept in a dead letter.
DEAD_LETTER_ERROR_MAX = 2000

#: Largest accepted message value. Real events are well under 2 KiB; anything this big is
#: a producer bug, and refusing it early bounds the work (and memory) per message.
MAX_EVENT_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message is not a valid event. Turn it into a record with :func:`dead_letter`."""

    kind: ErrorKind
    #: Human-readable, starting with the field concerned, e.g. ``"url: expected ..."``.
    error: str


@dataclass(frozen=True, slots=True)
class FastEvent:
    """A behaviour event as the native decoder read it (``parse_event_fast``): what the
    engine needs, no pydantic model. The decoder only accepts what pydantic certainly
    would, with the same values (``tests/unit/test_native_parse.py``)."""

    event_id: str
    lead_id: str
    type: str
    occurred_at_ms: int
    #: Field name (and ``properties.NAME``) -> value, as ``LeadEvent.field_value`` gives.
    fields: dict[str, Any]

    def field_value(self, name: str) -> Any:
        return self.fields.get(name)


#: ``max_clock_skew`` by default: an event may be dated at most a day after its record.
DEFAULT_MAX_CLOCK_SKEW_MS = 24 * 3600 * 1000


def too_far_ahead(
    occurred_ms: int, record_ms: int | None, max_skew_ms: int | None
) -> Rejected | None:
    """The clock-skew policy, the same live and in a replay from Kafka: an event dated more
    than ``max_skew_ms`` after the timestamp of the Kafka record that carries it is
    rejected (a producer's clock or a bug dating it in the future would otherwise move its
    lead's clock ahead, and events after it would no longer count). None: accepted (also
    without a record timestamp, or with the policy off)."""
    if max_skew_ms is None or record_ms is None or occurred_ms <= record_ms + max_skew_ms:
        return None
    ahead = format_duration_rough(occurred_ms - record_ms)
    return Rejected(
        "invalid_event",
        f"occurred_at: {format_ms(occurred_ms)} is {ahead} "
        f"after its Kafka record's timestamp {format_ms(record_ms)}; events may be dated at "
        f"most {format_duration_rough(max_skew_ms)} ahead (LEADSCORE_MAX_CLOCK_SKEW)",
    )


def parse_for_scoring(
    value: bytes | None,
    key: bytes | None = None,
    *,
    require_key: bool = False,
    max_bytes: int = MAX_EVENT_BYTES,
) -> Scorable | Rejected:
    """:func:`parse_event` for the live worker: behaviour events on the native fast path
    (a :class:`FastEvent`, about a third of pydantic's cost), profile events and anything
    the fast path declines through pydantic (which also names what is wrong)."""
    if value:
        fast = _native.parse_event_fast(value, key, require_key, max_bytes)
        if fast is not None and fast["type"] != "lead_profile":
            return FastEvent(
                fast["event_id"],
                fast["lead_id"],
                fast["type"],
                fast["occurred_at_ms"],
                fast["fields"],
            )
    return parse_event(value, key, require_key=require_key, max_bytes=max_bytes)


def parse_control_event(
    value: bytes | None,
    key: bytes | None = None,
    *,
    require_key: bool = False,
    max_bytes: int = MAX_EVENT_BYTES,
) -> LeadEvent | Rejected:
    """:func:`parse_event` for the control topic: control events only (``score_adjusted``,
    ``score_reset``), always in the leadscore format."""
    event = parse_event(value, key, require_key=require_key, max_bytes=max_bytes)
    if isinstance(event, Rejected) or event.type in CONTROL_TYPES:
        return event
    return Rejected(
        "invalid_event",
        f"type: the control topic takes control events only ({', '.join(sorted(CONTROL_TYPES))}), "
        f"not {event.type}: send tracking events to the input topic",
    )


def not_control(event: Scorable, control_topic: str | None) -> Rejected | None:
    """Why a control event read from an input topic is refused (None: not one). Control
    events come from the control topic only, which ACLs can keep tracking producers from
    writing to."""
    if event.type not in CONTROL_TYPES:
        return None
    where = f" {control_topic}" if control_topic else ""
    return Rejected(
        "invalid_event",
        f"type: {event.type} is a control event: it is read from the control topic{where} "
        "only (`leadscore adjust|reset|erase` write there); input topics take tracking events",
    )


def identity_off(event: Scorable) -> Rejected | None:
    """Why an identity event is refused by a worker that does not merge identities (None:
    not one): dead-lettered, never applied as a no-op."""
    if event.type not in IDENTITY_TYPES:
        return None
    return Rejected(
        "invalid_event",
        f"type: {event.type}: identity merges are off (LEADSCORE_IDENTITY_MERGES; on by "
        "default for the segment input format)",
    )


def parse_event(
    value: bytes | str | None,
    key: bytes | None = None,
    *,
    require_key: bool = False,
    max_bytes: int = MAX_EVENT_BYTES,
) -> LeadEvent | Rejected:
    """Validate one message value (JSON) into an event, or say why it is rejected.

    ``value`` is the raw Kafka message value or one JSONL line (a ``str`` is encoded to
    UTF-8 first; a trailing newline is fine). ``key`` is the Kafka message key; it is only
    checked when ``require_key`` is true, and then must equal the event's ``lead_id``
    (so that all of a lead's events land on one partition, in order).

    Never raises for bad input: every problem is returned as a :class:`Rejected`.
    """
    raw = message_bytes(value, max_bytes)
    if isinstance(raw, Rejected):
        return raw
    try:
        event = EVENT_ADAPTER.validate_json(raw)  # the fast path: parse + validate at once
    except ValidationError as exc:
        return _diagnose(raw, exc)
    duplicate = _native.duplicate_key(raw)
    if duplicate is not None:
        return Rejected(
            "invalid_json",
            f"{duplicate}: repeated key in the JSON object (which value was meant is "
            "ambiguous); send each field once",
        )
    if require_key:
        return check_key(event, key)
    return event


def message_bytes(value: bytes | str | None, max_bytes: int) -> bytes | Rejected:
    """A message value (or JSONL line) as bytes to decode, or why there is nothing to
    decode: empty, over ``max_bytes``, or text with a lone surrogate."""
    if isinstance(value, str):
        try:
            # surrogateescape restores bytes a reader decoded with errors="surrogateescape",
            # so they are reported as invalid UTF-8 at their real offset.
            value = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            return Rejected(
                "invalid_utf8", f"not valid UTF-8: lone surrogate at character {exc.start}"
            )
    if not value:
        return Rejected("invalid_json", "empty message: expected a JSON object, got nothing")
    if len(value) > max_bytes:
        return Rejected(
            "oversized", f"message is {len(value)} bytes; the limit is {max_bytes} bytes"
        )
    return value


def dead_letter(
    rejected: Rejected,
    *,
    value: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    seen_at: datetime,
    payload_max: int = DEAD_LETTER_PAYLOAD_MAX,
) -> DeadLetter:
    """The dead-letter record for a rejected message, carrying the original bytes.

    The payload goes into ``payload_text`` when it is UTF-8, otherwise into
    ``payload_base64``, so the record is always valid JSON and the bytes can be recovered
    exactly, up to ``payload_max`` bytes (:data:`DEAD_LETTER_PAYLOAD_MAX` by default; the
    worker lowers it for a dead-letter topic with a small ``max.message.bytes``): a longer
    payload is cut there
    (``payload_truncated``; ``payload_bytes`` and ``payload_sha256`` describe the whole),
    so that a dead letter always fits in a Kafka message and can never block the worker.
    The key is text, or ``"base64:"`` + base64 when it is not UTF-8.
    ``seen_at`` must be timezone-aware (use ``datetime.now(UTC)``).
    """
    payload_text = payload_base64 = None
    truncated = False
    if value is not None:
        kept = value[:payload_max]
        truncated = len(kept) < len(value)
        if _utf8_or_none(value) is not None:
            payload_text = kept.decode("utf-8", "ignore")  # a cut may split the last character
        else:
            payload_base64 = base64.b64encode(kept).decode("ascii")
    error = rejected.error
    if len(error) > DEAD_LETTER_ERROR_MAX:
        error = error[: DEAD_LETTER_ERROR_MAX - 1] + "…"
    return DeadLetter(
        error_kind=rejected.kind,
        error=error,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        key=None if key is None else _cut_key_text(key),
        key_bytes=0 if key is None else len(key),
        key_sha256=None if key is None else hashlib.sha256(key).hexdigest(),
        payload_text=payload_text,
        payload_base64=payload_base64,
        payload_bytes=0 if value is None else len(value),
        payload_truncated=truncated,
        payload_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
        seen_at=seen_at,
    )


# --- key checks --------------------------------------------------------------------------


def check_key(event: LeadEvent, key: bytes | None) -> LeadEvent | Rejected:
    """``event``, or why its Kafka ``key`` is not its ``lead_id`` (a lead's events must
    share one partition, in order)."""
    if not key:
        return Rejected(
            "missing_key", f"key: missing (it must be the event's lead_id {event.lead_id!r})"
        )
    if key != event.lead_id.encode() and key != _canonical_key(event):
        return Rejected(
            "key_mismatch",
            f"key: {shorten(_key_text(key))!r} does not match lead_id {event.lead_id!r}",
        )
    return event


def _canonical_key(event: LeadEvent) -> bytes | None:
    """A link may also be keyed by the lead it joins (a Segment ``alias`` is sent under its
    ``userId``)."""
    canonical = getattr(event, "canonical_id", None)
    return None if canonical is None or event.type != LEAD_LINKED else canonical.encode()


def dead_letter_key(key: bytes | None) -> bytes:
    """The Kafka key of a message's dead letter: its own key, or ``sha256:`` + the hex
    digest of a key longer than :data:`DEAD_LETTER_KEY_MAX`."""
    if key is None:
        return b""
    if len(key) <= DEAD_LETTER_KEY_MAX:
        return key
    return b"sha256:" + hashlib.sha256(key).hexdigest().encode()


def _cut_key_text(key: bytes) -> str:
    if len(key) > DEAD_LETTER_KEY_MAX and _utf8_or_none(key) is not None:
        return key[:DEAD_LETTER_KEY_MAX].decode("utf-8", "ignore")  # may split a character
    return _key_text(key[:DEAD_LETTER_KEY_MAX])


def _key_text(key: bytes) -> str:
    text = _utf8_or_none(key)
    return text if text is not None else "base64:" + base64.b64encode(key).decode("ascii")


def _utf8_or_none(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --- diagnosis of a failed validation (slow path) -----------------------------------------


def _diagnose(value: bytes, exc: ValidationError) -> Rejected:
    """Classify a failed ``validate_json``: bad encoding, bad JSON, or a bad event."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejected(
            "invalid_utf8",
            f"not valid UTF-8: byte 0x{value[err.start]:02x} at offset {err.start} ({err.reason})",
        )
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":  # the JSON parser's own message, with line/column
        detail = first.get("ctx", {}).get("error", first["msg"])
        if value.startswith(codecs.BOM_UTF8):
            detail += " (the message starts with a UTF-8 byte order mark; remove it)"
        return Rejected("invalid_json", f"not valid JSON: {detail}")
    if first["type"] == "dict_type" and not first["loc"]:
        return Rejected(
            "invalid_json", f"expected a JSON object, got {describe_value(first['input'])}"
        )
    return Rejected("invalid_event", describe_errors(errors))
