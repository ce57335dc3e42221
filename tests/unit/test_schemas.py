"""Input events, their validation (``parse_event``), dead letters and the JSON Schema files."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events import EVENT_MODELS, BaseEvent, LeadProfile
from schemas.examples import EXAMPLE_LEAD_ID, EXAMPLES, OUTPUT_EXAMPLES
from schemas.export import SCHEMA_DIR, check_schemas, export_schemas, main, render_schemas
from schemas.outputs import DeadLetter, LeadBecameHot, LeadCooled
from schemas.validation import (
    DEAD_LETTER_PAYLOAD_MAX,
    MAX_EVENT_BYTES,
    ErrorKind,
    Rejected,
    dead_letter,
    parse_event,
)

EVENT_TYPES = (
    "page_view, email_open, email_click, download, form_submit, webinar, unsubscribe, "
    "lead_profile, track, score_adjusted, score_reset, lead_erased, lead_linked, lead_absorbed"
)

#: Passed as a field value to `message()` to leave the field out.
OMIT: Any = object()


def message(event_type: str = "page_view", **changes: Any) -> bytes:
    """The example event of ``event_type`` as a Kafka message value, with ``changes``."""
    event = copy.deepcopy(EXAMPLES[event_type])
    event.update(changes)
    return json.dumps({k: v for k, v in event.items() if v is not OMIT}).encode()


def parse_ok(value: bytes | str, **kwargs: Any) -> BaseEvent:
    result = parse_event(value, **kwargs)
    assert not isinstance(result, Rejected), result
    return result


def rejected(value: bytes | str | None, **kwargs: Any) -> Rejected:
    result = parse_event(value, **kwargs)
    assert isinstance(result, Rejected), f"accepted: {result!r}"
    return result


# --- happy path ------------------------------------------------------------------------


def test_every_event_type_has_an_example() -> None:
    assert list(EXAMPLES) == list(EVENT_MODELS)


@pytest.mark.parametrize("event_type", list(EVENT_MODELS))
def test_each_example_parses_to_its_model(event_type: str) -> None:
    event = parse_ok(message(event_type))

    assert type(event) is EVENT_MODELS[event_type]
    assert event.model_dump(mode="json", exclude_unset=True) == {
        **EXAMPLES[event_type],
        # pydantic writes UTC as "Z" and keeps other offsets
        "occurred_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
    }
    assert event.occurred_at == datetime.fromisoformat(EXAMPLES[event_type]["occurred_at"])


@pytest.mark.parametrize("event_type", list(EVENT_MODELS))
def test_each_example_parses_with_its_key(event_type: str) -> None:
    key = EXAMPLES[event_type]["lead_id"].encode()
    assert (
        type(parse_ok(message(event_type), key=key, require_key=True)) is EVENT_MODELS[event_type]
    )


def test_accepts_a_jsonl_line_as_str_with_newline() -> None:
    assert parse_ok(message().decode() + "\n").lead_id == EXAMPLE_LEAD_ID


def test_the_key_is_not_checked_unless_required() -> None:
    assert parse_ok(message(), key=None).lead_id == EXAMPLE_LEAD_ID
    assert parse_ok(message(), key=b"someone-else").lead_id == EXAMPLE_LEAD_ID


def test_length_limits_are_inclusive() -> None:
    assert parse_ok(message(event_id="e" * 128, lead_id="l" * 256)).lead_id == "l" * 256


def test_properties_accept_scalars_and_lists_of_scalars() -> None:
    props = {"s": "x", "i": 7, "f": 1.5, "b": True, "n": None, "l": ["a", 1, 2.5, False, None]}
    assert parse_ok(message(properties=props)).properties == props


# --- rejections: the kind, and the message names the field -------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"occurred_at": "2026-11-23T10:00:00"},
            "occurred_at: timestamp has no timezone offset (naive); "
            "use RFC 3339 like 2026-11-23T10:00:00Z",
            id="naive-timestamp",
        ),
        pytest.param(
            {"occurred_at": "1970-01-01T00:00:00Z"},
            "occurred_at: timestamp 1970-01-01T00:00:00+00:00 is outside the accepted range "
            "2000-01-01..2100-01-01",
            id="timestamp-1970",
        ),
        pytest.param(
            {"occurred_at": "3000-06-01T12:00:00+02:00"},
            "occurred_at: timestamp 3000-06-01T12:00:00+02:00 is outside the accepted range "
            "2000-01-01..2100-01-01",
            id="timestamp-3000",
        ),
        pytest.param(
            {"occurred_at": 1795428000},
            "occurred_at: expected a timestamp string, got number 1795428000; "
            "use RFC 3339 like 2026-11-23T10:00:00Z",
            id="epoch-seconds-timestamp",
        ),
        pytest.param(
            {"occurred_at": "23/11/2026 10:00"},
            "occurred_at: expected RFC 3339 text like 2026-11-23T10:00:00Z, got '23/11/2026 10:00'",
            id="unparsable-timestamp",
        ),
        pytest.param(
            {"occurred_at": "1791000000"},
            "occurred_at: expected RFC 3339 text like 2026-11-23T10:00:00Z, got '1791000000'",
            id="unix-time-as-text",
        ),
        pytest.param(
            {"occurred_at": "2026-13-45T10:00:00Z"},
            "occurred_at: not a valid date and time: '2026-13-45T10:00:00Z'",
            id="impossible-date",
        ),
        pytest.param(
            {"occurred_at": "2026-11-23T10:00:00+01:60"},
            "occurred_at: expected RFC 3339 text like 2026-11-23T10:00:00Z, "
            "got '2026-11-23T10:00:00+01:60'",
            id="offset-minutes-over-59",
        ),
        pytest.param(
            {"occurred_at": "\uff12\uff10\uff12\uff16-11-23T10:00:00Z"},
            "occurred_at: expected RFC 3339 text like 2026-11-23T10:00:00Z, "
            "got '\uff12\uff10\uff12\uff16-11-23T10:00:00Z'",
            id="non-ascii-digits",
        ),
        pytest.param(
            {"occurred_at": "2026-11-23T10:00:00Z\n"},
            "occurred_at: expected RFC 3339 text like 2026-11-23T10:00:00Z, "
            "got '2026-11-23T10:00:00Z\\n'",
            id="trailing-newline",
        ),
        pytest.param({"url": 5}, "url: expected a valid string, got number 5", id="wrong-type"),
        pytest.param(
            {"url": OMIT}, "url: missing (required in page_view events)", id="missing-field"
        ),
        pytest.param(
            {"type": "foo"},
            f"type: unknown event type 'foo'; expected one of {EVENT_TYPES}",
            id="unknown-type",
        ),
        pytest.param(
            {"type": OMIT}, f"type: missing; expected one of {EVENT_TYPES}", id="missing-type"
        ),
        pytest.param(
            {"type": 3},
            f"type: expected a string, got number 3; expected one of {EVENT_TYPES}",
            id="non-string-type",
        ),
        pytest.param(
            {"colour": "red"},
            "colour: unknown field for page_view events (put custom data in properties)",
            id="extra-field",
        ),
        pytest.param(
            {"event_id": ""},
            "event_id: String should have at least 1 character (got 0)",
            id="event_id-empty",
        ),
        pytest.param(
            {"event_id": "e" * 129},
            "event_id: String should have at most 128 characters (got 129)",
            id="event_id-129-chars",
        ),
        pytest.param(
            {"lead_id": "l" * 257},
            "lead_id: String should have at most 256 characters (got 257)",
            id="lead_id-257-chars",
        ),
        pytest.param(
            {"properties": {"plan": {"name": "pro"}}},
            "properties.plan: expected a string, number, boolean or null, or a list of those, "
            "got an object",
            id="property-object",
        ),
        pytest.param(
            {"properties": {"tags": ["a", ["b"]]}},
            "properties.tags[1]: expected a string, number, boolean or null, got an array",
            id="property-nested-list",
        ),
        pytest.param(
            {"properties": ["plan"]}, "properties: expected an object, got an array", id="props"
        ),
        pytest.param(
            {"url": 5, "title": None, "referrer": "", "zzz": 1},
            "url: expected a valid string, got number 5; "
            "referrer: String should have at least 1 character (got 0); "
            "zzz: unknown field for page_view events (put custom data in properties)",
            id="several-errors",
        ),
    ],
)
def test_invalid_event_message_names_the_field(changes: dict[str, Any], expected: str) -> None:
    result = rejected(message(**changes))
    assert result == Rejected("invalid_event", expected)


def test_invalid_literal_names_field_and_value() -> None:
    result = rejected(message("webinar", status="attending"))
    assert result.error == "status: expected 'registered' or 'attended', got string 'attending'"


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_property_numbers_are_rejected(number: bytes) -> None:
    value = message(properties={"score": 0}).replace(b'"score": 0', b'"score": ' + number)

    result = rejected(value)

    assert result.kind == "invalid_event"
    assert result.error.startswith("properties.score: expected a finite number, got number ")


def test_long_error_lists_are_capped() -> None:
    extras: dict[str, Any] = {f"extra{i:02}": i for i in range(15)}
    result = rejected(message(**extras))
    assert result.error.count("unknown field") == 10
    assert result.error.endswith("; ... and 5 more")


def test_non_utf8_bytes_are_located() -> None:
    good = message(title="Preise")
    value = good.replace(b"Preise", b"Pr\xe9ise")  # Latin-1 "é"

    result = rejected(value)

    offset = good.index(b"Preise") + 2
    assert result == Rejected(
        "invalid_utf8",
        f"not valid UTF-8: byte 0xe9 at offset {offset} (invalid continuation byte)",
    )


def test_str_lines_keep_undecodable_bytes_located() -> None:
    line = message().decode() + "\udcff"  # a byte a reader kept with errors="surrogateescape"
    result = rejected(line)
    assert result.kind == "invalid_utf8"
    assert f"byte 0xff at offset {len(message())}" in result.error


def test_truncated_json_gives_the_parser_position() -> None:
    result = rejected(message()[:40])
    assert result == Rejected(
        "invalid_json", "not valid JSON: EOF while parsing a value at line 1 column 40"
    )


def test_bad_json_position_counts_lines() -> None:
    pretty = json.dumps(EXAMPLES["page_view"], indent=2).encode()
    result = rejected(pretty.replace(b'"url":', b"url:"))
    assert result.kind == "invalid_json"
    assert result.error.endswith("at line 6 column 3")


def test_byte_order_mark_is_explained() -> None:
    result = rejected(b"\xef\xbb\xbf" + message())
    assert result.kind == "invalid_json"
    assert "byte order mark" in result.error


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (b'[{"type": "page_view"}]', "an array"),
        (b'"page_view"', "string 'page_view'"),
        (b"42", "number 42"),
        (b"null", "null"),
    ],
)
def test_json_that_is_not_an_object(value: bytes, got: str) -> None:
    assert rejected(value) == Rejected("invalid_json", f"expected a JSON object, got {got}")


@pytest.mark.parametrize("value", [None, b"", ""])
def test_no_value_is_invalid_json(value: bytes | str | None) -> None:
    assert rejected(value).kind == "invalid_json"


def test_oversized_is_checked_before_parsing() -> None:
    value = b"\xff" * (MAX_EVENT_BYTES + 1)  # also not UTF-8 nor JSON: size wins
    assert rejected(value) == Rejected(
        "oversized", f"message is {MAX_EVENT_BYTES + 1} bytes; the limit is {MAX_EVENT_BYTES} bytes"
    )


def test_size_limit_is_inclusive_and_configurable() -> None:
    value = message()
    padded = value + b" " * (MAX_EVENT_BYTES - len(value))  # JSON allows trailing spaces

    assert parse_ok(padded).lead_id == EXAMPLE_LEAD_ID
    assert rejected(padded + b" ").kind == "oversized"
    assert rejected(value, max_bytes=len(value) - 1).kind == "oversized"


@pytest.mark.parametrize("key", [None, b""])
def test_missing_key(key: bytes | None) -> None:
    assert rejected(message(), key=key, require_key=True) == Rejected(
        "missing_key", f"key: missing (it must be the event's lead_id '{EXAMPLE_LEAD_ID}')"
    )


def test_key_mismatch_names_both_values() -> None:
    assert rejected(message(), key=b"lead-0000", require_key=True) == Rejected(
        "key_mismatch", f"key: 'lead-0000' does not match lead_id '{EXAMPLE_LEAD_ID}'"
    )


def test_non_utf8_key_mismatch_shows_base64() -> None:
    result = rejected(message(), key=b"\xfflead", require_key=True)
    assert result.error == f"key: 'base64:/2xlYWQ=' does not match lead_id '{EXAMPLE_LEAD_ID}'"


def test_an_invalid_event_is_reported_before_its_key() -> None:
    assert rejected(message(url=5), key=None, require_key=True).kind == "invalid_event"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    assert isinstance(parse_event(value, b"k", require_key=True), BaseEvent | Rejected)


@given(st.data())
def test_corrupted_events_never_raise(data: st.DataObject) -> None:
    value = bytearray(message(data.draw(st.sampled_from(list(EVENT_MODELS)))))
    for _ in range(data.draw(st.integers(1, 3))):
        value[data.draw(st.integers(0, len(value) - 1))] = data.draw(st.integers(0, 255))
    result = parse_event(bytes(value))
    if isinstance(result, Rejected):
        assert result.error.strip()
    else:
        assert isinstance(result, BaseEvent)


# --- derived fields ----------------------------------------------------------------------

TEN_AM_UTC_MS = 1_795_428_000_000  # 2026-11-23T10:00:00Z


@pytest.mark.parametrize(
    ("occurred_at", "expected_ms"),
    [
        ("2026-11-23T10:00:00Z", TEN_AM_UTC_MS),
        ("2026-11-23T12:00:00+02:00", TEN_AM_UTC_MS),
        ("2026-11-23T05:00:00-05:00", TEN_AM_UTC_MS),
        ("2026-11-23t10:00:00z", TEN_AM_UTC_MS),  # RFC 3339 allows lowercase t and z
        ("2026-11-23T12:00:00+0200", TEN_AM_UTC_MS),
        ("2026-11-23T10:00:00.123999Z", TEN_AM_UTC_MS + 123),  # truncated, not rounded
        ("2026-11-23T12:00:00.000999+02:00", TEN_AM_UTC_MS),
        ("2000-01-01T00:00:00Z", 946_684_800_000),  # the earliest accepted instant
    ],
)
def test_occurred_at_ms(occurred_at: str, expected_ms: int) -> None:
    assert parse_ok(message(occurred_at=occurred_at)).occurred_at_ms == expected_ms


@pytest.mark.parametrize(
    ("email", "domain"),
    [
        ("Jane.Doe@Acme-Robotics.example", "acme-robotics.example"),
        ("a@b@Example.COM ", "example.com"),
        ("no-at-sign.example", None),
        ("jane@", None),
        ("", None),
        (OMIT, None),
    ],
)
def test_email_domain(email: str, domain: str | None) -> None:
    event = parse_ok(message("lead_profile", email=email))
    assert isinstance(event, LeadProfile)
    assert event.email_domain == domain


# --- dead letters ------------------------------------------------------------------------

SEEN_AT = datetime(2026, 11, 23, 10, 0, 1, tzinfo=UTC)


def make_dead_letter(value: bytes | None, key: bytes | None) -> DeadLetter:
    return dead_letter(
        Rejected("invalid_utf8", "not valid UTF-8: byte 0xff at offset 0 (invalid start byte)"),
        value=value,
        key=key,
        topic="lead-events",
        partition=3,
        offset=42,
        seen_at=SEEN_AT,
    )


def test_dead_letter_round_trips_binary_payload_and_key() -> None:
    value, key = b"\xff\x00\xfe binary \x80", b"\xfe\xedlead"

    record = make_dead_letter(value, key)
    restored = DeadLetter.model_validate_json(record.model_dump_json())

    assert restored == record
    assert restored.payload_text is None
    assert restored.payload_base64 is not None
    assert base64.b64decode(restored.payload_base64) == value
    assert restored.key is not None
    assert restored.key.startswith("base64:")
    assert base64.b64decode(restored.key.removeprefix("base64:")) == key
    assert (restored.source_topic, restored.source_partition, restored.source_offset) == (
        "lead-events",
        3,
        42,
    )
    assert restored.seen_at == SEEN_AT


def test_dead_letter_keeps_utf8_as_text() -> None:
    record = make_dead_letter('{"type": "pâge_view"'.encode(), "lead-ü".encode())
    assert record.payload_text == '{"type": "pâge_view"'
    assert record.payload_base64 is None
    assert record.key == "lead-ü"


def test_dead_letter_without_value_or_key() -> None:
    record = make_dead_letter(None, None)
    assert (record.payload_text, record.payload_base64, record.key) == (None, None, None)


def test_dead_letter_from_parse_event() -> None:
    value = message(occurred_at="2026-11-23T10:00:00")
    result = rejected(value)

    record = dead_letter(
        result, value=value, key=None, topic="t", partition=0, offset=7, seen_at=SEEN_AT
    )

    assert record.error_kind == "invalid_event"
    assert record.error.startswith("occurred_at: ")
    assert record.payload_text == value.decode()


def test_dead_letter_needs_an_aware_seen_at() -> None:
    with pytest.raises(ValidationError, match="seen_at"):
        dead_letter(
            Rejected("invalid_json", "x"),
            value=b"x",
            key=None,
            topic="t",
            partition=0,
            offset=0,
            seen_at=datetime(2026, 11, 23, 10, 0),  # noqa: DTZ001 - the point of the test
        )


def test_rejection_kinds_are_the_dead_letter_kinds() -> None:
    assert get_args(ErrorKind) == get_args(DeadLetter.model_fields["error_kind"].annotation)


@pytest.mark.parametrize(
    ("name", "model"),
    [("lead_became_hot", LeadBecameHot), ("lead_cooled", LeadCooled), ("dead_letter", DeadLetter)],
)
def test_output_examples_are_valid(
    name: str, model: type[LeadBecameHot] | type[LeadCooled] | type[DeadLetter]
) -> None:
    record = model.model_validate_json(json.dumps(OUTPUT_EXAMPLES[name]))
    assert record.type == name


# --- JSON Schema files ---------------------------------------------------------------------


def test_committed_json_schemas_are_up_to_date() -> None:
    stale = check_schemas(SCHEMA_DIR)
    assert stale == [], (
        f"JSON Schema files out of date with schemas/: {', '.join(stale)}. "
        "Run `python -m schemas.export` and commit schemas/json/."
    )


def test_export_writes_one_file_per_public_type(tmp_path: Path) -> None:
    paths = export_schemas(tmp_path)

    assert sorted(p.name for p in paths) == sorted(
        f"{name}.schema.json"
        for name in [
            *EVENT_MODELS,
            "lead_event",
            "lead_became_hot",
            "lead_cooled",
            "lead_erased_record",
            "lead_merged",
            "dead_letter",
        ]
    )
    for path in paths:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text)
        assert document["$id"] == f"urn:leadscore:schema:{path.name.removesuffix('.schema.json')}"
        assert document["title"]
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert text == json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    union = json.loads((tmp_path / "lead_event.schema.json").read_text(encoding="utf-8"))
    assert union["title"] == "LeadEvent"
    assert set(union["discriminator"]["mapping"]) == set(EVENT_MODELS)


def test_export_is_deterministic() -> None:
    assert render_schemas() == render_schemas()


def test_output_schemas_require_every_field(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    hot = json.loads((tmp_path / "lead_became_hot.schema.json").read_text(encoding="utf-8"))
    assert set(hot["required"]) == set(LeadBecameHot.model_fields)


def test_check_reports_stale_missing_and_obsolete_files(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    assert check_schemas(tmp_path) == []

    (tmp_path / "webinar.schema.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "download.schema.json").unlink()
    (tmp_path / "old_event.schema.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not ours\n", encoding="utf-8")

    assert check_schemas(tmp_path) == [
        "download.schema.json",
        "old_event.schema.json",
        "webinar.schema.json",
    ]
    export_schemas(tmp_path)
    assert check_schemas(tmp_path) == []
    assert not (tmp_path / "old_event.schema.json").exists()
    assert (tmp_path / "notes.txt").exists()


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", str(tmp_path)]) == 1
    assert "python -m schemas.export" in capsys.readouterr().err

    assert main([str(tmp_path)]) == 0
    assert main(["--check", str(tmp_path)]) == 0


@pytest.mark.parametrize("payload", [b"x" * 2_000_000, "é".encode() * 600_000, b"\xff" * 900_000])
def test_a_huge_payload_is_cut_in_its_dead_letter_so_it_always_fits_a_kafka_message(
    payload: bytes,
) -> None:
    """A 1-2 MB rejected message must not make a dead letter Kafka refuses (the worker
    would retry that produce forever)."""
    rejected = parse_event(payload)
    assert isinstance(rejected, Rejected) and rejected.kind == "oversized"
    record = dead_letter(
        rejected,
        value=payload,
        key=b"k",
        topic="t",
        partition=0,
        offset=1,
        seen_at=datetime(2026, 11, 23, tzinfo=UTC),
    )
    assert record.payload_truncated
    assert record.payload_bytes == len(payload)
    assert record.payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert len(record.model_dump_json()) < 1_000_000
    kept = (
        record.payload_text.encode()
        if record.payload_text is not None
        else (base64.b64decode(record.payload_base64 or ""))
    )
    assert payload.startswith(kept) and len(kept) > DEAD_LETTER_PAYLOAD_MAX - 4


# --- repeated keys -------------------------------------------------------------------------

_ENVELOPE = b'{"event_id": "e-1", "lead_id": "lead-1", "occurred_at": "2026-11-23T10:00:00Z"'


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (_ENVELOPE + b', "type": "email_open", "type": "page_view", "url": "u"}', "type"),
        (_ENVELOPE + b', "type": "page_view", "url": "a", "url": "b"}', "url"),
        (_ENVELOPE + b', "type": "email_open", "properties": {"p": 1, "p": 2}}', "properties.p"),
        (
            _ENVELOPE + b', "type": "email_open", "properties": {"p": 1, "\\u0070": 1}}',
            "properties.p",
        ),
    ],
    ids=["type", "field", "property", "escaped-property"],
)
def test_repeated_keys_are_rejected_naming_the_key(raw: bytes, path: str) -> None:
    """JSON parsers keep the last of repeated keys silently; the contract refuses them."""
    result = parse_event(raw)
    assert isinstance(result, Rejected)
    assert result.kind == "invalid_json"
    assert result.error.startswith(f"{path}: repeated key in the JSON object")


def test_same_key_in_different_objects_is_fine() -> None:
    raw = _ENVELOPE + b', "type": "email_open", "properties": {"lead_id": "x", "type": 1}}'
    assert not isinstance(parse_event(raw), Rejected)
