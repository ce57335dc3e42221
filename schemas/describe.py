"""How a failed validation is described in a dead letter's reason: one entry per
offending field, ``"path: problem; path: problem"`` (the slow path; valid events never get
here)."""

from __future__ import annotations

from typing import Any, Final

from pydantic_core import ErrorDetails

from .events import EVENT_MODELS

#: At most this many fields are described; the rest are counted.
MAX_ERRORS_LISTED: Final = 10
_EVENT_TYPES: Final = ", ".join(EVENT_MODELS)
_PROPERTY_VALUE: Final = "a string, number, boolean or null"
_RFC3339_HINT: Final = "use RFC 3339 like 2026-11-23T10:00:00Z"


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
        return f"unknown event type {shorten(tag)!r}; expected one of {_EVENT_TYPES}"
    return f"expected a string, got {describe_value(tag)}; expected one of {_EVENT_TYPES}"


def _describe_property_error(path: str, errors: list[ErrorDetails]) -> str:
    """One message for the several union-member errors pydantic reports per bad value."""
    got = describe_value(errors[0]["input"])
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
        return f"expected a timestamp string, got {describe_value(value)}; {_RFC3339_HINT}"
    if kind == "value_error":  # our own validators; drop pydantic's "Value error, " prefix
        return str(ctx.get("error", msg))
    if kind in ("string_too_short", "string_too_long") and isinstance(value, str):
        return f"{msg} (got {len(value)})"
    if msg.startswith("Input should be "):
        return f"expected {msg.removeprefix('Input should be ')}, got {describe_value(value)}"
    return msg


def describe_value(value: object) -> str:
    """A JSON value as a short phrase: ``number 5``, ``string 'abc'``, ``array``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {shorten(value)!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
