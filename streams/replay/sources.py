"""Where a replay reads records from: JSONL files (:class:`FileSource`) and Kafka topic
ranges (:class:`KafkaSource`), both yielding raw records in :class:`Chunk` s; and
:func:`open_source`, which turns a command-line argument into one of them.

Nothing is parsed here: a chunk holds bytes, their line numbers or Kafka positions, and
the progress they account for.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from schemas.formats import InputFormat
from streams.jsonl import JsonlError, read_chunks

from .errors import ReplayError


@dataclass(slots=True)
class Chunk:
    """A run of raw records from one source, in order."""

    values: list[bytes | None]
    #: Kafka message keys (checked against ``lead_id`` like the worker does); None for files.
    keys: list[bytes | None] | None = None
    #: Files: line number of ``values[0]`` (1-based; blank lines keep their number).
    first_line: int = 1
    #: Kafka: ``(partition, offset)`` of each value.
    positions: list[tuple[int, int]] | None = None
    #: Kafka: each record's timestamp (ms; None: not available), and how far after it an
    #: event may be dated (the worker's clock-skew policy; None: no limit).
    timestamps: list[int | None] | None = None
    max_skew_ms: int | None = None
    #: Progress units (file bytes / Kafka messages) this chunk accounts for.
    progress: int = 0
    #: What the records are (:mod:`schemas.formats`).
    input_format: InputFormat = "leadscore"


class Source(Protocol):
    """Where events are read from."""

    #: How bad records of this source are named (``events.jsonl``, ``kafka:lead-events``).
    name: str

    def size(self) -> int:
        """Total progress units (bytes or messages), for the progress bar."""
        ...

    def chunks(self) -> Iterator[Chunk]:
        """The records, in order."""
        ...


class FileSource:
    """A JSONL log, cut into lines by :mod:`streams.jsonl` exactly as ``leadscore produce``
    cuts it: trailing ``\\r`` removed; blank lines are passed on (the reader counts them)
    so that every record keeps its 1-based line number."""

    def __init__(
        self, path: Path, chunk_bytes: int | None = None, input_format: InputFormat = "leadscore"
    ) -> None:
        self.path = path
        self.input_format = input_format
        self.name = str(path)
        #: Bytes read at a time (default :data:`streams.jsonl.CHUNK_BYTES`; results never
        #: depend on it).
        self.chunk_bytes = chunk_bytes

    def size(self) -> int:
        return self.path.stat().st_size

    def chunks(self) -> Iterator[Chunk]:
        try:
            for part in read_chunks(self.path, self.chunk_bytes):
                values: list[bytes | None] = list(part.lines)
                yield Chunk(
                    values,
                    first_line=part.first_line,
                    progress=part.file_bytes,
                    input_format=self.input_format,
                )
        except JsonlError as exc:
            raise ReplayError(str(exc)) from None


def _kafka() -> ModuleType:
    """The Kafka client, imported only when a ``kafka:`` source is read (file replays and
    ``leadscore --help`` never load it)."""
    import confluent_kafka  # noqa: PLC0415  (heavy, and only kafka: sources need it)

    return confluent_kafka


class KafkaSource:
    """A range of a Kafka topic: every partition from the first message written at or
    after ``from_ms`` (default: the oldest) up to, excluding, the first written at or after
    ``to_ms`` (default: the end when the replay starts). Times are the messages' Kafka
    timestamps (when they were produced), not ``occurred_at``.

    Reads with explicit offsets (``offsets_for_times`` + ``assign()``): it never joins a
    consumer group and never commits, so the live worker's group is not disturbed.
    """

    def __init__(
        self,
        topic: str,
        config: Mapping[str, Any],
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        timeout_s: float = 30.0,
        batch: int = 10_000,
        max_clock_skew_ms: int | None = None,
        input_format: InputFormat = "leadscore",
    ) -> None:
        self.topic = topic
        self.input_format = input_format
        #: Events dated more than this after their record are rejected, as live.
        self.max_clock_skew_ms = max_clock_skew_ms
        self.name = f"kafka:{topic}"
        self.from_ms = from_ms
        self.to_ms = to_ms
        self.timeout_s = timeout_s
        self.batch = batch
        self.config = {
            **config,
            # A throw-away group id: assign() never joins it and nothing is committed.
            "group.id": f"leadscore-replay-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
        self._consumer: Any = None
        self._ranges: list[tuple[int, int, int]] | None = None

    def _open(self) -> list[tuple[int, int, int]]:
        """Connect and resolve ``(partition, start, end)`` offsets (once)."""
        if self._ranges is not None:
            return self._ranges
        kafka = _kafka()
        consumer = kafka.Consumer(self.config)
        self._consumer = consumer
        try:
            meta = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(self.topic)
            if meta is None or meta.error is not None:
                reason = meta.error if meta is not None else "not found"
                raise ReplayError(f"{self.name}: {reason}")
            ranges = []
            for partition in sorted(meta.partitions):
                low, high = consumer.get_watermark_offsets(
                    kafka.TopicPartition(self.topic, partition), timeout=self.timeout_s
                )
                start = self._offset_at(consumer, partition, self.from_ms, low, high)
                end = self._offset_at(consumer, partition, self.to_ms, high, high)
                ranges.append((partition, start, max(start, end)))
        except kafka.KafkaException as exc:
            raise ReplayError(f"{self.name}: {exc}") from None
        self._ranges = ranges
        return ranges

    def _offset_at(
        self, consumer: Any, partition: int, at_ms: int | None, default: int, high: int
    ) -> int:
        """First offset of ``partition`` written at or after ``at_ms`` (``high`` when none;
        ``default`` when no time is given)."""
        if at_ms is None:
            return default
        found = consumer.offsets_for_times(
            [_kafka().TopicPartition(self.topic, partition, at_ms)], timeout=self.timeout_s
        )[0]
        return int(found.offset) if found.offset >= 0 else high

    def ranges(self) -> list[tuple[int, int, int]]:
        """``(partition, start offset, end offset)`` per partition (end excluded)."""
        return list(self._open())

    def size(self) -> int:
        return sum(end - start for _, start, end in self._open())

    def chunks(self) -> Iterator[Chunk]:
        kafka = _kafka()
        ranges = self._open()
        consumer = self._consumer
        remaining = {p: end for p, start, end in ranges if start < end}
        try:
            consumer.assign(
                [kafka.TopicPartition(self.topic, p, s) for p, s, end in ranges if s < end]
            )
            idle_since = time.monotonic()
            while remaining:
                chunk = self._take(consumer, remaining)
                # A partition is done once its position reaches the end offset (this also
                # covers offsets without a message: transaction markers, compaction).
                topic_partitions = [kafka.TopicPartition(self.topic, p) for p in remaining]
                for tp in consumer.position(topic_partitions):
                    if tp.offset >= remaining[tp.partition]:
                        del remaining[tp.partition]
                if chunk.values:
                    idle_since = time.monotonic()
                    yield chunk
                elif remaining and time.monotonic() - idle_since > self.timeout_s:
                    stuck = ", ".join(f"partition {p} (end {e})" for p, e in remaining.items())
                    raise ReplayError(
                        f"{self.name}: no message for {self.timeout_s:.0f}s before the end of "
                        f"the range: {stuck}"
                    )
        finally:
            consumer.close()

    def _take(self, consumer: Any, remaining: Mapping[int, int]) -> Chunk:
        """The next messages inside the range (possibly none)."""
        partition_eof = _kafka().KafkaError._PARTITION_EOF
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        positions: list[tuple[int, int]] = []
        timestamps: list[int | None] = []
        available = _kafka().TIMESTAMP_NOT_AVAILABLE
        for message in consumer.consume(num_messages=self.batch, timeout=0.5):
            error = message.error()
            if error is not None:
                if error.code() == partition_eof:
                    continue
                raise ReplayError(f"{self.name}: {error}")
            partition, offset = message.partition(), message.offset()
            end = remaining.get(partition)
            if end is None or offset >= end:
                continue  # past the range (or a finished partition)
            values.append(message.value())
            keys.append(message.key())
            positions.append((partition, offset))
            kind, stamp = message.timestamp()
            timestamps.append(stamp if kind != available and stamp >= 0 else None)
        return Chunk(
            values,
            keys=keys,
            positions=positions,
            progress=len(values),
            timestamps=timestamps,
            max_skew_ms=self.max_clock_skew_ms,
            input_format=self.input_format,
        )


def open_source(
    spec: str,
    *,
    from_ms: int | None = None,
    to_ms: int | None = None,
    kafka_config: Callable[[], Mapping[str, Any]] | None = None,
    max_clock_skew_ms: int | None = None,
    input_format: InputFormat = "leadscore",
) -> Source:
    """``kafka:TOPIC`` -> :class:`KafkaSource` (``kafka_config`` gives the client
    configuration), anything else -> :class:`FileSource`; records of ``input_format``."""
    if spec.startswith("kafka:"):
        topic = spec.removeprefix("kafka:")
        if not topic:
            raise ReplayError(f"{spec!r}: expected kafka:TOPIC")
        if kafka_config is None:
            raise ReplayError(f"{spec}: no Kafka configuration")
        return KafkaSource(
            topic,
            kafka_config(),
            from_ms=from_ms,
            to_ms=to_ms,
            max_clock_skew_ms=max_clock_skew_ms,
            input_format=input_format,
        )
    path = Path(spec)
    if not path.is_file():
        raise ReplayError(f"{spec}: no such file (for a Kafka topic write kafka:TOPIC)")
    return FileSource(path, input_format=input_format)
