"""What the Redis store raises, and which of its failures are transient (the processor
retries those, with backoff; anything else is a poison batch, isolated lead by lead)."""

from __future__ import annotations

import redis.exceptions

from .redis_nodes import TopologyChangedError


class StoreConflictError(RuntimeError):
    """A lead's compare-and-set failed too many times (two writers fighting over it)."""


class IndexConflictError(RuntimeError):
    """The landmark, or the leads, kept changing while their index entries were written."""


class StoreFormatError(RuntimeError):
    """The store under the key prefix is in a format this worker does not write: older
    (converted by :meth:`RedisStore.prepare`) or newer (upgrade leadscore); or it is a
    Redis Cluster and the settings do not say so."""


#: Transient failures (see :meth:`RedisStore.is_transient`).
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    TopologyChangedError,
    StoreConflictError,
    IndexConflictError,
    OSError,
    TimeoutError,
)
