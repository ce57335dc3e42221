"""Smoke tests for the service stack: the pinned Kafka broker works with every client we use
(confluent-kafka, aiokafka = faust-streaming's driver, kcat), and Redis is usable and durable."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import time
from typing import Any

import pytest
import redis
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import Consumer, KafkaError, Message, Producer

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

RECORDS: list[dict[str, Any]] = [
    {"lead_id": f"lead-{i}", "event": "page_view", "seq": i, "note": "héllo ✓"} for i in range(5)
]


def produce_json(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    """Produce records as JSON with confluent-kafka (idempotent, acks=all)."""
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for record in records:
        producer.produce(
            topic,
            key=record["lead_id"].encode(),
            value=json.dumps(record).encode(),
            on_delivery=on_delivery,
        )
    assert producer.flush(30) == 0, "messages still in flight after 30s"
    assert errors == []


def consume_confluent(
    bootstrap: str, topic: str, group: str, count: int, **extra: Any
) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **extra,
        }
    )
    consumer.subscribe([topic])
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    try:
        while len(received) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert value is not None
            received.append(json.loads(value))
    finally:
        consumer.close()
    return received


@pytest.fixture
def topic_with_records(create_topic: Any, unique_name: str, kafka_bootstrap: str) -> str:
    topic: str = create_topic(unique_name)
    produce_json(kafka_bootstrap, topic, RECORDS)
    return topic


def test_broker_version_logged(services: Any) -> None:
    print(f"Kafka broker version: {services.kafka_version} ({services.source})")
    log.info("Kafka broker version: %s (%s)", services.kafka_version, services.source)
    assert services.kafka_version, "broker version unknown"
    pinned = os.environ.get("LEADSCORE_KAFKA_VERSION")  # exported by `scripts/services env`
    if services.source == "env" and pinned:
        # The broker that answers is the pinned one (version read from its broker.log).
        assert services.kafka_version == pinned


def test_docker_compose_uses_pinned_kafka_version() -> None:
    from tests.conftest import REPO_ROOT, pinned_kafka_version

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{pinned_kafka_version()}"


def test_confluent_kafka_roundtrip(
    kafka_bootstrap: str, topic_with_records: str, unique_name: str
) -> None:
    received = consume_confluent(kafka_bootstrap, topic_with_records, unique_name, len(RECORDS))
    assert received == RECORDS


def test_aiokafka_consumer_reads_confluent_records(
    kafka_bootstrap: str, topic_with_records: str, unique_name: str
) -> None:
    async def consume() -> tuple[list[dict[str, Any]], int | None]:
        consumer = AIOKafkaConsumer(
            topic_with_records,
            bootstrap_servers=kafka_bootstrap,
            group_id=unique_name,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            received: list[dict[str, Any]] = []
            async with asyncio.timeout(30):
                while len(received) < len(RECORDS):
                    batches = await consumer.getmany(timeout_ms=500)
                    for messages in batches.values():
                        received.extend(json.loads(m.value) for m in messages)
            # Offset commit/fetch through the group coordinator, as faust does.
            await consumer.commit()
            committed = await consumer.committed(TopicPartition(topic_with_records, 0))
        finally:
            await consumer.stop()
        return received, committed

    received, committed = asyncio.run(consume())
    assert received == RECORDS
    assert committed == len(RECORDS)


def test_aiokafka_producer_to_confluent_consumer(
    kafka_bootstrap: str, create_topic: Any, unique_name: str
) -> None:
    topic = create_topic(unique_name)

    async def produce() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            for record in RECORDS:
                await producer.send_and_wait(
                    topic, json.dumps(record).encode(), key=record["lead_id"].encode()
                )
        finally:
            await producer.stop()

    asyncio.run(produce())
    assert consume_confluent(kafka_bootstrap, topic, unique_name, len(RECORDS)) == RECORDS


def test_aiokafka_transactional_producer(
    kafka_bootstrap: str, create_topic: Any, unique_name: str
) -> None:
    """faust's exactly_once guarantee uses aiokafka transactions: commit, abort, commit."""
    topic = create_topic(unique_name)
    end_marker = {"end": True}

    async def produce() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, transactional_id=f"{unique_name}-tx"
        )
        await producer.start()
        try:
            async with producer.transaction():
                for record in RECORDS:
                    await producer.send(topic, json.dumps(record).encode())
            await producer.begin_transaction()
            await producer.send(topic, json.dumps({"aborted": True}).encode())
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send(topic, json.dumps(end_marker).encode())
        finally:
            await producer.stop()

    asyncio.run(produce())
    # Reading up to the end marker (committed after the abort) proves the aborted record is
    # filtered out rather than merely not yet visible.
    received = consume_confluent(
        kafka_bootstrap,
        topic,
        unique_name,
        len(RECORDS) + 1,
        **{"isolation.level": "read_committed"},
    )
    assert received == [*RECORDS, end_marker]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (apt install kcat)")
def test_kcat_reads_records(kafka_bootstrap: str, topic_with_records: str) -> None:
    metadata = subprocess.run(
        ["kcat", "-b", kafka_bootstrap, "-L", "-t", topic_with_records, "-m", "10"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert f'topic "{topic_with_records}" with 1 partitions' in metadata.stdout

    consume = ["-C", "-t", topic_with_records, "-e", "-o", "beginning", "-q", "-f", "%k\t%s\n"]
    result = subprocess.run(
        ["kcat", "-b", kafka_bootstrap, *consume],
        capture_output=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.decode().splitlines()
    assert [json.loads(line.split("\t", 1)[1]) for line in lines] == RECORDS
    assert [line.split("\t", 1)[0] for line in lines] == [r["lead_id"] for r in RECORDS]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (apt install kcat)")
def test_kcat_produces_records(kafka_bootstrap: str, create_topic: Any, unique_name: str) -> None:
    topic = create_topic(unique_name)
    lines = "".join(f"{r['lead_id']}\t{json.dumps(r)}\n" for r in RECORDS)
    subprocess.run(
        ["kcat", "-b", kafka_bootstrap, "-P", "-t", topic, "-K", "\t"],
        input=lines.encode(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert consume_confluent(kafka_bootstrap, topic, unique_name, len(RECORDS)) == RECORDS


def test_redis_set_get_and_lua(redis_client: redis.Redis, key_prefix: str) -> None:
    key = f"{key_prefix}lead:1"
    assert redis_client.set(key, "42")
    assert redis_client.get(key) == "42"

    # Atomic "add and cap" in Lua, the kind of script the scorer uses.
    add_capped = redis_client.register_script(
        """
        local v = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1])
        if v > tonumber(ARGV[2]) then v = tonumber(ARGV[2]) end
        redis.call('SET', KEYS[1], v)
        return v
        """
    )
    assert add_capped(keys=[key], args=[50, 100]) == 92
    assert add_capped(keys=[key], args=[50, 100]) == 100
    assert redis_client.get(key) == "100"


def test_redis_aof_enabled(services: Any, redis_client: redis.Redis) -> None:
    """scripts/services and the testcontainers fixture both start Redis with AOF on."""
    assert redis_client.config_get("appendonly") == {"appendonly": "yes"}
    assert redis_client.config_get("appendfsync") == {"appendfsync": "everysec"}
