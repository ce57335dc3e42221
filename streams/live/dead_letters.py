"""Dead letters of the worker: rejected or unprocessable input, produced to the
dead-letter topic (``LEADSCORE_DLQ_TOPIC``) with a reason naming the field, and
acknowledged before the batch's offsets are committed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import orjson

from schemas.validation import DEAD_LETTER_PAYLOAD_MAX, Rejected, dead_letter, dead_letter_key
from scoring.store import EventItem

from ..log_limits import RateLimitedLog
from ..redaction import LeadIdsInLogs
from .interfaces import RawMessage, Sink, position_of
from .metrics import Metrics

log = logging.getLogger("leadscore.worker")

#: ``Processor._retry``: (what, operation, permanent=) -> the operation's result.
Retry = Callable[..., Awaitable[Any]]


class DeadLetters:
    """Builds and sends the dead letters of one worker."""

    def __init__(
        self,
        sink: Sink,
        topic: str,
        metrics: Metrics,
        lead_ids: LeadIdsInLogs,
        retry: Retry,
        max_message_bytes: int,
    ) -> None:
        self.sink = sink
        self.topic = topic
        self.metrics = metrics
        self.lead_ids = lead_ids
        self._retry = retry
        #: Payload bytes a dead letter keeps: JSON may escape each byte to 6 characters,
        #: and the key (at most 1 KB, 6 KB escaped) and the fields need room too.
        self.payload_max = max(
            256, min(DEAD_LETTER_PAYLOAD_MAX, (max_message_bytes - 12 * 1024) // 6)
        )
        #: One line per dead letter, but at most 20 per 10 s (all counted in the metrics).
        self.log = RateLimitedLog(log, "dead letters")

    async def send_failed(
        self,
        messages: Sequence[RawMessage],
        failed: Sequence[tuple[EventItem, str]],
        seen_at: datetime,
    ) -> None:
        """Dead-letter the events of leads that could not be applied (kind
        ``processing_error``, the reason naming the lead and the error)."""
        by_position = {position_of(m): m for m in messages}
        records = [
            self.record(
                by_position[position],
                Rejected("processing_error", f"lead_id: {event.lead_id!r}: {why}"),
                seen_at,
            )
            for (event, position), why in failed
            if position is not None
        ]
        await self.send(records)

    async def send(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce dead letters (acked), retrying what may pass. One the broker refuses for
        what it is (too large for the topic) can never be written: it is logged with its
        source position, counted in ``leadscore_dead_letters_unwritable_total`` and
        skipped, so the partition moves on."""

        def refused(record: tuple[bytes, bytes], exc: Exception) -> None:
            self.metrics.dead_letters_unwritable.inc()
            where = orjson.loads(record[1])
            log.error(
                "dead letter of %s[%s]@%s refused by the broker (%s, %d bytes): skipped",
                where.get("source_topic"),
                where.get("source_partition"),
                where.get("source_offset"),
                exc,
                len(record[1]),
            )

        await send_or_skip(self._retry, self.sink, self.topic, records, refused)

    def record(
        self, message: RawMessage, rejected: Rejected, seen_at: datetime
    ) -> tuple[bytes, bytes]:
        self.metrics.dead_lettered.labels(kind=rejected.kind).inc()
        self.log.log(
            "dead letter %s: %s: %s",
            message.where,
            rejected.kind,
            self.lead_ids.reason(rejected.error),
        )
        record = dead_letter(
            rejected,
            value=message.value,
            key=message.key,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            seen_at=seen_at,
            payload_max=self.payload_max,
        )
        return dead_letter_key(message.key), record.model_dump_json().encode()


async def send_or_skip(
    retry: Retry,
    sink: Sink,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    refused: Callable[[tuple[bytes, bytes], Exception], None],
) -> None:
    """Produce ``records`` (acked), retrying what may pass; one the broker refuses for what
    it is can never be written: ``refused`` is told, and it is skipped."""
    what = f"produce to {topic}"
    try:
        await retry(what, partial(sink.send_all, topic, records), permanent=sink.is_permanent)
        return
    except Exception as exc:
        if not sink.is_permanent(exc):
            raise
    for record in records:  # find the one(s) refused; the others go through
        try:
            await retry(what, partial(sink.send_all, topic, [record]), permanent=sink.is_permanent)
        except Exception as exc:
            if not sink.is_permanent(exc):
                raise
            refused(record, exc)
