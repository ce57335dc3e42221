"""The live store's state format 2 (streams.live.state_format): exact round trips, names by
number (never by position), clear errors on corrupt or unknown bytes, and its size."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.rules_file import default_rules_path, load_rules
from scoring.state import LeadState
from scoring.store import MemoryStore
from streams.live.redis_scripts import SAVE_LEADS_SCRIPT
from streams.live.state_format import (
    FLAGS_BYTE,
    VERSION_SLICE,
    Names,
    StateFormatError,
    UnknownNameError,
    decode_state,
    encode_state,
    stored_version,
)
from tests.strategies import event_from_dict, generate_event_log

RULES = load_rules(default_rules_path())


def named(*states: LeadState) -> Names:
    names = Names()
    wanted = sorted({n for s in states for n in names.missing(s)})
    names.update({name: i + 1 for i, name in enumerate(wanted)})
    return names


def states_of(seed: int, events: int, leads: int) -> dict[str, LeadState]:
    store = MemoryStore(RULES)
    store.apply_batch_sync(
        [(event_from_dict(d), None) for d in generate_event_log(seed, events, leads)]
    )
    return store.states


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), version=st.integers(0, 2**40))
def test_round_trip_is_exact(seed: int, version: int) -> None:
    states = states_of(seed, 400, 12)
    names = named(*states.values())
    for lead, state in states.items():
        raw = encode_state(state, version, names)
        assert decode_state(raw, lead, names) == state
        assert stored_version(raw) == version % 2**32
        assert raw[VERSION_SLICE] == (version % 2**32).to_bytes(4, "little")


def test_sums_are_kept_by_rule_id_not_by_position() -> None:
    state = LeadState("a", 10, 0, {"pricing-page": 3.5, "retired-rule": 1.25, "page-view": 2.0})
    names = named(state)
    # The dictionary only grows; a rules file that drops or reorders rules changes nothing.
    decoded = decode_state(encode_state(state, 1, names), "a", names)
    assert decoded.sums == {"pricing-page": 3.5, "retired-rule": 1.25, "page-view": 2.0}


def test_a_number_another_worker_gave_is_reported_for_a_reload() -> None:
    state = LeadState("a", 10, 0, {"new-rule": 1.0}, positions={"events:0": 7})
    theirs = named(state)
    raw = encode_state(state, 1, theirs)
    with pytest.raises(UnknownNameError, match="unknown name number"):
        decode_state(raw, "a", Names())


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x01old", b"\x02short", b'{"lead_id": "a"}'],
)
def test_corrupt_or_foreign_bytes_are_a_clear_error(raw: bytes) -> None:
    with pytest.raises(StateFormatError, match="lead 'x'"):
        decode_state(raw, "x", Names())


def test_trailing_bytes_are_corrupt() -> None:
    state = LeadState("a", 10, 0, {"r": 1.0})
    names = named(state)
    with pytest.raises(StateFormatError, match="corrupt"):
        decode_state(encode_state(state, 1, names) + b"\x00", "a", names)


def test_size_of_typical_leads() -> None:
    """The bench generator's leads, past their dedupe window: a header of 37 bytes, 10
    per rule that fired, 10 per partition, and the profile."""
    states = states_of(7, 4_000, 200)
    names = named(*states.values())
    for state in states.values():
        raw = encode_state(state, 1, names)
        entries = len(state.recent_ids) // 16
        window = 8 + 12 * entries if entries else 0  # packed
        profile = sum(len(repr(v)) + 10 for v in state.profile.values())
        assert len(raw) - window <= 37 + 10 * len(state.sums) + 10 + profile + 32
        assert len(state.recent_ids) % 16 == 0
    sizes = sorted(
        len(encode_state(s, 1, names)) - 12 * (len(s.recent_ids) // 16) for s in states.values()
    )
    assert sizes[len(sizes) // 2] < 200, sizes[len(sizes) // 2]


def test_header_layout_is_what_the_save_script_reads() -> None:
    raw = encode_state(LeadState("a", 10, 0), 0x01020304, Names())
    assert raw[0] == 2
    assert struct.unpack("<I", raw[1:5]) == (0x01020304,)
    assert "string.sub(current, 2, 5)" in SAVE_LEADS_SCRIPT  # 1-based: bytes 1..4 here
    hot = encode_state(LeadState("a", 10, 0, hot=True), 1, Names())
    assert (raw[FLAGS_BYTE] & 1, hot[FLAGS_BYTE] & 1) == (0, 1)
    assert f"string.byte(state, {FLAGS_BYTE + 1}) % 2 == 0" in SAVE_LEADS_SCRIPT


def window_of(*entries: tuple[int, int]) -> bytes:
    """A dedupe window as the core keeps it: (id hash, occurred ms), sorted by time."""
    return b"".join(struct.pack("<Qq", h, at) for h, at in sorted(entries, key=lambda e: e[1]))


def test_the_dedupe_window_is_stored_in_12_bytes_an_entry() -> None:
    day = 86_400_000
    recent = window_of(*((2**64 - 1 - i, 5 * day + i * 3_600_000) for i in range(50)))
    state = LeadState("a", 10 * day, 0, {"r": 1.0}, recent_ids=recent)
    names = named(state)
    bare = encode_state(LeadState("a", 10 * day, 0, {"r": 1.0}), 1, names)
    raw = encode_state(state, 1, names)
    assert len(raw) - len(bare) == 8 + 12 * 50
    assert decode_state(raw, "a", names) == state


def test_a_window_longer_than_49_days_is_stored_unpacked_and_read_back() -> None:
    day = 86_400_000
    recent = window_of((1, 0), (2, 60 * day))
    state = LeadState("a", 60 * day, 0, recent_ids=recent)
    raw = encode_state(state, 1, Names())
    assert raw[FLAGS_BYTE] & 2 == 0
    assert raw.endswith(recent)
    assert decode_state(raw, "a", Names()) == state


def test_a_state_written_before_packing_reads_the_same() -> None:
    """Format 2 as first shipped: flags without bit 2, 16 bytes an entry."""
    recent = window_of((7, 1_000), (9, 2_000))
    state = LeadState("a", 2_000, 0, {"r": 1.0}, recent_ids=recent)
    names = named(state)
    packed = encode_state(state, 1, names)
    header = bytearray(packed[:37])
    header[FLAGS_BYTE] &= ~2
    body = packed[37 : len(packed) - (8 + 24)]
    assert decode_state(bytes(header) + body + recent, "a", names) == state
