"""Time in leadscore, said once: RFC 3339 text <-> aware datetimes <-> integer milliseconds
since the Unix epoch, and durations (``14d``, ``12h``).

Scoring works on whole milliseconds of event time; the contract and every command speak
RFC 3339 with an offset (``2026-11-23T10:00:00Z``). Naive times are refused everywhere, so
no two components can disagree about a timezone.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

#: The Unix epoch, aware.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Date, time, optional fraction and offset (a missing offset is reported as naive later).
#: ASCII digits only, nothing after the end (``\Z``, not ``$``, which allows a newline),
#: offsets of at most 23:59 (``fromisoformat`` would read ``+01:60`` as ``+02:00``).
_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"([Zz]|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?\Z"
)

_UNITS_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_rfc3339(text: str) -> datetime:
    """RFC 3339 text -> datetime (naive when the text has no offset: callers that need an
    aware time check :attr:`datetime.tzinfo`, or use :func:`parse_time_ms`).

    Raises ``ValueError`` with a message that quotes the text."""
    if not _RFC3339.match(text):
        raise ValueError(f"expected RFC 3339 text like 2026-11-23T10:00:00Z, got {text!r}")
    try:
        # RFC 3339 allows a lowercase z; Python 3.11's fromisoformat does not.
        return datetime.fromisoformat(text[:-1] + "Z" if text[-1] == "z" else text)
    except ValueError:
        raise ValueError(f"not a valid date and time: {text!r}") from None


def parse_aware(text: str) -> datetime:
    """RFC 3339 text with an offset or ``Z`` -> aware datetime (``ValueError`` otherwise)."""
    value = parse_rfc3339(text.strip())
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone offset; add Z or +HH:MM")
    return value


def parse_time_ms(text: str) -> int:
    """RFC 3339 text with an offset -> milliseconds since the epoch."""
    return datetime_to_ms(parse_aware(text))


def datetime_to_ms(value: datetime) -> int:
    """Aware datetime -> milliseconds since the epoch (sub-millisecond digits truncated)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: leadscore only accepts timezone-aware times")
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch -> aware UTC datetime."""
    return EPOCH + timedelta(milliseconds=ms)


def format_ms(ms: int) -> str:
    """Milliseconds since the epoch -> ``2026-11-23T10:00:00Z`` (``.123`` only when the
    milliseconds are not zero). :func:`parse_time_ms` reads it back exactly."""
    spec = "milliseconds" if ms % 1000 else "seconds"
    return ms_to_datetime(ms).isoformat(timespec=spec).replace("+00:00", "Z")


def parse_duration_ms(text: str | int | float) -> int:
    """``14d``, ``12h``, ``90m``, ``30s``, ``2w`` (or a plain number of seconds) -> ms."""
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
    """Exact inverse of :func:`parse_duration_ms` for display: the largest whole unit
    (``14d``, ``90m``), else seconds with a fraction."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_SECONDS[unit] * 1000
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms / 1000:g}s"


def format_duration_rough(ms: float) -> str:
    """A duration for people, to the second: its two largest units (``3d 4h``, ``12m 5s``)."""
    seconds = round(ms / 1000)
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])
