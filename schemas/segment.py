"""Segment-spec input: messages as analytics.js, RudderStack, Jitsu and the like send them
(``LEADSCORE_INPUT_FORMAT=segment``; ``leadscore replay|produce --format segment``), read
as leadscore events.

=============  ========================================================================
Segment        leadscore event
=============  ========================================================================
``page``       ``page_view``: ``url`` from ``properties.url``, else ``context.page.url``;
               ``title`` from ``properties.title``, else ``name``; ``referrer`` from
               ``properties.referrer``, else ``context.page.referrer``
``track``      ``track``, named by ``event`` exactly as sent (rules: ``event: Product
               Added``)
``identify``   ``lead_profile`` from ``traits`` (else ``context.traits``): ``email``;
               ``company`` (or ``company.name``); ``industry`` (or ``company.industry``);
               ``company_size`` (or ``company.employee_count`` as a band: 1-10, 11-50,
               51-200, 201-1000, 1001-5000, 5000+); ``country`` (or ``address.country``);
               ``job_title`` from ``title``; ``seniority``; every other trait is a
               profile property (``properties.plan``), kept when a fit rule tests it.
               With both ``userId`` and ``anonymousId``: ``anonymous_id`` too (identity
               merges: the anonymous history joins the known lead, unless that
               anonymous id already belongs to another one)
``alias``      ``lead_linked``: ``previousId`` (``lead_id``) joins ``userId``
               (``canonical_id``), even when both are known leads
``group``      ``lead_profile``: the lead's account. ``groupId`` is the property
               ``account_id``, each trait ``account.<trait>`` (``properties.account.plan``);
               ``name``, ``industry`` and ``employees`` (as a band) also fill ``company``,
               ``industry`` and ``company_size``
=============  ========================================================================

Every message: lead id = ``userId``, else ``anonymousId``; event id = ``messageId``; time =
``timestamp``, else ``originalTimestamp``; ``properties`` kept (nested objects flattened to
dotted names, ``properties.product.price``; lists of objects left out). ``screen`` is
dead-lettered as not supported yet. A message that breaks the spec is rejected naming the
Segment field (``messageId: missing``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from . import _native
from .describe import describe_errors
from .events import BUILT_IN_TYPES, EVENT_ADAPTER, RESERVED_NAMES, LeadEvent
from .validation import MAX_EVENT_BYTES, Rejected, check_key, message_bytes

#: Segment call types read, and those dead-lettered as not supported (yet).
SUPPORTED = ("page", "track", "identify", "alias", "group")
UNSUPPORTED = ("screen",)
#: Traits read into profile fields; every other trait is a profile property
#: (``properties.plan``), kept when a fit rule tests it.
_PROFILE_TRAITS = frozenset(
    ("email", "company", "industry", "company_size", "country", "address", "title", "seniority")
)
#: Nesting kept when flattening properties (deeper values are left out).
MAX_DEPTH = 3
#: ``company.employee_count`` -> ``company_size`` bands (upper bound, band).
SIZE_BANDS = ((10, "1-10"), (50, "11-50"), (200, "51-200"), (1000, "201-1000"), (5000, "1001-5000"))


def parse_segment(
    value: bytes | str | None,
    key: bytes | None = None,
    *,
    require_key: bool = False,
    max_bytes: int = MAX_EVENT_BYTES,
) -> LeadEvent | Rejected:
    """One Segment-spec message (JSON) as a leadscore event, or why it is rejected (never
    raises). ``key`` is checked like :func:`schemas.validation.parse_event` does."""
    raw = message_bytes(value, max_bytes)
    if isinstance(raw, Rejected):
        return raw
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return Rejected(
                "invalid_utf8",
                f"not valid UTF-8: byte 0x{raw[err.start]:02x} at offset {err.start} "
                f"({err.reason})",
            )
        return Rejected("invalid_json", f"not valid JSON: {exc}")
    if not isinstance(message, dict):
        return Rejected("invalid_json", "expected a JSON object (a Segment message)")
    duplicate = _native.duplicate_key(raw)
    if duplicate is not None:
        return Rejected("invalid_json", f"{duplicate}: repeated key in the JSON object")
    mapped = _map(message)
    if isinstance(mapped, Rejected):
        return mapped
    data, origins = mapped
    try:
        event = EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for error in errors:
            loc = error["loc"]
            if len(loc) >= 2 and isinstance(loc[1], str) and loc[1] in origins:
                error["loc"] = (loc[0], *origins[loc[1]].split("."), *loc[2:])
        return Rejected("invalid_event", describe_errors(errors))
    return check_key(event, key) if require_key else event


def _map(message: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]] | Rejected:
    """The leadscore event dict of a Segment message, and where each field came from."""
    kind = message.get("type")
    if kind in UNSUPPORTED:
        return Rejected(
            "invalid_event",
            f"type: {kind} is not supported yet (leadscore reads {', '.join(SUPPORTED)})",
        )
    if kind not in SUPPORTED:
        got = f"{kind!r}" if isinstance(kind, str) else "nothing" if kind is None else "not text"
        return Rejected("invalid_event", f"type: expected one of {', '.join(SUPPORTED)}, got {got}")
    envelope = _envelope(message)
    if isinstance(envelope, Rejected):
        return envelope
    data, origins = envelope
    context = _object(message.get("context"))
    if kind == "identify":
        return _identify(message, context, data, origins)
    if kind == "alias":
        return _alias(message, data, origins)
    if kind == "group":
        return _account(message, data, origins)
    properties = message.get("properties", {})
    if not isinstance(properties, dict):
        return Rejected("invalid_event", "properties: expected an object")
    if kind == "track":
        name = message.get("event")
        if name in BUILT_IN_TYPES or name in RESERVED_NAMES:
            return Rejected(
                "invalid_event",
                f"event: {name!r} is the name of a leadscore event type; rules would read "
                "it as that type: rename the track event (e.g. 'Download Completed')",
            )
        data["type"] = "track"
        data["event"] = name
        origins["event"] = "event"
    else:
        page = _object(context.get("page"))
        data["type"] = "page_view"
        for field, fallback, where in (
            ("url", page.get("url"), "context.page.url"),
            ("title", message.get("name"), "name"),
            ("referrer", page.get("referrer"), "context.page.referrer"),
        ):
            if properties.get(field) not in (None, ""):  # "": a direct visit's referrer
                data[field] = properties[field]
                origins[field] = f"properties.{field}"
            elif fallback not in (None, ""):
                data[field] = fallback
                origins[field] = where
        if "url" not in data:
            return Rejected("invalid_event", "properties.url: missing (and no context.page.url)")
    data["properties"] = _flat(properties)
    return data, origins


def _identify(
    message: Mapping[str, Any],
    context: Mapping[str, Any],
    data: dict[str, Any],
    origins: dict[str, str],
) -> tuple[dict[str, Any], dict[str, str]] | Rejected:
    """An ``identify`` call: the profile, and the anonymous id it was known by, if any."""
    traits = message.get("traits", context.get("traits", {}))
    if not isinstance(traits, dict):
        return Rejected("invalid_event", "traits: expected an object")
    data["type"] = "lead_profile"
    data.update(_profile(traits, origins))
    others = {k: v for k, v in traits.items() if k not in _PROFILE_TRAITS}
    data["properties"] = _flat(others)
    anonymous = message.get("anonymousId")
    if origins["lead_id"] == "userId" and anonymous not in (None, "", data["lead_id"]):
        data["anonymous_id"] = anonymous
        origins["anonymous_id"] = "anonymousId"
    return data, origins


def _alias(
    message: Mapping[str, Any], data: dict[str, Any], origins: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str]] | Rejected:
    """An ``alias`` call: ``previousId`` joins ``userId``."""
    previous = message.get("previousId")
    if previous is None or previous == "":
        return Rejected("invalid_event", "previousId: missing")
    if origins["lead_id"] != "userId":
        return Rejected("invalid_event", "userId: missing (an alias joins previousId to it)")
    data.update(type="lead_linked", lead_id=previous, canonical_id=data["lead_id"])
    origins.update(lead_id="previousId", canonical_id="userId")
    return data, origins


def _envelope(message: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]] | Rejected:
    """Event id, lead id and time of any message, and which Segment fields they came from."""
    origins = {"event_id": "messageId", "lead_id": "userId", "occurred_at": "timestamp"}
    lead = message.get("userId")
    if lead is None or lead == "":
        lead = message.get("anonymousId")
        origins["lead_id"] = "anonymousId"
        if lead is None or lead == "":
            return Rejected("invalid_event", "userId, anonymousId: missing (one is needed)")
    when = message.get("timestamp")
    if when is None:
        when = message.get("originalTimestamp")
        origins["occurred_at"] = "originalTimestamp"
    if message.get("messageId") is None:
        return Rejected("invalid_event", "messageId: missing")
    if when is None:
        return Rejected("invalid_event", "timestamp: missing (and no originalTimestamp)")
    return {"event_id": message["messageId"], "lead_id": lead, "occurred_at": when}, origins


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _profile(traits: Mapping[str, Any], origins: dict[str, str]) -> dict[str, Any]:
    company = traits.get("company")
    company = company if isinstance(company, dict) else {"name": company}
    address = _object(traits.get("address"))
    found: dict[str, Any] = {}
    for field, candidates in (
        ("email", (("email", traits.get("email")),)),
        ("company", (("company", company.get("name")),)),
        (
            "industry",
            (("industry", traits.get("industry")), ("company.industry", company.get("industry"))),
        ),
        (
            "company_size",
            (
                ("company_size", traits.get("company_size")),
                ("company.employee_count", _band(company.get("employee_count"))),
            ),
        ),
        (
            "country",
            (("country", traits.get("country")), ("address.country", address.get("country"))),
        ),
        ("job_title", (("title", traits.get("title")),)),
        ("seniority", (("seniority", traits.get("seniority")),)),
    ):
        for where, value in candidates:
            if value is not None:
                found[field] = value
                origins[field] = f"traits.{where}"
                break
    return found


def _account(
    message: Mapping[str, Any], data: dict[str, Any], origins: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str]] | Rejected:
    """A ``group`` call: the lead's account, as profile properties ``account_id`` and
    ``account.<trait>`` (fit rules may test them), and its ``name``, ``industry`` and
    ``employees`` as the profile's company, industry and size band."""
    group = message.get("groupId")
    if group is None or group == "":
        return Rejected("invalid_event", "groupId: missing")
    traits = message.get("traits", {})
    if not isinstance(traits, dict):
        return Rejected("invalid_event", "traits: expected an object")
    data["type"] = "lead_profile"
    for field, trait, value in (
        ("company", "name", traits.get("name")),
        ("industry", "industry", traits.get("industry")),
        ("company_size", "employees", _band(traits.get("employees"))),
    ):
        if value is not None:
            data[field] = value
            origins[field] = f"traits.{trait}"
    data["properties"] = {"account_id": group, **_flat(traits, "account.")}
    origins["properties"] = "traits"
    return data, origins


def _band(count: Any) -> Any:
    """An employee count as a ``company_size`` band (anything else as it is)."""
    if isinstance(count, bool) or not isinstance(count, int | float):
        return count
    for upper, band in SIZE_BANDS:
        if count <= upper:
            return band
    return "5000+"


def _flat(properties: Mapping[str, Any], prefix: str = "", depth: int = 1) -> dict[str, Any]:
    """Scalars and lists of scalars as they are; objects flattened to dotted names."""
    flat: dict[str, Any] = {}
    for name, value in properties.items():
        if isinstance(value, dict):
            if depth < MAX_DEPTH:
                flat.update(_flat(value, f"{prefix}{name}.", depth + 1))
        elif isinstance(value, list):
            if not any(isinstance(v, dict | list) for v in value):
                flat[f"{prefix}{name}"] = value
        else:
            flat[f"{prefix}{name}"] = value
    return flat
