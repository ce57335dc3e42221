"""Per-lead state: everything needed to know a lead's score at any time, and nothing else.

A :class:`LeadState` is immutable; the engine returns a new one for every change. It is
small (one float per rule that ever fired for the lead, the latest value of each fit
attribute, the last applied offset per input stream, the ids of the events inside the
dedupe window) and serialises to a JSON-able dict (the live store's binary form is
:mod:`streams.live.state_format`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Latest value of a fit attribute: ``(occurred_at_ms, event_id, value)``. The newest
#: ``occurred_at`` wins (ties: the larger event id), so arrival order does not matter.
ProfileEntry = tuple[int, str, Any]


@dataclass(frozen=True, slots=True)
class Position:
    """Where an event was read: an ``offset`` within one ordered ``stream`` of events.
    A lead's state keeps the last offset applied per stream, so a redelivered event is
    recognised without its id. The streams layer names the streams (for Kafka,
    ``"topic:partition"``; replay of a file reads one stream)."""

    stream: str
    offset: int


@dataclass(frozen=True, slots=True)
class LeadState:
    """A lead's scoring state. Treat the mappings as read-only."""

    lead_id: str
    #: The lead's clock: the greatest ``occurred_at`` applied so far (ms since epoch).
    clock_ms: int
    #: Forward-decay landmark of ``sums`` (ms since epoch; docs/architecture.md, "Scoring").
    landmark_ms: int
    #: Rule id -> forward-decayed sum of that rule's points against ``landmark_ms``.
    sums: Mapping[str, float] = field(default_factory=dict)
    hot: bool = False
    #: How many crossings (hot or cooled) this lead has had; part of crossing ids.
    crossings: int = 0
    #: Fit attributes from ``lead_profile`` events.
    profile: Mapping[str, ProfileEntry] = field(default_factory=dict)
    #: Stream (see :class:`Position`) -> offset of the last event applied from it.
    positions: Mapping[str, int] = field(default_factory=dict)
    #: Events applied to this lead (duplicates excluded).
    events_applied: int = 0
    #: The dedupe window: ``(hash of event id, occurred_at_ms)`` of the events applied
    #: within ``RuleSet.dedupe_window_ms`` of :attr:`clock_ms`, 16 bytes each (u64, i64,
    #: little-endian), as the native core reads and writes them. Older ids are forgotten.
    recent_ids: bytes = b""
    #: The latest ``score_reset``: events dated at or before it never count (None: never
    #: reset).
    floor_ms: int | None = None
    #: A tombstone of a lead that an identity link retired (``scoring.identity``): its
    #: events go to the lead it joined.
    retired: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for stores)."""
        return {
            "lead_id": self.lead_id,
            "clock_ms": self.clock_ms,
            "landmark_ms": self.landmark_ms,
            "sums": dict(self.sums),
            "hot": self.hot,
            "crossings": self.crossings,
            "profile": {k: list(v) for k, v in self.profile.items()},
            "positions": dict(self.positions),
            "events_applied": self.events_applied,
            "recent_ids": self.recent_ids.hex(),
            "floor_ms": self.floor_ms,
            **({"retired": True} if self.retired else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeadState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            lead_id=data["lead_id"],
            clock_ms=int(data["clock_ms"]),
            landmark_ms=int(data["landmark_ms"]),
            sums={str(k): float(v) for k, v in data["sums"].items()},
            hot=bool(data["hot"]),
            crossings=int(data["crossings"]),
            profile={k: (int(v[0]), str(v[1]), v[2]) for k, v in data["profile"].items()},
            positions={str(k): int(v) for k, v in data["positions"].items()},
            events_applied=int(data["events_applied"]),
            recent_ids=bytes.fromhex(data.get("recent_ids", "")),
            floor_ms=None if data.get("floor_ms") is None else int(data["floor_ms"]),
            retired=bool(data.get("retired", False)),
        )
