"""What the batch processor programs against: the messages it is handed
(:class:`RawMessage`, :func:`position_of`), the store it writes to (:class:`DurableStore`,
which also says which of its failures are transient) and the sink it produces to
(:class:`Sink`). No Redis, no Faust.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from scoring.crossings import Crossing
from scoring.state import Position
from scoring.store import LeadStore


class DurableStore(LeadStore, Protocol):
    """A :class:`scoring.store.LeadStore` with a transactional outbox: the crossings of a
    batch are written with the states and stay in the outbox until confirmed delivered."""

    async def prepare(self) -> int:
        """Get ready before the first batch (e.g. convert an older storage format);
        returns how many leads that touched. Safe to call again."""
        ...

    async def mark_delivered(self, crossings: Sequence[Crossing]) -> None:
        """The crossings were produced and acknowledged: drop them from the outbox."""
        ...

    async def undelivered(self, limit: int = 1000) -> list[Crossing]:
        """Crossings written but not confirmed delivered (a crash fell in between)."""
        ...

    def note_applied(self, offsets: Mapping[str, int | None]) -> None:
        """Kafka says these streams were applied up to these offsets (the committed
        offsets of newly assigned partitions; None: revoked). A store that can tell it
        lost writes since (:class:`StoreRolledBack`) checks against them."""
        ...

    async def verify_applied(self) -> dict[str, int]:
        """Streams whose applied marks fell behind what :meth:`note_applied` and the
        saved batches said (the store lost writes), with where to re-read from (-1: the
        start); empty when all is well."""
        ...

    def is_transient(self, error: Exception) -> bool:
        """Whether ``error`` (raised by this store) passes: an outage (connection lost,
        timeout, a compare-and-set that kept losing to another writer), to be retried for
        as long as it lasts. Anything else raised while applying a batch is a bug or
        corrupt data: a poison event, not an outage."""
        ...


class StoreRolledBack(Exception):
    """The store lost writes it had acknowledged (a Redis rollback: an AOF tail lost on
    power failure, a failover to a lagging replica, a restore from backup): for these
    streams its "applied up to" marks are behind what was applied before. Nothing of the
    batch was written; re-read each stream from its mark (-1: from the start), and the
    per-lead offsets skip whatever survived."""

    def __init__(self, marks: dict[str, int]) -> None:
        where = ", ".join(f"{s} at {m}" for s, m in sorted(marks.items()))
        super().__init__(f"the store rolled back: applied up to {where}")
        self.marks = marks


class Sink(Protocol):
    """Where records go: sends a batch and returns once the broker acknowledged all."""

    async def send_all(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None: ...

    def is_permanent(self, error: Exception) -> bool:
        """Whether ``error`` (raised by :meth:`send_all`) is the broker refusing the
        records themselves (too large, invalid): sending them again cannot pass."""
        ...


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A consumed Kafka message, as bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: The record's Kafka timestamp (ms; None: not available): the clock-skew policy.
    timestamp_ms: int | None = None

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def stream_of(topic: str, partition: int) -> str:
    """A Kafka partition as the domain's stream name: ``"topic:partition"``."""
    name = _streams.get((topic, partition))
    if name is None:
        name = _streams[(topic, partition)] = f"{topic}:{partition}"
    return name


#: (topic, partition) -> stream name (a handful per worker).
_streams: dict[tuple[str, int], str] = {}


def position_of(message: RawMessage) -> Position:
    """The message's place in the domain's terms: stream ``"topic:partition"``, offset."""
    return Position(stream_of(message.topic, message.partition), message.offset)


def topic_partition_of(stream: str) -> tuple[str, int] | None:
    """Inverse of :func:`position_of` for the stream: ``(topic, partition)``, or None when
    ``stream`` does not name a Kafka partition."""
    topic, _, partition = stream.rpartition(":")
    if not topic or not (partition.isascii() and partition.isdigit()):
        return None
    return topic, int(partition)
