"""The live store's lead state format: a :class:`~scoring.state.LeadState` as the bytes of
one Redis string (``P lead:{T}``, see :mod:`streams.live.redis_keys`).

Format 2, little-endian, about 100-250 bytes for a typical lead::

    header   B format (2) | I version | q clock_ms | q landmark_ms
             | B flags (1: hot, 2: dedupe window packed, 4: reset floor, 8: no
               profile: an unidentified lead, for LEADSCORE_UNIDENTIFIED_LEAD_RETENTION;
               16: a tombstone of a lead retired by an identity link)
             | I crossings | I events_applied | B n_sums | B n_positions | B n_stamps
             | B n_profile | H n_recent                                    (37 bytes)
    floor    with flag 4 only: q the latest score_reset's occurred_ms (events dated at
             or before it never count)
    sums     n_sums x      (H name number of "rule:<id>", d forward-decayed sum)
    streams  n_positions x (H name number of "stream:<topic:partition>", q last offset)
    stamps   n_stamps x    (q occurred_ms, B length, event id): the profile events
                           whose values are still the newest of some field
    profile  n_profile x   (H name number of "field:<name>", B stamp index,
                            H length, the value as JSON)
    recent   the dedupe window (``LeadState.recent_ids``, n_recent entries): with
             flag 2, packed: q newest occurred_ms, then n_recent x (Q id hash,
             I ms before the newest), 12 bytes an entry
             (:func:`scoring.state_machine.pack_dedupe_window`); without it (a window
             over 49.7 days, or a state written before packing), as the core keeps it,
             16 bytes an entry

Names (rule ids, streams, profile fields) are numbers from the store's dictionary
(``P names``: name -> number, append-only, never reused; see :class:`Names`), so a state
keeps its sums **by rule id**: a rules change never moves points to another rule, and a
rule that comes back finds its sum. The ``version`` is the compare-and-set counter of the
save script, which compares bytes 1-4 (``VERSION_SLICE``) in Lua without decoding the
rest. An erased (or retired) lead's tombstone takes the next version, and the lead's next
state the one after it, so a version never names two states of a lead (the index writes
are checked by version: :meth:`streams.live.redis_rank.RankIndex.settle`), and a lead
without a state is written only if its tombstone is still the one read. A lead that
retention expired starts again above its tombstone, or from 1: only a writer stalled for
the whole retention period (the unidentified-lead one, if shorter: tombstones keep the
general one) could take one for the other. ``format`` lets a later format be
read beside this one; format 1 (a hash holding JSON, plus a ``:seen`` set) is converted
once by :meth:`streams.live.redis_store.RedisStore.prepare`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import orjson

from scoring.state import LeadState, ProfileEntry
from scoring.state_machine import pack_dedupe_window, unpack_dedupe_window

FORMAT = 2
#: Where the compare-and-set version sits in a stored state (Lua: ``string.sub(s, 2, 5)``).
VERSION_SLICE = slice(1, 5)
#: The flags byte (bit 0: hot) in a stored state (Lua: ``string.byte(s, 22)``).
FLAGS_BYTE = 21

_HEADER = struct.Struct("<BIqqBIIBBBBH")
_SUM = struct.Struct("<Hd")
_POSITION = struct.Struct("<Hq")
_STAMP = struct.Struct("<qB")
_FIELD = struct.Struct("<HBH")
_RECENT_BYTES = 16
_PACKED_RECENT_BYTES = 12
#: Flags byte: the lead is hot; its dedupe window is packed; a reset floor follows the
#: header; the lead has no profile (read by the save script only: decoding ignores it).
_HOT, _PACKED, _FLOOR, _UNIDENTIFIED, _RETIRED = 1, 2, 4, 8, 16
_FLOOR_MS = struct.Struct("<q")
_MAX_NUMBER = 0xFFFF
_KINDS = ("rule", "stream", "field")


class StateFormatError(ValueError):
    """Bytes that are not a lead state of a known format (corrupt, or from a newer
    leadscore)."""


class Names:
    """The store's name dictionary: ``"rule:<id>"``, ``"stream:<topic:partition>"`` and
    ``"field:<name>"`` to small numbers and back. Append-only: a number, once given, names
    the same thing forever (see :func:`streams.live.redis_scripts.register_names`)."""

    def __init__(self) -> None:
        #: full name (``kind:name``) -> number
        self.numbers: dict[str, int] = {}
        #: per kind (``rule``, ``stream``, ``field``): name -> number, and number -> name
        self.by_kind: dict[str, dict[str, int]] = {k: {} for k in _KINDS}
        self.of_kind: dict[str, dict[int, str]] = {k: {} for k in _KINDS}

    def update(self, numbers: Mapping[str, int]) -> None:
        for full, number in numbers.items():
            if not 0 < number <= _MAX_NUMBER:
                raise StateFormatError(f"name number {number} of {full!r} out of range")
            kind, _, name = full.partition(":")
            if kind not in _KINDS:
                continue  # a kind of a later format: not ours to read
            self.numbers[full] = number
            self.by_kind[kind][name] = number
            self.of_kind[kind][number] = name

    def missing(self, state: LeadState) -> list[str]:
        """The names ``state`` uses that have no number yet."""
        rules, streams, fields = (self.by_kind[k] for k in _KINDS)
        out = [f"rule:{r}" for r in state.sums if r not in rules]
        out += [f"stream:{s}" for s in state.positions if s not in streams]
        out += [f"field:{f}" for f in state.profile if f not in fields]
        return out


class UnknownNameError(StateFormatError):
    """A state uses a name number this process has not loaded (another worker named
    something new): reload the dictionary and decode again."""


def encode_state(state: LeadState, version: int, names: Names) -> bytes:
    """``state`` with compare-and-set ``version`` (taken modulo 2**32) as stored. Every
    name it uses must have a number (:meth:`Names.missing`)."""
    rules, streams, fields = (names.by_kind[k] for k in _KINDS)
    stamps: dict[tuple[int, str], int] = {}
    profile_parts: list[bytes] = []
    for field_name, (occurred_ms, event_id, value) in state.profile.items():
        stamp = stamps.setdefault((occurred_ms, event_id), len(stamps))
        encoded = orjson.dumps(value)
        profile_parts.append(_FIELD.pack(fields[field_name], stamp, len(encoded)) + encoded)
    recent = state.recent_ids
    packed = pack_dedupe_window(recent)
    parts = [
        _HEADER.pack(
            FORMAT,
            version & 0xFFFFFFFF,
            state.clock_ms,
            state.landmark_ms,
            (_HOT if state.hot else 0)
            | (0 if packed is None else _PACKED)
            | (0 if state.floor_ms is None else _FLOOR)
            # (a tombstone is no visitor: it keeps the general retention)
            | (0 if state.profile or not state.events_applied else _UNIDENTIFIED)
            | (_RETIRED if state.retired else 0),
            state.crossings,
            state.events_applied,
            len(state.sums),
            len(state.positions),
            len(stamps),
            len(state.profile),
            len(recent) // _RECENT_BYTES,
        )
    ]
    if state.floor_ms is not None:
        parts.append(_FLOOR_MS.pack(state.floor_ms))
    parts += [_SUM.pack(rules[r], acc) for r, acc in state.sums.items()]
    parts += [_POSITION.pack(streams[s], o) for s, o in state.positions.items()]
    for occurred_ms, event_id in stamps:
        raw_id = event_id.encode()
        parts.append(_STAMP.pack(occurred_ms, len(raw_id)) + raw_id)
    parts += profile_parts
    parts.append(recent if packed is None else packed)
    return b"".join(parts)


def stored_version(raw: bytes | None) -> int:
    """The compare-and-set version of a stored state (0: none stored)."""
    if raw is None:
        return 0
    return int.from_bytes(raw[VERSION_SLICE], "little")


def decode_state(raw: bytes, lead_id: str, names: Names) -> LeadState:
    """Inverse of :func:`encode_state` (the version is :func:`stored_version`)."""
    try:
        return _decode(raw, lead_id, names.of_kind)
    except (struct.error, IndexError, UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        raise StateFormatError(f"lead {lead_id!r}: corrupt state: {exc}") from None


def _decode(raw: bytes, lead_id: str, names: Mapping[str, Mapping[int, str]]) -> LeadState:
    if not raw or raw[0] != FORMAT:
        found = raw[0] if raw else "empty"
        raise StateFormatError(f"lead {lead_id!r}: state format {found!r}, expected {FORMAT}")
    header = _HEADER.unpack_from(raw)
    clock, landmark, flags, crossings, applied = header[2:7]
    n_sums, n_positions, n_stamps, n_profile, n_recent = header[7:]
    at = _HEADER.size
    floor: int | None = None
    if flags & _FLOOR:
        (floor,) = _FLOOR_MS.unpack_from(raw, at)
        at += _FLOOR_MS.size

    rules, streams, fields = (names[k] for k in _KINDS)
    try:
        end = at + n_sums * _SUM.size
        sums = {rules[n]: acc for n, acc in _SUM.iter_unpack(raw[at:end])}
        at, end = end, end + n_positions * _POSITION.size
        positions = {streams[n]: offset for n, offset in _POSITION.iter_unpack(raw[at:end])}
        at = end
        stamps: list[tuple[int, str]] = []
        for _ in range(n_stamps):
            occurred_ms, length = _STAMP.unpack_from(raw, at)
            at += _STAMP.size
            stamps.append((occurred_ms, raw[at : at + length].decode()))
            at += length
        profile: dict[str, ProfileEntry] = {}
        for _ in range(n_profile):
            number, stamp, length = _FIELD.unpack_from(raw, at)
            at += _FIELD.size
            occurred_ms, event_id = stamps[stamp]
            value = orjson.loads(raw[at : at + length])
            profile[fields[number]] = (occurred_ms, event_id, value)
            at += length
    except KeyError as exc:
        raise UnknownNameError(f"lead {lead_id!r}: unknown name number {exc}") from None
    if not flags & _PACKED:
        size = n_recent * _RECENT_BYTES
    else:
        size = 8 + n_recent * _PACKED_RECENT_BYTES if n_recent else 0
    recent = raw[at : at + size]
    if len(recent) != size or at + size != len(raw):
        raise StateFormatError(f"lead {lead_id!r}: corrupt state: {len(raw)} bytes")
    if flags & _PACKED:
        recent = unpack_dedupe_window(recent)
    return LeadState(
        lead_id=lead_id,
        clock_ms=clock,
        landmark_ms=landmark,
        sums=sums,
        hot=bool(flags & _HOT),
        crossings=crossings,
        profile=profile,
        positions=positions,
        events_applied=applied,
        recent_ids=bytes(recent),
        floor_ms=floor,
        retired=bool(flags & _RETIRED),
    )
