"""Reading a replay's sources: every chunk of every source in order (with a progress bar),
every record validated like the worker validates it, bad records counted and listed like
dead letters (:class:`BadRecord`, :class:`ReadStats`).

:func:`read_events` yields pydantic events (the reference path, and ``calibrate``); the
native path (:mod:`streams.replay.fast`) parses most records itself and hands the rest to
:func:`validate_record`, so both paths accept and reject exactly the same records.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from schemas.events import LeadEvent
from schemas.formats import event_decoder
from schemas.validation import (
    MAX_EVENT_BYTES,
    Rejected,
    identity_off,
    not_control,
    too_far_ahead,
)
from streams.jsonl import is_blank

from .sources import Chunk, Source

#: Bad records listed one by one in ``summary.json`` (all are counted).
MAX_BAD_LISTED = 100


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A rejected line or message, like a dead letter."""

    source: str
    kind: str
    error: str
    line: int | None = None
    partition: int | None = None
    offset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        where: dict[str, Any] = {"source": self.source}
        if self.line is not None:
            where["line"] = self.line
        else:
            where.update(partition=self.partition, offset=self.offset)
        return {**where, "kind": self.kind, "error": self.error}


@dataclass(slots=True)
class ReadStats:
    """What reading found (all counts; bad records listed up to ``max_listed``)."""

    records: int = 0
    blank_lines: int = 0
    valid: int = 0
    bad: int = 0
    bad_by_kind: Counter[str] = field(default_factory=Counter)
    bad_records: list[BadRecord] = field(default_factory=list)
    max_listed: int = MAX_BAD_LISTED
    #: Seconds spent reading and validating (wall clock).
    seconds: float = 0.0

    def reject(self, record: BadRecord) -> None:
        self.bad += 1
        self.bad_by_kind[record.kind] += 1
        if len(self.bad_records) < self.max_listed:
            self.bad_records.append(record)


def source_chunks(sources: Sequence[Source], progress: bool) -> Iterator[tuple[Source, Chunk]]:
    """Every chunk of every source, in order; with ``progress``, a bar per source on
    stderr, advanced once the caller is done with a chunk."""
    for source in sources:
        with contextlib.ExitStack() as stack:
            update: Callable[[int], None] | None = None
            if progress:
                bar = stack.enter_context(
                    click.progressbar(
                        length=source.size(),
                        label=source.name,
                        file=click.get_text_stream("stderr"),
                    )
                )
                update = bar.update
            for chunk in source.chunks():
                yield source, chunk
                if update is not None:
                    update(chunk.progress)


def read_events(
    sources: Sequence[Source],
    stats: ReadStats,
    *,
    max_event_bytes: int = MAX_EVENT_BYTES,
    progress: bool = False,
    identities: bool = False,
    routed: bool = False,
) -> Iterator[list[LeadEvent]]:
    """Validate every record of ``sources`` (in order) and yield the valid events in
    chunks. Bad records go to ``stats``; reading never stops for them.

    Files are validated like un-keyed messages (control events in them are applied where
    they stand), Kafka messages exactly like the worker (the key must be the event's
    ``lead_id``; control events are refused: they come from the control topic). Identity
    events are refused unless ``identities`` (as a worker that does not merge them);
    ``routed``: the worker's identity topic, where control events are welcome. With
    ``progress``, a bar per source is drawn on stderr.
    """
    for source, chunk in source_chunks(sources, progress):
        started = time.perf_counter()
        events = _validate_chunk(
            source.name, chunk, stats, max_event_bytes, (identities or routed, routed)
        )
        stats.seconds += time.perf_counter() - started
        yield events


def _validate_chunk(
    name: str, chunk: Chunk, stats: ReadStats, max_event_bytes: int, modes: tuple[bool, bool]
) -> list[LeadEvent]:
    """The hot loop of reading: one ``parse_event`` per record."""
    stats.records += len(chunk.values)
    events = [
        event
        for i in range(len(chunk.values))
        if (event := validate_record(name, chunk, i, stats, max_event_bytes, *modes)) is not None
    ]
    stats.valid += len(events)
    return events


def _where(chunk: Chunk, index: int) -> dict[str, int]:
    if chunk.positions is None:
        return {"line": chunk.first_line + index}
    partition, offset = chunk.positions[index]
    return {"partition": partition, "offset": offset}


def validate_record(
    name: str,
    chunk: Chunk,
    index: int,
    stats: ReadStats,
    max_event_bytes: int,
    identities: bool = False,
    routed: bool = False,
) -> LeadEvent | None:
    """Record ``index`` of ``chunk`` as an event, or None (a blank line or a bad record,
    counted in ``stats``). Files: blank lines are skipped, as ``leadscore produce`` skips
    them; Kafka: the worker's exact check, key included."""
    raw = chunk.values[index]
    decode = event_decoder(chunk.input_format)
    if chunk.keys is None:
        assert raw is not None
        if is_blank(raw):
            stats.blank_lines += 1
            return None
        result = decode(raw, max_bytes=max_event_bytes)
        if isinstance(result, Rejected):
            where = {"line": chunk.first_line + index}
    else:
        result = decode(raw, chunk.keys[index], require_key=True, max_bytes=max_event_bytes)
        if isinstance(result, Rejected):
            assert chunk.positions is not None
            partition, offset = chunk.positions[index]
            where = {"partition": partition, "offset": offset}
    if chunk.keys is not None and not routed and not isinstance(result, Rejected):
        # An input topic: control events come from the control topic only (--control).
        refused = not_control(result, None)
        if refused is not None:
            assert chunk.positions is not None
            partition, offset = chunk.positions[index]
            where = {"partition": partition, "offset": offset}
            result = refused
    if not identities and not isinstance(result, Rejected):
        refused = identity_off(result)
        if refused is not None:
            where = _where(chunk, index)
            result = refused
    if chunk.timestamps is not None and not isinstance(result, Rejected):
        rejected = too_far_ahead(result.occurred_at_ms, chunk.timestamps[index], chunk.max_skew_ms)
        if rejected is not None:
            assert chunk.positions is not None
            partition, offset = chunk.positions[index]
            where = {"partition": partition, "offset": offset}
            result = rejected
    if isinstance(result, Rejected):
        stats.reject(BadRecord(name, result.kind, result.error, **where))
        return None
    return result
