"""The native JSONL/Kafka fast path (``leadscore_core.parse_event_fast``) against the
Python validation (``schemas.validation.parse_event``).

The one rule: whenever the fast path accepts bytes, ``parse_event`` accepts the same bytes
and gives exactly the same values, with the same Python types (``int`` vs ``float`` vs
``bool`` vs ``str``). Declining ("not sure", ``None``) is always allowed, but must stay rare
for ordinary events, so the tests also check that the events our producers and benchmarks
write do take the fast path.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import _native as leadscore_core
from schemas.events import BUILT_IN_TYPES, EVENT_MODELS, event_fields
from schemas.times import _RFC3339
from schemas.validation import MAX_EVENT_BYTES, FastEvent, Rejected, parse_event, parse_for_scoring
from tests.strategies import generate_event_log

REPO = Path(__file__).resolve().parents[2]

EVENT_TYPES = BUILT_IN_TYPES  # what the fast path takes (track events go to pydantic)
ENVELOPE = ("event_id", "type", "lead_id", "occurred_at", "properties")
#: Fields the fast path declines on purpose (pydantic reads them): a profile's
#: ``anonymous_id`` (identity merges, rare: once per identified visitor).
DECLINED = ("anonymous_id",)
#: Type-specific fields of each model (all ``str`` or ``str | None``).
OWN_FIELDS = {
    event_type: tuple(
        name for name in model.model_fields if name not in ENVELOPE and name not in DECLINED
    )
    for event_type, model in EVENT_MODELS.items()
}
ALL_FIELDS = sorted({name for names in OWN_FIELDS.values() for name in names})
URL_FIELDS = ("url", "referrer")
#: Max length (characters) of each string field.
LIMITS = {"event_id": 128, "lead_id": 256} | {
    name: 4096 if name in URL_FIELDS else 2048 for name in ALL_FIELDS
}
#: Characters of 1, 2, 3 and 4 UTF-8 bytes: limits count characters, not bytes.
WIDE_CHARS = ("a", "é", "€", "😀")
I64 = 2**63
#: The accepted range of event times.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
RANGE_US = (LATEST - EARLIEST) // timedelta(microseconds=1)

#: Stands for a raw JSON text in a dict until serialisation (see `serialise`).
RAW = "\x00raw:"

#: Examples per property test (twice as many for mutated messages): about 2 s in all.
#: PROPERTY_TEST_EXAMPLES=20000 for a long hunt.
EXAMPLES = int(os.environ.get("PROPERTY_TEST_EXAMPLES", "300"))
fast_settings = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def parse_fast(
    data: bytes,
    key: bytes | None = None,
    *,
    require_key: bool = False,
    max_bytes: int = MAX_EVENT_BYTES,
) -> dict[str, Any] | None:
    return leadscore_core.parse_event_fast(data, key, require_key, max_bytes)


def assert_same(fast: Any, slow: Any, what: str) -> None:
    """Equal values of the very same types (lists item by item; -0.0 is not 0.0)."""
    assert type(fast) is type(slow), f"{what}: {fast!r} vs pydantic's {slow!r}"
    if isinstance(slow, list):
        assert len(fast) == len(slow), f"{what}: {fast!r} vs pydantic's {slow!r}"
        for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
            assert_same(a, b, f"{what}[{i}]")
    elif isinstance(slow, float):
        assert fast == slow and math.copysign(1, fast) == math.copysign(1, slow), (
            f"{what}: {fast!r} vs pydantic's {slow!r}"
        )
    else:
        assert fast == slow, f"{what}: {fast!r} vs pydantic's {slow!r}"


def check_agrees(
    data: bytes,
    key: bytes | None = None,
    *,
    require_key: bool = False,
    max_bytes: int = MAX_EVENT_BYTES,
) -> dict[str, Any] | None:
    """The fast path's verdict on ``data``, after checking it against ``parse_event``."""
    fast = parse_fast(data, key, require_key=require_key, max_bytes=max_bytes)
    if fast is None:
        return None
    event = parse_event(data, key, require_key=require_key, max_bytes=max_bytes)
    assert not isinstance(event, Rejected), f"fast path accepted {data!r}, Python: {event}"
    assert_same(fast["event_id"], event.event_id, "event_id")
    assert_same(fast["lead_id"], event.lead_id, "lead_id")
    assert_same(fast["type"], event.type, "type")
    assert_same(fast["occurred_at_ms"], event.occurred_at_ms, "occurred_at_ms")
    names = event_fields(event.type) - {"occurred_at"}
    expected = {name: event.field_value(name) for name in names}
    expected |= {f"properties.{name}": value for name, value in event.properties.items()}
    expected = {name: value for name, value in expected.items() if value is not None}
    assert set(fast["fields"]) == set(expected), data
    for name, value in expected.items():
        assert_same(fast["fields"][name], value, name)
    return fast


def envelope(event_type: str, **fields: Any) -> dict[str, Any]:
    """A minimal event of ``event_type`` (at 2026-01-01T00:00:00Z) with ``fields``."""
    event: dict[str, Any] = {"event_id": "e-1", "type": event_type, "lead_id": "l-1"}
    return event | {"occurred_at": "2026-01-01T00:00:00Z"} | fields


def serialise(event: dict[str, Any], style: str = "json") -> bytes:
    """``event`` as JSON bytes; string values starting with :data:`RAW` are written raw."""
    raws: list[str] = []

    def mark(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(RAW):
            raws.append(value.removeprefix(RAW))
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    marked = mark(event)
    if style == "orjson":
        try:
            data = orjson.dumps(marked)
        except orjson.JSONEncodeError:  # big ints, lone surrogates
            data = json.dumps(marked).encode()
    elif style == "pretty":
        data = json.dumps(marked, indent=2, ensure_ascii=False).encode("utf-8", "surrogatepass")
    elif style == "compact":
        data = json.dumps(marked, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    else:  # json.dumps' defaults: ", " / ": ", everything non-ASCII escaped
        data = json.dumps(marked).encode()
    for i, raw in enumerate(raws):
        data = data.replace(f'"@@raw{i}@@"'.encode(), raw.encode("utf-8", "surrogatepass"))
    return data


# --- strategies --------------------------------------------------------------------------

#: Text without lone surrogates (hypothesis' default alphabet), control characters included.
texts = st.text(max_size=12)
ids = st.text(min_size=1, max_size=24)


def format_time(
    local: datetime,
    offset_min: int,
    *,
    sep: str = "T",
    seconds: bool = True,
    digits: int = 0,
    extra: str = "",
    zone: str = "",
) -> str:
    """RFC 3339-ish text: ``local`` wall time at ``offset_min`` (``zone`` overrides it)."""
    text = f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
    text += f"{sep}{local.hour:02d}:{local.minute:02d}"
    if seconds:
        text += f":{local.second:02d}"
        if digits:
            text += "." + (f"{local.microsecond:06d}" + extra)[:digits]
    if zone:
        return text + zone
    sign = "-" if offset_min < 0 else "+"
    hours, minutes = divmod(abs(offset_min), 60)
    return text + f"{sign}{hours:02d}:{minutes:02d}"


@st.composite
def ordinary_times(draw: st.DrawFn) -> str:
    """Timestamps in the forms producers write, within the accepted range."""
    utc = EARLIEST + timedelta(microseconds=draw(st.integers(0, RANGE_US - 1)))
    offset_min = draw(st.sampled_from((0, 0, 60, -300, 330, 345, -(23 * 60 + 59), 23 * 60 + 59)))
    local = utc + timedelta(minutes=offset_min)
    zone = ""
    if offset_min == 0:
        zone = draw(st.sampled_from(("Z", "+00:00", "-00:00", "+0000")))
    elif draw(st.booleans()):
        sign = "-" if offset_min < 0 else "+"
        zone = f"{sign}{abs(offset_min) // 60:02d}{abs(offset_min) % 60:02d}"  # no colon
    return format_time(
        local,
        offset_min,
        sep=draw(st.sampled_from("Tt ")),
        seconds=draw(st.integers(0, 5)) > 0,
        digits=draw(st.sampled_from((0, 0, 3, 6, 1, 2, 4, 5, 7, 8, 9))),
        extra=draw(st.text("0123456789", min_size=3, max_size=3)),
        zone=zone,
    )


@st.composite
def odd_times(draw: st.DrawFn) -> str:
    """Timestamps with (mostly) one odd part each: a calendar or clock error, an unusual
    separator, fraction or offset, an instant near the ends of the accepted range, or
    anything the project's regex lets through (non-ASCII digits, a trailing newline...)."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.from_regex(_RFC3339))

    def odd(one_in: int = 8) -> bool:
        # Odd one time in `one_in`, and never in hypothesis' simplest examples (all zeros).
        return draw(st.integers(1, one_in)) == one_in

    if odd():  # near the ends of the range
        edge = draw(st.sampled_from((EARLIEST, LATEST)))
        utc = edge + timedelta(microseconds=draw(st.integers(-3_000_000, 3_000_000)))
    else:
        utc = EARLIEST + timedelta(microseconds=draw(st.integers(0, RANGE_US - 1)))
    offset_min = draw(st.sampled_from((0, 0, 90, -300, 23 * 60 + 59, -(23 * 60 + 59))))
    local = utc + timedelta(minutes=offset_min)
    date = f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
    if odd():
        year = draw(st.sampled_from((2000, 2023, 2024, 2100)))
        month, day = draw(st.integers(0, 13)), draw(st.sampled_from((0, 29, 30, 31, 32)))
        date = f"{year:04d}-{month:02d}-{day:02d}"
    sep = draw(st.sampled_from("_x,") if odd() else st.sampled_from("Tt "))
    clock = f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    if odd():
        clock = draw(st.sampled_from(("24:00:00", "23:60:00", "23:59:60", "12:00", "12", "1:00")))
    fraction = "." + f"{local.microsecond:06d}987"[: draw(st.integers(1, 9))]
    if odd():
        fraction = draw(st.sampled_from(("", ".", ",5", ".1234567890", ".123456789012")))
    zone = draw(st.sampled_from(("Z", "+00:00", "-00:00", "+0000")))
    if offset_min:
        sign = "-" if offset_min < 0 else "+"
        zone = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    if odd(one_in=4):
        zone = draw(
            st.sampled_from(
                ("z", "z", "", "+24:00", "-24:00", "+01:60", "-00:99", "+01", " Z", "Z\n", "+1:00")
            )
        )
    return f"{date}{sep}{clock}{fraction}{zone}"


def ordinary_floats() -> st.SearchStrategy[float]:
    return st.floats(-9.2e18, 9.2e18, allow_nan=False).filter(
        lambda f: not (f == 0 and math.copysign(1, f) < 0)
    )


ordinary_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-I64, I64 - 1), ordinary_floats(), texts
)
ordinary_properties = st.dictionaries(
    texts, st.one_of(ordinary_scalars, st.lists(ordinary_scalars, max_size=4)), max_size=4
)
#: Emails: any local part, an ASCII domain with case and surrounding whitespace.
ordinary_emails = st.builds(
    lambda local, domain, pad: f"{local}@{pad}{domain}{pad}",
    texts,
    st.text("abcXYZ.-09", max_size=12),
    st.sampled_from(("", " ", "\t", "\x1c")),
) | texts.filter(lambda t: "@" not in t)


def field_text(name: str) -> st.SearchStrategy[str]:
    """Valid text for a type-specific field."""
    if name == "status":
        return st.sampled_from(("registered", "attended"))
    if name == "email":
        return ordinary_emails
    if name in URL_FIELDS:
        return st.text(min_size=1, max_size=12)
    return texts


@st.composite
def ordinary_events(draw: st.DrawFn) -> dict[str, Any]:
    """Valid events of every shape the fast path must take: optional fields present,
    absent or null, Unicode text, numbers that fit 64 bits, the usual timestamp forms."""
    event_type = draw(st.sampled_from(EVENT_TYPES))
    model = EVENT_MODELS[event_type]
    event: dict[str, Any] = {
        "event_id": draw(ids),
        "type": event_type,
        "lead_id": draw(ids),
        "occurred_at": draw(ordinary_times()),
    }
    for name in OWN_FIELDS[event_type]:
        if model.model_fields[name].is_required():
            event[name] = draw(field_text(name))
        else:
            choice = draw(st.integers(0, 2))
            if choice == 1:
                event[name] = None
            elif choice == 2:
                event[name] = draw(field_text(name))
    if draw(st.booleans()):
        event["properties"] = draw(ordinary_properties)
    return event


@st.composite
def shuffled(draw: st.DrawFn, event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with its keys in a random order."""
    return {key: event[key] for key in draw(st.permutations(list(event)))}


@st.composite
def ordinary_messages(draw: st.DrawFn) -> bytes:
    event = draw(shuffled(draw(ordinary_events())))
    data = serialise(event, draw(st.sampled_from(("json", "compact", "pretty", "orjson"))))
    return data + draw(st.sampled_from((b"", b"", b"\n", b"\r\n", b" \t")))


#: JSON texts for a property (or list item), raw: the tricky numbers and strings.
RAW_VALUES = (
    "0", "-0", "-0.0", "0.0", "0e0", "-1", "1.5", "1e2", "1E+2", "0.1e1", "1e-400", "-1e-400",
    "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "9223372036854775807",
    "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
    "18446744073709551615", "18446744073709551616", "1" + "0" * 30, "9007199254740993",
    "9007199254740993.0", "1.7976931348623157e308", "1.7976931348623159e308", "5e-324",
    "2.4703282292062327e-324", "2.4703282292062328e-324", "2.2250738585072011e-308",
    "123456789012345678901234567890.5", "1e19", "-9.2233720368547758e18", "01", "1.", ".5",
    "+1", "1e", "0x10", "1_000", "true", "false", "null", "[]", "[[]]", "{}", "[1,[2]]",
    "[1,{}]", "[1,\"a\",null,true,1.5,-0]", '"\\ud800"', '"\\udc00"', '"\\ud800x"',
    '"\\ud800\\u0041"', '"\\ud83d\\ude00"', '"\\u0000"', '"\\/\\b\\f\\n\\r\\t\\"\\\\"',
    '"\\x41"', '"\\U0041"', '"\\u004"', '"a\tb"', '"\\u00e9"', '"\\u005a"', "\"'\"",
)  # fmt: skip

#: Characters including lone surrogates (which hypothesis leaves out by default).
texts_with_surrogates = st.characters() | st.characters(
    min_codepoint=0xD7F0, max_codepoint=0xE010, exclude_categories=()
)

any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """An event dict with 0..3 changes that may make it invalid (or not)."""
    event = draw(ordinary_events())
    keys = [*ENVELOPE, *ALL_FIELDS, "extra", "Type", "properties "]
    for _ in range(draw(st.integers(0, 3))):
        change = draw(st.integers(0, 9))
        key = draw(st.sampled_from(keys))
        if change == 0:  # any JSON value, for any key
            event[key] = draw(any_json)
        elif change == 1:
            event.pop(draw(st.sampled_from(sorted(event))), None)
        elif change == 2:  # a raw tricky value for a field
            event[key] = RAW + draw(st.sampled_from(RAW_VALUES))
        elif change == 3:  # ... or for a property
            props = event.setdefault("properties", {})
            if isinstance(props, dict):
                props[draw(texts)] = RAW + draw(st.sampled_from(RAW_VALUES))
        elif change == 4:  # the fields of one type under another type
            event["type"] = draw(st.sampled_from((*EVENT_TYPES, "page_visit", "")))
        elif change == 5:  # lengths at and over the limits, in characters of 1..4 bytes
            name = draw(st.sampled_from(sorted(LIMITS)))
            size = LIMITS[name] + draw(st.sampled_from((0, 1, -1)))
            event[name] = draw(st.sampled_from(WIDE_CHARS)) * size
        elif change == 6:
            event["occurred_at"] = draw(odd_times() | ordinary_times())
        elif change == 7:  # empty strings
            event[draw(st.sampled_from(sorted(LIMITS)))] = ""
        elif change == 8:  # lone surrogates and anything else in text
            event[key] = draw(st.text(texts_with_surrogates, max_size=6))
        else:  # Webinar.status is a Literal
            event["status"] = draw(st.sampled_from((None, "registered", "attended", "Attended")))
    return event


@st.composite
def mutated_messages(draw: st.DrawFn) -> tuple[bytes, bytes | None, bool, int]:
    """(data, key, require_key, max_bytes): events mutated as dicts, then as bytes."""
    event = draw(shuffled(draw(mutated_events())))
    data = serialise(event, draw(st.sampled_from(("json", "compact", "pretty", "orjson"))))
    change = draw(st.integers(0, 7))
    if change == 1 and len(data) > 1:  # a duplicate key, first or last
        name = draw(st.sampled_from((*ENVELOPE, *ALL_FIELDS)))
        value = serialise({"v": draw(any_json | st.just(event.get(name)))})[6:-1]
        pair = f'"{name}": '.encode() + value
        if draw(st.booleans()):
            data = b"{" + pair + b"," + data[1:]
        else:
            data = data.rstrip()[:-1] + b"," + pair + b"}"
    elif change == 2:  # truncated
        data = data[: draw(st.integers(0, len(data)))]
    elif change == 3:  # a stray byte anywhere (invalid UTF-8, NUL, controls...)
        at = draw(st.integers(0, len(data)))
        stray = draw(
            st.sampled_from(
                (b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\x00", b"\t", b"}", b",")
            )
        )
        data = data[:at] + stray + data[at:]
    elif change == 4:  # around the object
        data = draw(st.sampled_from((b"", b" ", b"\xef\xbb\xbf", b"\n"))) + data
        data += draw(st.sampled_from((b"", b"\n", b"\x0c", b"\x00", b" x", b"{}", b"\r\n\t ")))
    lead_id = event.get("lead_id")
    right_key = lead_id.encode("utf-8", "surrogatepass") if isinstance(lead_id, str) else b"x"
    key = draw(st.sampled_from((None, b"", right_key, right_key + b" ", b"\xff")))
    max_bytes = draw(st.sampled_from((MAX_EVENT_BYTES, len(data), len(data) - 1, 1)))
    return data, key, draw(st.booleans()), max_bytes


# --- the differential properties ------------------------------------------------------------


@fast_settings
@given(ordinary_messages())
def test_ordinary_events_take_the_fast_path_with_pydantics_values(data: bytes) -> None:
    assert not isinstance(parse_event(data), Rejected)
    assert check_agrees(data) is not None, f"declined an ordinary event: {data!r}"


@settings(fast_settings, max_examples=2 * EXAMPLES)
@given(mutated_messages())
def test_whatever_the_fast_path_accepts_pydantic_accepts_alike(
    message: tuple[bytes, bytes | None, bool, int],
) -> None:
    data, key, require_key, max_bytes = message
    check_agrees(data, key, require_key=require_key, max_bytes=max_bytes)


@fast_settings
@given(odd_times() | ordinary_times())
def test_timestamps(text: str) -> None:
    check_agrees(serialise(envelope("email_open", occurred_at=text), "compact"))


@fast_settings
@given(st.data())
def test_keys_and_size_limit(data: st.DataObject) -> None:
    event = data.draw(ordinary_events())
    message = serialise(event)
    lead_key = event["lead_id"].encode()
    assert check_agrees(message, lead_key, require_key=True) is not None
    assert check_agrees(message, b"garbage", require_key=False) is not None
    for wrong in (None, b"", lead_key + b"x", b" " + lead_key):
        assert parse_fast(message, wrong, require_key=True) is None
    assert check_agrees(message, max_bytes=len(message)) is not None
    assert parse_fast(message, max_bytes=len(message) - 1) is None


def test_result_shape() -> None:
    properties = {"plan": "pro", "seats": 5, "tags": ["a", 1, 2.5], "gone": None}
    event = envelope("lead_profile", email="Bob@Globex.Example", country=None)
    assert parse_fast(serialise(event | {"properties": properties})) == {
        "event_id": "e-1",
        "lead_id": "l-1",
        "type": "lead_profile",
        "occurred_at_ms": 1_767_225_600_000,
        "fields": {  # what event.field_value(name) gives, None left out
            "event_id": "e-1",
            "lead_id": "l-1",
            "email": "Bob@Globex.Example",
            "email_domain": "globex.example",
            "properties.plan": "pro",
            "properties.seats": 5,
            "properties.tags": ["a", 1, 2.5],
        },
    }


# --- coverage: real logs take the fast path ---------------------------------------------------


def test_every_valid_example_event_takes_the_fast_path() -> None:
    lines = (REPO / "examples" / "events.jsonl").read_bytes().splitlines()
    valid = [line for line in lines if not isinstance(parse_event(line), Rejected)]
    assert len(valid) > 50
    declined = [line for line in valid if check_agrees(line) is None]
    assert not declined
    for line in lines:  # and the bad ones are not accepted
        check_agrees(line)


def load_bench_replay() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bench_replay", REPO / "bench" / "bench_replay.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_log_takes_the_fast_path(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    load_bench_replay().generate(log, 4000, 500, 7)
    lines = log.read_bytes().splitlines()
    valid = [line for line in lines if not isinstance(parse_event(line), Rejected)]
    assert len(valid) > 3900
    assert [line for line in valid if check_agrees(line) is None] == []
    for line in lines:
        check_agrees(line)


@pytest.mark.parametrize("style", ["json", "orjson"])
def test_generated_event_log_takes_the_fast_path(style: str) -> None:
    for event in generate_event_log(3, 2000, 150):
        data = serialise(event, style)
        assert check_agrees(data, event["lead_id"].encode(), require_key=True) is not None, data


# --- edge cases found while checking pydantic and fromisoformat --------------------------------

#: (occurred_at, does the fast path accept it). Python accepts every accepted one (checked by
#: `check_agrees`); the comments say what Python 3.11 does with the declined ones.
TIMESTAMPS = [
    ("2026-03-04T10:20:30Z", True),
    ("2026-03-04t10:20:30Z", True),
    ("2026-03-04 10:20:30Z", True),
    ("2026-03-04T10:20Z", True),  # seconds are optional
    ("2026-03-04T10:20+01:00", True),
    ("2026-03-04T10:20:30.1Z", True),
    ("2026-03-04T10:20:30.12Z", True),
    ("2026-03-04T10:20:30.123Z", True),
    ("2026-03-04T10:20:30.1234Z", True),
    ("2026-03-04T10:20:30.12345Z", True),
    ("2026-03-04T10:20:30.123456Z", True),
    ("2026-03-04T10:20:30.1234567Z", True),  # Python keeps 6 digits: truncated...
    ("2026-03-04T10:20:30.999999999Z", True),  # ... never rounded up
    ("2026-01-01T00:00:00.0009Z", True),  # sub-millisecond: truncated to ...600000
    ("2026-03-04T10:20:30+01:30", True),
    ("2026-03-04T10:20:30+0130", True),  # offset without a colon
    ("2026-03-04T10:20:30-00:00", True),
    ("2026-03-04T10:20:30-0000", True),
    ("2026-03-04T10:20:30+23:59", True),
    ("2026-03-04T10:20:30-23:59", True),
    ("2026-03-04T10:20:30.123456+05:45", True),
    ("2024-02-29T12:00:00Z", True),
    ("2000-02-29T12:00:00Z", True),
    ("2000-01-01T00:00:00Z", True),  # the earliest accepted instant
    ("1999-12-31T23:00:00-01:00", True),  # the same instant
    ("2099-12-31T23:59:59.999999Z", True),
    ("2100-01-01T00:30:00+01:00", True),  # 2099 in UTC
    # Declined, and Python rejects them too:
    ("2026-03-04T10:20:30", False),  # naive
    ("2026-03-04T10:20:30+24:00", False),  # offsets must be within +-24h
    ("2026-03-04T10:20:30-24:00", False),
    ("2026-03-04T23:59:60Z", False),  # no leap seconds
    ("2026-03-04T24:00:00Z", False),
    ("2025-02-29T12:00:00Z", False),
    ("2100-02-29T12:00:00Z", False),
    ("2024-02-30T12:00:00Z", False),
    ("2026-04-31T12:00:00Z", False),
    ("2026-13-01T12:00:00Z", False),
    ("2026-00-01T12:00:00Z", False),
    ("2026-01-00T12:00:00Z", False),
    ("2026-03-04T10:20:30.Z", False),  # fromisoformat allows it, the regex does not
    ("2026-03-04T10:20:30,5Z", False),  # ditto
    ("2026-03-04_10:20:30Z", False),  # fromisoformat takes any separator, the regex not
    ("2026-03-04T10:20:30+01", False),  # ditto
    ("2026-03-04T10:20.5Z", False),
    ("2026-03-04T10:20:30 Z", False),
    ("2026-03-04T10:20:30Z\n", False),  # a trailing newline
    ("\uff12\uff10\uff12\uff16-03-04T10:20:30Z", False),  # fullwidth digits
    ("2026-03-04T10:20:30+01:60", False),  # fromisoformat would read it as +02:00
    ("2026-03-04T10:20:30-00:99", False),  # ... and this as -01:39
    ("1999-12-31T23:59:59.999999Z", False),
    ("2100-01-01T00:00:00Z", False),
    ("2099-12-31T23:30:00-01:00", False),
    # Declined although Python accepts them:
    ("2026-03-04T10:20:30z", False),  # RFC 3339 allows a lowercase z (Python upper-cases it)
    ("2026-03-04T10:20:30.5z", False),
    ("2026-03-04T10:20:30.1234567890Z", False),  # more than 9 fraction digits
]


@pytest.mark.parametrize(("text", "fast"), TIMESTAMPS, ids=[t for t, _ in TIMESTAMPS])
def test_timestamp_forms(text: str, fast: bool) -> None:
    event = envelope("email_open", occurred_at=text)
    for style in ("json", "compact"):
        assert (check_agrees(serialise(event, style)) is not None) is fast


def test_timestamps_match_pythons_arithmetic() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        micros = rng.randrange(RANGE_US)
        if rng.random() < 0.5:  # xxx.999999: truncating and rounding differ in ms
            micros = micros // 1_000_000 * 1_000_000 + 999_999
        utc = EARLIEST + timedelta(microseconds=micros)
        offset_min = rng.randrange(-1439, 1440)
        local = utc + timedelta(minutes=offset_min)
        stamp = format_time(local, offset_min, digits=rng.randrange(10), extra="987")
        data = serialise(envelope("unsubscribe", occurred_at=stamp))
        if not isinstance(parse_event(data), Rejected):
            assert check_agrees(data) is not None, stamp


#: (raw JSON of a property, the value the fast path gives, or None when it declines)
PROPERTY_VALUES: list[tuple[str, Any]] = [
    ("0", 0),
    ("-1", -1),
    ("9223372036854775807", I64 - 1),
    ("-9223372036854775808", -I64),
    ("1.5", 1.5),
    ("1e2", 100.0),  # an exponent makes a float, as in Python
    ("1E+2", 100.0),
    ("0.1e1", 1.0),
    ("1e-400", 0.0),  # underflow is 0.0 in Python too (overflow is rejected)
    ("9007199254740993.0", 9007199254740992.0),  # correctly rounded (ties to even)
    ("2.4703282292062328e-324", 5e-324),
    ("9.2e18", 9.2e18),
    ("-1.5e-300", -1.5e-300),
    ("true", True),
    ("[]", []),
    ('[1,"a",null,true,1.5]', [1, "a", None, True, 1.5]),
    ('"\\ud83d\\ude00"', "\U0001f600"),
    ('"\\u0000"', "\x00"),
    ('"\\/\\b\\f\\n\\r\\t\\"\\\\"', '/\b\f\n\r\t"\\'),
    # Declined: Python keeps these as ints, serde_json would give floats (or -0.0).
    ("-0", None),  # the int 0 in Python
    ("-0.0", None),
    ("-1e-400", None),
    ("9223372036854775808", None),
    ("-9223372036854775809", None),
    ("18446744073709551616", None),
    ("1e19", None),  # floats >= 2^63 look like 20-digit ints in serde_json
    ("1.7976931348623157e308", None),
    # Declined: Python rejects them.
    ("1e400", None),
    ("-1e400", None),
    ("1.7976931348623159e308", None),
    ("NaN", None),
    ("Infinity", None),
    ("[1,[2]]", None),
    ("{}", None),
    ("[{}]", None),
    ('"\\ud800"', None),
    ('"\\udc00"', None),
    ('"\\ud800x"', None),
    ('"a\tb"', None),  # a raw control character
    ("01", None),
    ("1.", None),
    (".5", None),
    ("+1", None),
]


@pytest.mark.parametrize(("raw", "expected"), PROPERTY_VALUES, ids=[r for r, _ in PROPERTY_VALUES])
def test_property_values(raw: str, expected: Any) -> None:
    event = envelope("email_open", properties={"p": RAW + raw, "q": 1})
    fast = check_agrees(serialise(event))
    if expected is None:
        assert fast is None
    else:
        assert fast is not None
        assert_same(fast["fields"]["properties.p"], expected, raw)


def tricky_float_texts(rng: random.Random) -> list[str]:
    """Decimal texts that are hard to round: random doubles' shortest reprs and 17 digits,
    and the exact midpoints between neighbouring doubles (ties), and a bit off them."""
    texts: list[str] = []
    for _ in range(400):
        value = rng.choice((rng.random() * 10.0 ** rng.randint(-30, 18), 0.0))
        if value == 0.0:  # any bit pattern
            value = struct.unpack("<d", rng.getrandbits(63).to_bytes(8, "little"))[0]
        if not 0 < value < I64:  # (larger ones are declined, see PROPERTY_VALUES)
            continue
        tie = (Decimal(value) + Decimal(math.nextafter(value, math.inf))) / 2
        near = tie + Decimal(rng.choice((-1, 1))) * Decimal(10) ** (tie.adjusted() - 40)
        texts += [repr(value), f"{value:.17e}", f"{tie:e}", f"{near:.45e}", str(tie)]
    return texts


def test_floats_are_correctly_rounded() -> None:
    texts = tricky_float_texts(random.Random(5))
    for start in range(0, len(texts), 250):
        items = texts[start : start + 250]
        raw = RAW + "[" + ",".join(items) + "]"
        fast = check_agrees(serialise(envelope("unsubscribe", properties={"p": raw})))
        assert fast is not None
        assert_same(fast["fields"]["properties.p"], [json.loads(t) for t in items], "p")


BASE = b'{"event_id":"e-1","type":"page_view","lead_id":"l-1","occurred_at":"2026-01-01T00:00:00Z"'
WEBINAR = BASE.replace(b"page_view", b"webinar") + b',"webinar_id":"w"'
P = pytest.param

#: (message, accepted by the fast path)
MESSAGES = [
    P(BASE + b',"url":"u"}', True, id="plain"),
    P(BASE + b',"url":"u"}\r\n\t ', True, id="trailing JSON whitespace"),
    P(b" \n" + BASE + b',"url":"u"}', True, id="leading JSON whitespace"),
    P(BASE + b',"\\u0075rl":"u"}', True, id="escaped key"),
    P(BASE.replace(b"00Z", b"00\\u005a") + b',"url":"u"}', True, id="escaped Z"),
    P(BASE + b',"url":"u","title":null,"properties":{}}', True, id="null and empty"),
    P(BASE + b',"url":"u","title":""}', True, id="empty ShortText"),
    P(BASE + b',"url":""}', False, id="empty Url"),
    P(BASE + b',"url":null}', False, id="null required field"),
    P(BASE + b"}", False, id="missing required field"),
    P(BASE + b',"url":"u","url":"u"}', False, id="duplicate key"),  # pydantic: last wins
    P(BASE + b',"url":"u","type":"page_view"}', False, id="duplicate type"),
    P(BASE + b',"url":"u","properties":{"a":1,"a":1}}', False, id="duplicate property"),
    P(BASE + b',"url":"u","campaign_id":null}', False, id="null field of another model"),
    P(BASE + b',"url":"u","extra":1}', False, id="unknown key"),
    P(BASE + b',"url":"u","properties":null}', False, id="null properties"),
    P(BASE + b',"url":"u","properties":[]}', False, id="list properties"),
    P(BASE + b',"url":"u","title":1}', False, id="int for str"),
    P(BASE.replace(b'"e-1"', b"1") + b',"url":"u"}', False, id="int event_id"),
    P(BASE + b',"url":"u"} x', False, id="trailing text"),
    P(BASE + b',"url":"u"}\x0c', False, id="trailing form feed"),
    P(BASE + b',"url":"u"}\x00', False, id="trailing NUL"),
    P(BASE + b',"url":"u",}', False, id="trailing comma"),
    P(b"\xef\xbb\xbf" + BASE + b',"url":"u"}', False, id="BOM"),
    P(BASE + b',"url":"u\xff"}', False, id="invalid UTF-8"),
    P(BASE + b',"url":"u\xed\xa0\x80"}', False, id="UTF-8-encoded surrogate"),
    P(BASE + b',"url":"u\xc0\xaf"}', False, id="overlong UTF-8"),
    P(BASE + b',"url":"u"', False, id="truncated"),
    P(b"[" + BASE + b',"url":"u"}]', False, id="array"),
    P(b"", False, id="empty"),
    P(b"null", False, id="null"),
    P(WEBINAR + b',"status":"registered"}', True, id="status registered"),
    P(WEBINAR + b',"status":"attended"}', True, id="status attended"),
    P(WEBINAR + b',"status":"Attended"}', False, id="status Attended"),
    P(WEBINAR + b',"status":""}', False, id="status empty"),
    P(WEBINAR + b',"status":null}', False, id="status null"),
    P(WEBINAR + b"}", False, id="status missing"),
]


@pytest.mark.parametrize(("data", "fast"), MESSAGES)
def test_messages(data: bytes, fast: bool) -> None:
    assert (check_agrees(data) is not None) is fast


#: (email, email_domain) or (email, False) when the fast path declines the event.
EMAILS: list[tuple[str, Any]] = [
    ("alice@Acme.Example", "acme.example"),
    ("a@B.COM \t", "b.com"),
    ("a@\x1cb.com\x1f\x0b", "b.com"),  # Python's strip() also removes \x1c..\x1f
    ("a@b\x0bc", "b\x0bc"),
    ("a@b@C.de", "c.de"),  # the last @
    ("ünïcode@x.de", "x.de"),
    ("@x", "x"),
    ("a@", None),
    ("a@ ", None),
    ("nobody", None),
    ("", None),
    ("a@ÉX.com", False),  # Unicode lower/strip: left to Python
    ("a@x.com\u2028", False),
]


@pytest.mark.parametrize(("email", "domain"), EMAILS, ids=[repr(e) for e, _ in EMAILS])
def test_email_domain(email: str, domain: Any) -> None:
    fast = check_agrees(serialise(envelope("lead_profile", email=email)))
    if domain is False:
        assert fast is None
    else:
        assert fast is not None
        assert fast["fields"].get("email_domain") == domain


@pytest.mark.parametrize("char", WIDE_CHARS)
@pytest.mark.parametrize("name", ["event_id", "lead_id", "title", "url", "referrer", "session_id"])
def test_length_limits_count_characters(name: str, char: str) -> None:
    event = envelope("page_view", url="u")
    for style in ("json", "compact"):
        event[name] = char * LIMITS[name]
        assert check_agrees(serialise(event, style)) is not None
        event[name] = char * (LIMITS[name] + 1)
        assert check_agrees(serialise(event, style)) is None


def test_the_live_worker_parses_to_what_pydantic_gives() -> None:
    """``parse_for_scoring`` (the worker's parser): behaviour events become FastEvents
    that read exactly like the pydantic model; profile events and rejects are pydantic's."""
    log = generate_event_log(3, 2_000, 50)
    log.append({"type": "page_view", "lead_id": "x"})  # invalid: a Rejected, same reason
    for data in log:
        raw = orjson.dumps(data)
        key = str(data["lead_id"]).encode()
        slow = parse_event(raw, key, require_key=True)
        fast = parse_for_scoring(raw, key, require_key=True)
        if isinstance(slow, Rejected):
            assert fast == slow
            continue
        assert not isinstance(fast, Rejected)
        if slow.type == "lead_profile":
            assert fast == slow
            continue
        assert isinstance(fast, FastEvent)
        assert (fast.event_id, fast.lead_id, fast.type, fast.occurred_at_ms) == (
            slow.event_id,
            slow.lead_id,
            slow.type,
            slow.occurred_at_ms,
        )
        names = set(event_fields(slow.type)) | {f"properties.{p}" for p in slow.properties}
        for name in names | {"properties.missing", "no_such_field"}:
            assert fast.field_value(name) == slow.field_value(name), name
