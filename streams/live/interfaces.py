"""What the batch processor programs against: the messages it is handed
(:class:`RawMessage`, :func:`position_of`), the store it writes to (:class:`DurableStore`,
which also says which of its failures are transient) and the sink it produces to
(:class:`Sink`). No Redis, no Faust.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    def is_transient(self, error: Exception) -> bool:
        """Whether ``error`` (raised by this store) passes: an outage (connection lost,
        timeout, a compare-and-set that kept losing to another writer), to be retried for
        as long as it lasts. Anything else raised while applying a batch is a bug or
        corrupt data: a poison event, not an outage."""
        ...


class Sink(Protocol):
    """Where records go: sends a batch and returns once the broker acknowledged all."""

    async def send_all(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None: ...


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A consumed Kafka message, as bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def position_of(message: RawMessage) -> Position:
    """The message's place in the domain's terms: stream ``"topic:partition"``, offset."""
    return Position(f"{message.topic}:{message.partition}", message.offset)


def topic_partition_of(stream: str) -> tuple[str, int] | None:
    """Inverse of :func:`position_of` for the stream: ``(topic, partition)``, or None when
    ``stream`` does not name a Kafka partition."""
    topic, _, partition = stream.rpartition(":")
    if not topic or not (partition.isascii() and partition.isdigit()):
        return None
    return topic, int(partition)
