"""Input formats: how a message on the input topic (or a line of a replayed log) becomes
an event. One setting picks it for the worker, ``leadscore replay`` and ``leadscore
produce`` alike (``LEADSCORE_INPUT_FORMAT`` / ``--format``):

* ``leadscore``: leadscore's own contract (``schemas/json/``, :mod:`schemas.events`);
  the worker reads behaviour events on the native fast path;
* ``segment``: Segment-spec messages (analytics.js, RudderStack, ...): :mod:`schemas.segment`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from .events import LeadEvent, Scorable
from .segment import parse_segment
from .validation import MAX_EVENT_BYTES, Rejected, parse_event, parse_for_scoring

InputFormat = Literal["leadscore", "segment"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("leadscore", "segment")


class Decode(Protocol):
    """``(value, key, require_key=, max_bytes=) -> event or Rejected``, never raising."""

    def __call__(
        self,
        value: bytes | None,
        key: bytes | None = None,
        *,
        require_key: bool = False,
        max_bytes: int = MAX_EVENT_BYTES,
    ) -> Scorable | Rejected: ...


#: Per format: what the worker decodes with (events it only scores may be lighter than
#: pydantic models), and what replay and produce decode with (full events).
_LIVE: dict[InputFormat, Decode] = {"leadscore": parse_for_scoring, "segment": parse_segment}
_FULL: dict[InputFormat, Callable[..., LeadEvent | Rejected]] = {
    "leadscore": parse_event,
    "segment": parse_segment,
}


def live_decoder(input_format: InputFormat) -> Decode:
    """How the worker reads a message of ``input_format``."""
    return _LIVE[input_format]


def event_decoder(input_format: InputFormat) -> Callable[..., LeadEvent | Rejected]:
    """How replay and produce read a record of ``input_format`` (pydantic events)."""
    return _FULL[input_format]
