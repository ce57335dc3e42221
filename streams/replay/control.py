"""Control events in a replay (``leadscore replay --control SOURCE``): the control topic's
``score_adjusted``, ``score_reset`` and ``lead_erased`` merged into the input log by
event time, as the worker meets them.

The worker applies a control event when it reads it, which is about when it was sent
(``leadscore adjust|reset|erase`` date it "now"): after the input events dated before it,
before those dated after it. A replay does the same: each control event (read first, in
time order; a stable sort keeps their order at equal times) is applied just before the
first input event dated after it (within ``--at``), and those left at the end after all
input. :func:`merge_control` is that merge for the reference path; the native path
(:mod:`streams.replay.fast`) splits its batches at the same places.

Control events written into the input log itself are applied where they stand.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from schemas.events import LeadEvent
from schemas.validation import Rejected, parse_control_event, too_far_ahead
from streams.jsonl import is_blank

from .reading import BadRecord, ReadStats, source_chunks
from .results import NEVER
from .sources import Source


def read_control(
    sources: Sequence[Source], stats: ReadStats, max_event_bytes: int
) -> list[LeadEvent]:
    """Every valid control event of ``sources`` (validated as the worker validates the
    control topic: anything else is a bad record), in time order (stable)."""
    events: list[LeadEvent] = []
    for source, chunk in source_chunks(sources, progress=False):
        stats.records += len(chunk.values)
        for i, raw in enumerate(chunk.values):
            if chunk.keys is None and raw is not None and is_blank(raw):
                stats.blank_lines += 1
                continue
            key = None if chunk.keys is None else chunk.keys[i]
            result = parse_control_event(
                raw, key, require_key=chunk.keys is not None, max_bytes=max_event_bytes
            )
            if chunk.timestamps is not None and not isinstance(result, Rejected):
                # the worker's clock-skew policy, on the control topic too
                skew = too_far_ahead(result.occurred_at_ms, chunk.timestamps[i], chunk.max_skew_ms)
                result = skew or result
            if isinstance(result, Rejected):
                if chunk.positions is None:
                    where: dict[str, int] = {"line": chunk.first_line + i}
                else:
                    where = dict(zip(("partition", "offset"), chunk.positions[i], strict=True))
                stats.reject(BadRecord(source.name, result.kind, result.error, **where))
                continue
            stats.valid += 1
            events.append(result)
    events.sort(key=lambda e: e.occurred_at_ms)
    return events


def merge_control(
    batches: Iterable[Sequence[LeadEvent]],
    control: Sequence[LeadEvent],
    at_ms: int | None = None,
) -> Iterator[list[LeadEvent]]:
    """``batches`` with each control event placed just before the first event dated after
    it (and at most ``at_ms``); the rest at the end."""
    limit = NEVER if at_ms is None else at_ms
    pending = list(reversed(control))
    for batch in batches:
        out: list[LeadEvent] = []
        for event in batch:
            t = event.occurred_at_ms
            while pending and pending[-1].occurred_at_ms < t <= limit:
                out.append(pending.pop())
            out.append(event)
        yield out
    yield list(reversed(pending))
