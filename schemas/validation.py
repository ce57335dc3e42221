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
from pydantic_core import ErrorDetails

from schemas.events import CONTROL_TYPES, EVENT_ADAPTER, EVENT_MODELS, LeadEvent, Scorable
from schemas.outputs import DeadLetter, ErrorKind
from schemas.times import format_duration_rough, format_ms

from . import _native

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

#: At most this many field problems are spelled out in one rejection message.
MAX_ERRORS_LISTED: Final = 10

_RFC3339_HINT: Final = "use RFC 3339 like 2026-11-23T10:00:00Z"
_EVENT_TYPES: Final = ", ".join(EVENT_MODELS)
_PROPERTY_VALUE: Final = "a string, number, boolean or null"


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
    if key != event.lead_id.encode():
        return Rejected(
            "key_mismatch",
            f"key: {_shorten(_key_text(key))!r} does not match lead_id {event.lead_id!r}",
        )
    return event


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
            "invalid_json", f"expected a JSON object, got {_describe_value(first['input'])}"
        )
    return Rejected("invalid_event", describe_errors(errors))


def describe_errors(errors: list[ErrorDetails]) -> str:
    """``"path: problem; path: problem"``, one entry per offending field."""
    by_path: dict[str, list[ErrorDetails]] = {}
    for error in errors:
        by_path.setdefault(_path(error["loc"]), []).append(error)
    # A list property with a bad item fails every union member: the scalar ones at
    # `properties.x` ("got an array") and the list one at `properties.x[i]`. Only the
    # item-level error is useful.
    for path in [p for p in by_path if any(q.startswith(p + "[") for q in by_path)]:
        if path.startswith("properties."):
            del by_path[path]
    problems = [f"{path}: {_describe_field(path, errs)}" for path, errs in by_path.items()]
    if len(problems) > MAX_ERRORS_LISTED:
        hidden = len(problems) - MAX_ERRORS_LISTED
        problems = [*problems[:MAX_ERRORS_LISTED], f"... and {hidden} more"]
    return "; ".join(problems)


def _path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as the field path a producer understands.

    Locations look like ``("page_view", "occurred_at")``: the first item is the matched
    ``type`` (dropped). ``properties`` values are a union, so their locations also name the
    union member that was tried, e.g. ``("page_view", "properties", "plan", "str")`` or
    ``(..., "tags", "list[...]", 2, "str")``; those member names are dropped too. Errors
    about the discriminator itself have an empty location: they are about ``type``.
    """
    if not loc:
        return "type"
    parts = loc[1:]
    if len(parts) >= 3 and parts[0] == "properties":
        path = f"properties.{parts[1]}"
        if len(parts) >= 5 and isinstance(parts[3], int):  # an item of a list value
            path += f"[{parts[3]}]"
        return path
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path.lstrip(".") or "event"


def _describe_field(path: str, errors: list[ErrorDetails]) -> str:
    """The problem with one field, given all pydantic errors located at it."""
    first = errors[0]
    if first["type"] in ("union_tag_not_found", "union_tag_invalid"):
        return _describe_type_error(first)
    if path.startswith("properties.") and len(first["loc"]) >= 4:
        return _describe_property_error(path, errors)
    messages = dict.fromkeys(_describe_error(error) for error in errors)  # ordered, unique
    return "; ".join(messages)


def _describe_type_error(error: ErrorDetails) -> str:
    if error["type"] == "union_tag_not_found":
        return f"missing; expected one of {_EVENT_TYPES}"
    tag = error["input"].get("type") if isinstance(error["input"], dict) else None
    if isinstance(tag, str):
        return f"unknown event type {_shorten(tag)!r}; expected one of {_EVENT_TYPES}"
    return f"expected a string, got {_describe_value(tag)}; expected one of {_EVENT_TYPES}"


def _describe_property_error(path: str, errors: list[ErrorDetails]) -> str:
    """One message for the several union-member errors pydantic reports per bad value."""
    got = _describe_value(errors[0]["input"])
    if any(error["type"] == "finite_number" for error in errors):
        return (
            f"expected a finite number, got {got} "
            "(NaN, Infinity and overflowing numbers like 1e400 are not allowed)"
        )
    if path.endswith("]"):  # an item of a list value
        return f"expected {_PROPERTY_VALUE}, got {got}"
    return f"expected {_PROPERTY_VALUE}, or a list of those, got {got}"


def _describe_error(error: ErrorDetails) -> str:
    """Rephrase one pydantic error for a producer (the field is added by the caller)."""
    kind, value, msg = error["type"], error["input"], error["msg"]
    ctx: dict[str, Any] = error.get("ctx", {})
    event_type = error["loc"][0] if error["loc"] else "these"
    if kind == "missing":
        return f"missing (required in {event_type} events)"
    if kind == "extra_forbidden":
        return f"unknown field for {event_type} events (put custom data in properties)"
    if kind == "timezone_aware":
        return f"timestamp has no timezone offset (naive); {_RFC3339_HINT}"
    if kind in ("datetime_parsing", "datetime_from_date_parsing"):
        return f"not a valid timestamp ({ctx.get('error', msg)}); {_RFC3339_HINT}"
    if kind == "datetime_type":
        return f"expected a timestamp string, got {_describe_value(value)}; {_RFC3339_HINT}"
    if kind == "value_error":  # our own validators; drop pydantic's "Value error, " prefix
        return str(ctx.get("error", msg))
    if kind in ("string_too_short", "string_too_long") and isinstance(value, str):
        return f"{msg} (got {len(value)})"
    if msg.startswith("Input should be "):
        return f"expected {msg.removeprefix('Input should be ')}, got {_describe_value(value)}"
    return msg


def _describe_value(value: object) -> str:
    """A JSON value as a short phrase: ``number 5``, ``string 'abc'``, ``array``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {_shorten(value)!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
