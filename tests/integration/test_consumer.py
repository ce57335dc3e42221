"""The worker's batch consumer (streams.live.consumer.BatchConsumer) on a real Kafka broker:
a processed batch's offsets are committed while the consumer runs (sent with the next
``consume``, not waited for), the last batch's at stop, and a batch that was not processed
is never committed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from streams.live.consumer import BatchConsumer
from streams.live.interfaces import RawMessage
from streams.settings import load_settings
from tests.integration.worker_harness import committed_total, produce

pytestmark = pytest.mark.integration


def _consumer(bootstrap: str, topic: str, group: str, **settings: float) -> BatchConsumer:
    config = load_settings(
        kafka_bootstrap_servers=bootstrap,
        input_topics=[topic],
        control_topic=f"{topic}-control",
        app_id=group,
        batch_timeout=0.2,
        **settings,
    )
    return BatchConsumer(config)


def _records(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [(b"k", b"%d" % i) for i in range(start, start + n)]


def _wait_until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_processed_batches_are_committed_while_running_and_the_last_at_stop(
    kafka_bootstrap: str, create_topic: Callable[..., str], unique_name: str
) -> None:
    topic = create_topic(unique_name, partitions=2)
    create_topic(f"{unique_name}-control")
    group = f"{unique_name}-group"
    produce(kafka_bootstrap, topic, _records(20))
    consumer = _consumer(kafka_bootstrap, topic, group)
    seen: list[RawMessage] = []

    async def process(batch: list[RawMessage]) -> None:
        seen.extend(batch)

    async def scenario() -> tuple[int, int]:
        task = asyncio.ensure_future(consumer.run(process))
        for _ in range(300):
            if len(seen) >= 20:
                break
            await asyncio.sleep(0.1)
        # Committed while running: the next consume sent the offsets.
        running = await asyncio.to_thread(
            _wait_until,
            lambda: committed_total(kafka_bootstrap, group, topic) == 20,
            30,
        )
        produce(kafka_bootstrap, topic, _records(5, 20))
        for _ in range(300):
            if len(seen) >= 25:
                break
            await asyncio.sleep(0.05)
        await consumer.stop(10)  # the last batch: committed before leaving the group
        await task
        return int(running), committed_total(kafka_bootstrap, group, topic)

    running, at_stop = asyncio.run(scenario())
    assert sorted(int(m.value or b"") for m in seen) == list(range(25))
    assert running, "the processed batches were not committed while the consumer ran"
    assert at_stop == 25
    assert consumer.commit_failures == 0


def test_a_batch_that_fails_is_not_committed(
    kafka_bootstrap: str, create_topic: Callable[..., str], unique_name: str
) -> None:
    topic = create_topic(unique_name)
    create_topic(f"{unique_name}-control")
    group = f"{unique_name}-group"
    produce(kafka_bootstrap, topic, _records(3))
    consumer = _consumer(kafka_bootstrap, topic, group)
    calls = 0

    async def process(batch: list[RawMessage]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("cannot apply")

    async def scenario() -> None:
        task = asyncio.ensure_future(consumer.run(process))
        for _ in range(300):
            if calls:
                break
            await asyncio.sleep(0.05)
        await consumer.stop(10)
        with pytest.raises(RuntimeError):
            await task

    asyncio.run(scenario())
    assert calls == 1
    assert committed_total(kafka_bootstrap, group, topic) == 0


def test_a_batch_lingers_for_more_messages_when_told_to(
    kafka_bootstrap: str, create_topic: Callable[..., str], unique_name: str
) -> None:
    """LEADSCORE_BATCH_LINGER: a batch that is not full waits (up to the linger) for more,
    so a message produced shortly after the first joins its batch; a full batch goes at
    once."""
    topic = create_topic(unique_name)
    create_topic(f"{unique_name}-control")
    group = f"{unique_name}-group"
    consumer = _consumer(kafka_bootstrap, topic, group, batch_linger=1.0, batch_size=3)
    batches: list[list[int]] = []

    async def process(batch: list[RawMessage]) -> None:
        batches.append([int(m.value or b"") for m in batch])

    async def scenario() -> None:
        task = asyncio.ensure_future(consumer.run(process))
        await asyncio.sleep(3)  # joined the group, waiting for a first message
        await asyncio.to_thread(produce, kafka_bootstrap, topic, _records(1))
        await asyncio.sleep(0.2)  # (well inside the 1 s linger)
        await asyncio.to_thread(produce, kafka_bootstrap, topic, _records(4, 1))
        for _ in range(100):
            if sum(map(len, batches)) >= 5:
                break
            await asyncio.sleep(0.1)
        await consumer.stop(10)
        await task

    asyncio.run(scenario())
    assert [m for batch in batches for m in batch] == list(range(5))
    assert batches[0] == [0, 1, 2], "the second produce did not join the lingering batch"
