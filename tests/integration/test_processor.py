"""The worker's batch logic (streams.live.processor.Processor) on real Redis and Kafka, without
Faust: poison isolation and dead letters."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from redis.asyncio import Redis

from schemas.validation import DEAD_LETTER_KEY_MAX
from scoring.rules_file import default_rules_path, load_rules
from streams.kafka import AckedProducer, ProduceError, topic_max_message_bytes
from streams.live.interfaces import RawMessage
from streams.live.metrics import Metrics
from streams.live.processor import Processor
from streams.live.redis_store import RedisStore
from streams.redaction import LeadIdsInLogs
from streams.settings import Settings, load_settings
from tests.strategies import event_dict

pytestmark = pytest.mark.integration


class ProducerSink:
    """The Processor's Sink on a real (confluent-kafka) producer, off the event loop."""

    def __init__(self, producer: AckedProducer) -> None:
        self.producer = producer

    async def send_all(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        await asyncio.to_thread(self.producer.send_all, topic, list(records))

    def is_permanent(self, error: Exception) -> bool:
        return isinstance(error, ProduceError) and error.permanent


def kafka_processor(
    store: RedisStore, settings: Settings, hot: str, dlq: str, **options: Any
) -> Processor:
    """A Processor producing to real Kafka topics (fast retries unless said otherwise)."""
    options.setdefault("metrics", Metrics())
    options.setdefault("retry_initial", 0.01)
    return Processor(
        store, ProducerSink(AckedProducer(settings)), hot_topic=hot, dlq_topic=dlq, **options
    )


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[dict]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    records: list[dict] = []
    try:
        for message in consumer.consume(num_messages=expected, timeout=timeout):
            assert message.error() is None
            records.append(orjson.loads(message.value()))
    finally:
        consumer.close()
    return records


def test_a_lead_that_cannot_be_applied_is_dead_lettered_and_its_neighbours_applied(
    kafka_bootstrap: str, redis_url: str, key_prefix: str, create_topic, unique_name: str
) -> None:
    hot = create_topic(f"{unique_name}-hot")
    dlq = create_topic(f"{unique_name}-dlq")
    rules = load_rules(default_rules_path())
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap)
    events = [
        event_dict("form_submit", "good", 1_767_225_600_000, event_id="g1", form_id="demo"),
        event_dict(
            "page_view",
            "broken",
            1_767_225_600_000,
            event_id="b1",
            url="https://example.com/pricing",
        ),
        event_dict("download", "good", 1_767_225_660_000, event_id="g2", asset_id="x"),
        event_dict(
            "email_click",
            "good",
            1_767_225_720_000,
            event_id="g3",
            url="https://example.com/",
            campaign_id="c",
        ),
    ]
    messages = [
        RawMessage("in", 0, offset, d["lead_id"].encode(), orjson.dumps(d))
        for offset, d in enumerate(events)
    ]

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            store = RedisStore(client, rules, key_prefix)
            # Corrupt stored state: what a bug or a bad manual edit would leave behind.
            await client.set(store.keys.lead("broken").state, b"\x02not a state")
            metrics = Metrics()
            processor = Processor(
                store,
                ProducerSink(AckedProducer(settings)),
                hot_topic=hot,
                dlq_topic=dlq,
                metrics=metrics,
                retry_initial=0.01,
            )
            result = await processor.process(messages)
            assert result.applied == 3
            assert [c.lead_id for c in result.crossings] == ["good"]
            good = await store.get("good")
            assert good is not None and good.events_applied == 3
            assert metrics.dead_lettered.labels(kind="processing_error")._value.get() == 1
        finally:
            await client.aclose()

    asyncio.run(scenario())
    [dead] = read_all(kafka_bootstrap, dlq, 1)
    assert dead["error_kind"] == "processing_error"
    assert dead["error"].startswith("lead_id: 'broken': ")
    assert (dead["source_topic"], dead["source_partition"], dead["source_offset"]) == ("in", 0, 1)
    assert orjson.loads(dead["payload_text"])["event_id"] == "b1"
    [became_hot] = read_all(kafka_bootstrap, hot, 1)
    assert (became_hot["type"], became_hot["lead_id"]) == ("lead_became_hot", "good")


def test_hashed_lead_ids_keep_ids_and_event_values_out_of_the_log(
    kafka_bootstrap: str,
    redis_url: str,
    key_prefix: str,
    create_topic: Any,
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """LEADSCORE_LOG_LEAD_IDS=hashed: a crossing, a lead that cannot be applied and a
    dead letter whose reason quotes the id are logged without it."""
    hot = create_topic(f"{unique_name}-hot")
    dlq = create_topic(f"{unique_name}-dlq")
    rules = load_rules(default_rules_path())
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap)
    at = 1_767_225_600_000
    demo = event_dict("form_submit", "ada-hot", at, event_id="h1", form_id="demo")
    broken = event_dict("page_view", "ada-broken", at, event_id="b1", url="https://x.example/")
    mismatched = event_dict("page_view", "ada-secret", at, event_id="m1", url="https://x.example/")
    more = [
        event_dict("download", "ada-hot", at + 60_000, event_id="h2", asset_id="x"),
        event_dict(
            "email_click", "ada-hot", at + 120_000, event_id="h3", url="https://x/", campaign_id="c"
        ),
    ]
    messages = [
        RawMessage("in", 0, 0, b"ada-hot", orjson.dumps(demo)),
        RawMessage("in", 0, 1, b"ada-broken", orjson.dumps(broken)),
        RawMessage("in", 0, 2, b"ada-other-key", orjson.dumps(mismatched)),
        *(RawMessage("in", 0, 3 + i, b"ada-hot", orjson.dumps(e)) for i, e in enumerate(more)),
    ]

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            store = RedisStore(client, rules, key_prefix)
            await client.set(store.keys.lead("ada-broken").state, b"\x02not a state")
            processor = Processor(
                store,
                ProducerSink(AckedProducer(settings)),
                hot_topic=hot,
                dlq_topic=dlq,
                metrics=Metrics(),
                retry_initial=0.01,
                lead_ids=LeadIdsInLogs("hashed"),
            )
            result = await processor.process(messages)
            processor.dead_letters.log.flush()
            assert [c.lead_id for c in result.crossings] == ["ada-hot"]
        finally:
            await client.aclose()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("leadscore"))
    assert "h:" + hashlib.sha256(b"ada-hot").hexdigest()[:12] in text
    assert "dead letter in[0]@2: key_mismatch" in text
    assert "ada-" not in text, text
    assert len(read_all(kafka_bootstrap, dlq, 2)) == 2  # the whole reasons are kept there


def test_an_operation_failing_for_long_is_reported_for_healthz(
    redis_url: str, key_prefix: str
) -> None:
    """Kafka unreachable: the processor keeps retrying the produce (nothing is dropped)
    and records what is failing since when, which /healthz turns into a 503."""
    rules = load_rules(default_rules_path())
    dead_kafka = load_settings(kafka_bootstrap_servers="127.0.0.1:1")
    producer = AckedProducer(dead_kafka, **{"message.timeout.ms": 500})
    hot = event_dict("form_submit", "hot-lead", 1_767_225_600_000, event_id="h1", form_id="demo")
    more = event_dict(
        "email_click",
        "hot-lead",
        1_767_225_601_000,
        event_id="h2",
        url="https://example.com/",
        campaign_id="c",
    )
    download = event_dict("download", "hot-lead", 1_767_225_602_000, event_id="h3", asset_id="a")
    messages = [  # 50 + 10 + 20 = 80 >= 70: one lead_became_hot to produce
        RawMessage("in", 0, i, b"hot-lead", orjson.dumps(d))
        for i, d in enumerate([hot, more, download])
    ]

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            processor = Processor(
                RedisStore(client, rules, key_prefix),
                ProducerSink(producer),
                hot_topic="hot",
                dlq_topic="dlq",
                metrics=Metrics(),
                retry_initial=0.05,
                retry_max=0.2,
            )
            task = asyncio.ensure_future(processor.process(messages))
            deadline = asyncio.get_running_loop().time() + 20
            while "produce hot-lead events" not in processor.failing:
                assert not task.done(), "process() must not give up"
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
            _since, error = processor.failing["produce hot-lead events"]
            assert error  # the last error, for /healthz
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_huge_key_is_dead_lettered_within_kafkas_limits_and_the_partition_moves_on(
    kafka_bootstrap: str, redis_url: str, key_prefix: str, create_topic, unique_name: str
) -> None:
    """A record with a 150 KB key (Kafka accepts it) and an 18-byte value: its dead letter
    keeps the first DEAD_LETTER_KEY_MAX bytes of the key, its size and hash, and is keyed
    by the hash, so the broker takes it (a copy of the key, JSON-escaped, would not fit)."""
    hot = create_topic(f"{unique_name}-hot")
    dlq = create_topic(f"{unique_name}-dlq")
    rules = load_rules(default_rules_path())
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap)
    huge_key = b"\x01" * 150_000  # each byte escapes to 6 characters of JSON: 900 KB
    good = event_dict("form_submit", "ok", 1_767_225_600_000, event_id="ok1", form_id="demo")
    messages = [
        RawMessage("in", 0, 0, huge_key, b'{"not": "an event"}'),
        RawMessage("in", 0, 1, b"ok", orjson.dumps(good)),
    ]

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            store = RedisStore(client, rules, key_prefix)
            processor = kafka_processor(store, settings, hot, dlq)
            result = await asyncio.wait_for(processor.process(messages), 30)
            assert result.applied == 1
        finally:
            await client.aclose()

    asyncio.run(scenario())
    [dead] = read_all(kafka_bootstrap, dlq, 1)
    assert dead["key_bytes"] == len(huge_key)
    assert dead["key_sha256"] == hashlib.sha256(huge_key).hexdigest()
    assert len(dead["key"].encode()) <= DEAD_LETTER_KEY_MAX
    assert len(orjson.dumps(dead)) < 64 * 1024


def test_an_event_dated_too_far_after_its_record_is_dead_lettered(
    kafka_bootstrap: str, redis_url: str, key_prefix: str, create_topic, unique_name: str
) -> None:
    """The clock-skew policy live: an event dated in 2099, carried by a record of today,
    would move its lead's clock to 2099 (and later events would no longer count); it is
    dead-lettered naming occurred_at, and its lead's next events count in full."""
    hot = create_topic(f"{unique_name}-hot")
    dlq = create_topic(f"{unique_name}-dlq")
    rules = load_rules(default_rules_path())
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap)
    now = 1_767_225_600_000
    far = event_dict("page_view", "skew", 4_070_908_800_000, event_id="far", url="https://x.io/")
    forms = [
        event_dict("form_submit", "skew", now + i, event_id=f"f{i}", form_id="demo")
        for i in range(3)
    ]
    messages = [
        RawMessage("in", 0, i, b"skew", orjson.dumps(d), timestamp_ms=now)
        for i, d in enumerate([far, *forms])
    ]

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            store = RedisStore(client, rules, key_prefix)
            processor = kafka_processor(store, settings, hot, dlq, max_clock_skew_ms=86_400_000)
            result = await processor.process(messages)
            assert result.applied == 3
            state = await store.get("skew")
            assert state is not None and state.clock_ms == now + 2
        finally:
            await client.aclose()

    asyncio.run(scenario())
    [dead] = read_all(kafka_bootstrap, dlq, 1)
    assert dead["error_kind"] == "invalid_event"
    assert dead["error"].startswith("occurred_at: 2099-01-01T00:00:00Z is ")


@pytest.mark.parametrize("limit", [20_000, 300], ids=["small-dlq-topic", "tiny-dlq-topic"])
def test_dead_letters_are_bounded_by_the_dlq_topic_and_never_retried_forever(
    kafka_bootstrap: str,
    redis_url: str,
    key_prefix: str,
    create_topic,
    unique_name: str,
    limit: int,
) -> None:
    """The dead-letter topic takes at most ``limit`` bytes per record. With 20 KB the
    dead letter of a 60 KB bad message is cut to fit; with 300 bytes none fits: the broker
    refuses it, which can never pass, so it is logged, counted and skipped, and the
    partition moves on."""
    hot = create_topic(f"{unique_name}-hot")
    dlq = create_topic(f"{unique_name}-dlq", config={"max.message.bytes": str(limit)})
    rules = load_rules(default_rules_path())
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap)
    assert topic_max_message_bytes(settings, dlq) == limit
    good = event_dict("form_submit", "ok", 1_767_225_600_000, event_id="ok1", form_id="demo")
    messages = [
        RawMessage("in", 0, 0, b"ok", b'{"pad": "' + b"x" * 60_000 + b'"'),  # bad JSON
        RawMessage("in", 0, 1, b"ok", orjson.dumps(good)),
    ]
    metrics = Metrics()

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            store = RedisStore(client, rules, key_prefix)
            processor = kafka_processor(
                store, settings, hot, dlq, metrics=metrics, dlq_max_message_bytes=limit
            )
            result = await asyncio.wait_for(processor.process(messages), 60)
            assert result.applied == 1
        finally:
            await client.aclose()

    asyncio.run(scenario())
    unwritable = metrics.dead_letters_unwritable._value.get()
    if limit == 300:
        assert unwritable == 1
    else:
        assert unwritable == 0
        [dead] = read_all(kafka_bootstrap, dlq, 1)
        assert dead["payload_truncated"] and dead["payload_bytes"] == 60_010
        assert len(orjson.dumps(dead)) <= limit


def test_the_sweep_does_not_cool_leads_while_partition_ownership_is_unknown(
    kafka_bootstrap: str, redis_url: str, key_prefix: str, create_topic, unique_name: str
) -> None:
    """A worker that has not polled for longer than a session (paused, stuck) may have
    lost its partitions without knowing yet: its sweep skips cooling (the lag function
    says None) instead of acting for another worker's leads; once ownership is confirmed
    again, the due lead cools."""
    hot = create_topic(f"{unique_name}-hot")
    dlq = create_topic(f"{unique_name}-dlq")
    rules = load_rules(default_rules_path())
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap)
    long_ago = 1_700_000_000_000  # 2023: the lead's cooling is long due
    events = [
        event_dict("form_submit", "due", long_ago, event_id="d1", form_id="demo"),
        event_dict("download", "due", long_ago + 1, event_id="d2", asset_id="a"),
        event_dict(
            "email_click", "due", long_ago + 2, event_id="d3", url="https://x.io/", campaign_id="c"
        ),
    ]
    messages = [RawMessage("in", 0, i, b"due", orjson.dumps(d)) for i, d in enumerate(events)]
    owned: dict[tuple[str, int], int] | None = None

    async def lags() -> dict[tuple[str, int], int] | None:
        return owned

    async def scenario() -> None:
        nonlocal owned
        client = Redis.from_url(redis_url)
        try:
            store = RedisStore(client, rules, key_prefix)
            processor = kafka_processor(store, settings, hot, dlq, partition_lag=lags)
            result = await processor.process(messages)
            assert [c.kind for c in result.crossings] == ["lead_became_hot"]
            assert await processor.sweep() == 0  # ownership unknown: nothing cooled
            state = await store.get("due")
            assert state is not None and state.hot
            owned = {("in", 0): 0}  # polled again: partition 0 is ours, caught up
            assert await processor.sweep() == 1
            state = await store.get("due")
            assert state is not None and not state.hot
        finally:
            await client.aclose()

    asyncio.run(scenario())
