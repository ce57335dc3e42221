#!/usr/bin/env python
"""End-to-end worker throughput, and the floors it is made of.

    scripts/services up
    .venv/bin/python bench/bench_worker.py                 # 100k events, 5000 leads
    .venv/bin/python bench/bench_worker.py --events 20000 --profile 0

Everything runs against the real Kafka and Redis of ``scripts/services`` (or whatever
LEADSCORE_KAFKA_BOOTSTRAP_SERVERS / LEADSCORE_REDIS_URL say), on throw-away topics, consumer
group and Redis key prefix that are deleted at the end.

1. generate the log (tests/strategies.generate_event_log; event times in 2030 so the
   cooling sweep has nothing to do) and produce it to a fresh input topic;
2. floors, each on the same events:
   * consume: confluent-kafka ``consume(num_messages=...)`` of the whole topic;
   * parse: ``schemas.validation.parse_event`` of every message;
   * engine: ``MemoryStore.apply_batch_sync`` (the scoring math alone, no I/O);
   * Redis: ``RedisStore.apply_batch`` in batches of 2000 (parsed events, one prefix);
   * processor: ``streams.live.processor.Processor.process`` in-process, batches of 2000 raw
     messages: parse + Redis + acked produce of crossings (aiokafka, acks=all); with
     ``--profile N`` a cProfile of the first N batches;
3. the worker: ``leadscore worker`` as a subprocess on the topic; time until
   every message is applied (polling /metrics), and the batch-latency histogram.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402
import redis.asyncio  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # noqa: E402

from schemas.validation import Rejected, parse_event  # noqa: E402
from scoring.rules_file import default_rules_path, load_rules  # noqa: E402
from scoring.store import MemoryStore  # noqa: E402
from streams.live.interfaces import RawMessage, position_of  # noqa: E402
from streams.live.metrics import Metrics  # noqa: E402
from streams.live.processor import Processor  # noqa: E402
from streams.live.redis_store import RedisStore  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lib import redis_store_floor  # noqa: E402

from tests.integration.worker_harness import (  # noqa: E402
    FUTURE_MS,
    WorkerConfig,
    WorkerProcess,
    delete_groups,
    encode,
    processed_count,
    produce,
)
from tests.strategies import DAY_MS, generate_event_log  # noqa: E402

BATCH = 2000


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, int, float, str]] = []

    def add(self, stage: str, events: int, seconds: float, note: str = "") -> None:
        self.rows.append((stage, events, seconds, note))
        print(
            f"  {stage}: {events} in {seconds:.2f}s = {events / seconds:,.0f}/s {note}", flush=True
        )

    def print(self) -> None:
        print()
        print(f"{'stage':<46} {'events':>8} {'seconds':>8} {'events/s':>10}  note")
        print("-" * 100)
        for stage, events, seconds, note in self.rows:
            print(f"{stage:<46} {events:>8} {seconds:>8.2f} {events / seconds:>10,.0f}  {note}")


def consume_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "leadscore-bench-reader",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    out: list[Any] = []
    try:
        while len(out) < expected:
            batch = consumer.consume(num_messages=10_000, timeout=1.0)
            out.extend(m for m in batch if not m.error())
    finally:
        consumer.close()
    return out


class AioSink:
    """The worker's sink, outside Faust: aiokafka producer, every record acked."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send_all(self, topic: str, records: Any) -> None:
        futures = [await self.producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)


async def processor_floor(
    bootstrap: str,
    redis_url: str,
    prefix: str,
    raws: list[RawMessage],
    rules: Any,
    hot_topic: str,
    dlq_topic: str,
    profile_batches: int,
) -> tuple[float, str | None]:
    client = redis.asyncio.Redis.from_url(redis_url)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    processor = Processor(
        RedisStore(client, rules, prefix),
        AioSink(producer),
        hot_topic=hot_topic,
        dlq_topic=dlq_topic,
        metrics=Metrics(),
    )
    profile_text = None
    try:
        batches = [raws[i : i + BATCH] for i in range(0, len(raws), BATCH)]
        started = time.perf_counter()
        if profile_batches:
            profiler = cProfile.Profile()
            profiler.enable()
            for batch in batches[:profile_batches]:
                await processor.process(batch)
            profiler.disable()
            buffer = io.StringIO()
            stats = pstats.Stats(profiler, stream=buffer)
            stats.sort_stats("tottime").print_stats(18)
            profile_text = buffer.getvalue()
            batches = batches[profile_batches:]
        for batch in batches:
            await processor.process(batch)
        return time.perf_counter() - started, profile_text
    finally:
        await producer.stop()
        await client.aclose()


def worker_run(config: WorkerConfig, total: int, log: Path) -> dict[str, float]:
    worker = WorkerProcess(config, log)
    t0 = time.perf_counter()
    worker.start()
    first = None
    metrics: dict[str, float] = {}
    try:
        while True:
            if not worker.alive:
                raise RuntimeError(f"worker died\n{worker.log_tail()}")
            try:
                metrics = worker.metrics()
            except OSError:
                time.sleep(0.05)
                continue
            if first is None and metrics.get("leadscore_events_consumed_total", 0) > 0:
                first = time.perf_counter()
            if processed_count(metrics) >= total:
                done = time.perf_counter()
                break
            time.sleep(0.05)
            if time.perf_counter() - t0 > 900:
                raise RuntimeError("worker did not finish in 15 minutes")
    finally:
        worker.stop()
        worker.cleanup()
    assert first is not None
    return {
        "startup": first - t0,
        "processing": done - first,
        "total": done - t0,
        "batches": metrics.get("leadscore_batch_seconds_count", 0),
        "batch_sum": metrics.get("leadscore_batch_seconds_sum", 0),
        "applied": metrics.get("leadscore_events_applied_total", 0),
        "duplicates": metrics.get("leadscore_events_duplicate_total", 0),
        "hot": metrics.get("leadscore_hot_emitted_total", 0),
        "cooled": metrics.get("leadscore_cooled_emitted_total", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--leads", type=int, default=5_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--profile", type=int, default=5, help="batches to cProfile (0: off)")
    parser.add_argument("--skip-worker", action="store_true")
    args = parser.parse_args()

    bootstrap = os.environ.get("LEADSCORE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    redis_url = os.environ.get("LEADSCORE_REDIS_URL", "redis://127.0.0.1:16379/0")
    rules = load_rules(default_rules_path())
    name = f"bench-{uuid.uuid4().hex[:8]}"
    topics = {"input": f"{name}-events", "hot": f"{name}-hot", "dlq": f"{name}-dlq"}
    prefixes = [f"{name}:redis:", f"{name}:proc:", f"{name}:worker:"]
    group = f"{name}-group"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    table = Table()
    print(
        f"bench: {args.events} events, {args.leads} leads, {args.partitions} partitions; "
        f"Kafka {bootstrap}, Redis {redis_url}; {os.cpu_count()} CPUs",
        flush=True,
    )
    try:
        for future in admin.create_topics(
            [
                NewTopic(topics["input"], args.partitions, 1),
                NewTopic(topics["hot"], 2, 1),
                NewTopic(topics["dlq"], 1, 1),
            ]
        ).values():
            future.result(30)

        t = time.perf_counter()
        events = generate_event_log(
            7,
            args.events,
            args.leads,
            start_ms=FUTURE_MS,
            span_ms=45 * DAY_MS,
            buying_fraction=0.15,
            lead_prefix="bench-",
        )
        records = [encode(e) for e in events]
        print(f"  generated in {time.perf_counter() - t:.1f}s", flush=True)
        t = time.perf_counter()
        produce(bootstrap, topics["input"], records)
        table.add("produce (confluent-kafka, acks=all, lz4)", len(records), time.perf_counter() - t)

        # -- floors
        t = time.perf_counter()
        messages = consume_all(bootstrap, topics["input"], len(records))
        table.add(
            "floor: consume (confluent consume(10000))", len(messages), time.perf_counter() - t
        )
        raws = [
            RawMessage(m.topic(), m.partition(), m.offset(), m.key(), m.value()) for m in messages
        ]

        t = time.perf_counter()
        items = []
        for raw in raws:
            parsed = parse_event(raw.value, raw.key, require_key=True)
            assert not isinstance(parsed, Rejected), parsed
            items.append((parsed, position_of(raw)))
        table.add(
            "floor: parse_event (pydantic validate_json)", len(items), time.perf_counter() - t
        )

        t = time.perf_counter()
        memory = MemoryStore(rules)
        for i in range(0, len(items), BATCH):
            memory.apply_batch_sync(items[i : i + BATCH])
        table.add("floor: engine (MemoryStore, no I/O)", len(items), time.perf_counter() - t)

        seconds = asyncio.run(redis_store_floor(redis_url, rules, prefixes[0], items))
        table.add(
            f"floor: RedisStore.apply_batch ({BATCH}/batch)",
            len(items),
            seconds,
            "parsed events in",
        )

        seconds, profile_text = asyncio.run(
            processor_floor(
                bootstrap,
                redis_url,
                prefixes[1],
                raws,
                rules,
                topics["hot"],
                topics["dlq"],
                args.profile,
            )
        )
        table.add(
            f"Processor.process in-process ({BATCH}/batch)",
            len(raws),
            seconds,
            "parse+Redis+acked produce" + (", partly profiled" if profile_text else ""),
        )

        # -- the worker
        if not args.skip_worker:
            config = WorkerConfig(
                bootstrap=bootstrap,
                redis_url=redis_url,
                app_id=group,
                input_topics=(topics["input"],),
                hot_topic=topics["hot"],
                dlq_topic=topics["dlq"],
                key_prefix=prefixes[2],
                partitions=args.partitions,
                sweep_interval=5.0,
            )
            log = Path(f"/tmp/{name}-worker.log")
            result = worker_run(config, len(raws), log)
            table.add(
                "worker end-to-end (subprocess)",
                len(raws),
                result["processing"],
                f"first consumed -> all applied; +{result['startup']:.1f}s start-up",
            )
            batches = result["batches"]
            in_batches = result["batch_sum"]
            print(
                f"\nworker /metrics: {batches:.0f} batches, mean {in_batches / batches * 1000:.0f}"
                f" ms/batch, mean {len(raws) / batches:.0f} events/batch; time inside "
                f"Processor.process {in_batches:.2f}s of {result['processing']:.2f}s "
                f"({in_batches / result['processing']:.0%}); the rest is the consumer loop "
                f"(consume, offset commits), the sweep and idle time"
            )
            print(
                f"worker: applied {result['applied']:.0f}, duplicates "
                f"{result['duplicates']:.0f}, hot {result['hot']:.0f}, cooled "
                f"{result['cooled']:.0f}; log {log}"
            )
        table.print()
        if profile_text:
            print(
                f"\ncProfile of Processor.process, first {args.profile} batches of {BATCH}"
                " (sorted by own time):"
            )
            print("\n".join(profile_text.splitlines()[:40]))
    finally:
        for future in admin.delete_topics(list(topics.values())).values():
            try:
                future.result(30)
            except Exception as exc:
                print(f"could not delete topic: {exc}")
        delete_groups(bootstrap, [group])
        shutil.rmtree(Path(tempfile.gettempdir()) / "leadscore-faust" / group, ignore_errors=True)
        client = redis.Redis.from_url(redis_url)
        for prefix in prefixes:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i : i + 1000])
        client.close()


if __name__ == "__main__":
    main()
