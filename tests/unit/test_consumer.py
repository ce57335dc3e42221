"""BatchConsumer's fence for the cooling sweep: its assignment is trusted only within one
session timeout of its last poll (a paused or stuck process may have been dropped from the
group without knowing yet)."""

from __future__ import annotations

import time

from streams.live.consumer import BatchConsumer
from streams.settings import load_settings


def test_the_assignment_is_trusted_only_within_a_session_of_the_last_poll() -> None:
    consumer = BatchConsumer(load_settings(broker_session_timeout=10))
    try:
        assert not consumer.owns_its_assignment()  # never polled
        consumer._last_poll = time.monotonic()
        assert consumer.owns_its_assignment()
        consumer._last_poll = time.monotonic() - 11
        assert not consumer.owns_its_assignment()
    finally:
        consumer._consumer.close()
