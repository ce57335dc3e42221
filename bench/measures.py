"""The measurements of ``bench/driver.py`` that are not a throughput race: latency under a
paced load, Redis bytes per lead, replay throughput."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis
import redis.asyncio
from bench_lib import (
    REPO_ROOT,
    Resources,
    bounded,
    busy_percent,
    cpu_seconds,
    machine_jiffies,
)
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from schemas.validation import Rejected, parse_event
from scoring.rules import RuleSet
from streams.live.redis_store import RedisStore
from tests.integration.worker_harness import (
    FUTURE_MS,
    Record,
    WorkerConfig,
    WorkerProcess,
    encode,
    processed_count,
)
from tests.strategies import DAY_MS, event_dict, generate_event_log

# ------------------------------------------------------------------------------ latency


class HotListener(threading.Thread):
    """Reads the hot topic from the beginning; arrival wall time per trigger_event_id."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{topic}-listener",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.arrivals: dict[str, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            # consume(n, timeout) returns only when it has n messages or the timeout ran
            # out: waiting with it would add up to the timeout to every latency. Wait for
            # the first message alone, then take what else is buffered (as the worker does).
            first = self.consumer.poll(0.05)
            if first is None:
                continue
            for message in [first, *self.consumer.consume(1000, timeout=0)]:
                now = time.time()
                value = message.value()
                if message.error() or value is None:
                    continue
                data = orjson.loads(value)
                trigger = data.get("trigger_event_id")
                if data.get("type") == "lead_became_hot" and trigger:
                    self.arrivals.setdefault(trigger, now)
        self.consumer.close()


def paced_produce(
    bootstrap: str,
    topic: str,
    records: list[Record],
    ids: list[str],
    rate: float,
    warmup_topic: str | None = None,
) -> dict[str, float]:
    """Produce ``records`` at ``rate`` per second (wall-clock schedule, small bursts);
    returns the produce() time of each event id. With ``warmup_topic``, the producer first
    fetches metadata and its idempotent producer id by producing one record there, so the
    first events' latency does not include the producer's own start-up (~0.5 s, which
    otherwise makes the p99 of a short run)."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1, "enable.idempotence": True}
    )
    if warmup_topic is not None:
        producer.list_topics(topic, timeout=10)
        producer.produce(warmup_topic, b"{}", b"warmup")
        producer.flush(10)
    sent: dict[str, float] = {}
    start = time.time()
    i = 0
    deadline = start + len(records) / rate * 3 + 30
    while i < len(records) and time.time() < deadline:
        due = min(len(records), int((time.time() - start) * rate) + 1)
        while i < due:
            key, value = records[i]
            try:
                producer.produce(topic, value, key)
            except BufferError:
                producer.poll(0.01)
                continue
            sent[ids[i]] = time.time()
            i += 1
        producer.poll(0)
        time.sleep(0.0005)
    producer.flush(60)
    return sent


@dataclass
class LatencyPlan:
    rate: int
    seconds: float


def latency(
    res: Resources,
    plans: list[LatencyPlan],
    partitions: int,
    log_dir: Path,
    worker_env: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """One worker on fresh topics; for each offered load, a paced producer of fresh leads'
    events; latency = hot event's arrival on the hot topic - produce() of its trigger."""
    source = res.topic("lat-events", partitions)
    hot = res.topic("lat-hot", 2)
    dlq = res.topic("lat-dlq", 1)
    warmup = res.topic("lat-warmup", 1)
    config = WorkerConfig(
        bootstrap=res.bootstrap,
        redis_url=res.redis_url,
        app_id=res.group("lat"),
        input_topics=(source,),
        hot_topic=hot,
        dlq_topic=dlq,
        key_prefix=res.prefix("lat"),
        partitions=partitions,
        sweep_interval=5.0,
        extra_env=worker_env or {},
    )
    worker = WorkerProcess(config, log_dir / "latency-worker.log")
    listener = HotListener(res.bootstrap, hot, 2)
    out: dict[str, dict[str, Any]] = {}
    total = 0
    try:
        worker.start()
        worker.wait_ready(120)
        listener.start()
        for plan in plans:
            n = int(plan.rate * plan.seconds)
            events = generate_event_log(
                plan.rate,
                n,
                max(10, n // 20),
                start_ms=FUTURE_MS,
                span_ms=30 * DAY_MS,
                duplicate_fraction=0.0,
                buying_fraction=0.3,
                lead_prefix=f"lat{plan.rate}-",
            )
            records = [encode(e) for e in events]
            batches_before = worker.metrics()
            machine_before = machine_jiffies()
            assert worker.proc is not None
            worker_cpu_before = cpu_seconds(worker.proc.pid)
            sent = paced_produce(
                res.bootstrap,
                source,
                records,
                [e["event_id"] for e in events],
                plan.rate,
                warmup_topic=warmup,
            )
            total += len(records)
            drain = 60 + n / 2000
            bounded(
                f"worker draining {plan.rate}/s",
                drain,
                lambda total=total: processed_count(worker.metrics()) >= total,  # type: ignore[misc]
            )
            # How busy the 2 cores were while this load ran, and the worker's share: on a
            # saturated machine the tail is waiting for a core (docs/benchmarks.md).
            busy = busy_percent(machine_before, machine_jiffies())
            worker_cpu = cpu_seconds(worker.proc.pid) - worker_cpu_before
            time.sleep(1.0)  # last hot records reach the listener
            lat = [(listener.arrivals[i] - sent[i]) * 1000 for i in sent if i in listener.arrivals]
            out[str(plan.rate)] = _percentiles(lat, n, plan)
            out[str(plan.rate)].update(_batch_times(batches_before, worker.metrics()))
            span = max(sent.values()) - min(sent.values()) if sent else 0.0
            out[str(plan.rate)]["offered_rate"] = round(n / span) if span > 0 else None
            out[str(plan.rate)]["machine_busy_pct"] = busy
            out[str(plan.rate)]["worker_cpu_us_per_event"] = round(worker_cpu / n * 1e6, 1)
            print(f"  latency @ {plan.rate}/s: {out[str(plan.rate)]}", flush=True)
    finally:
        listener.stopping.set()
        if listener.is_alive():
            listener.join(10)
        if worker.alive:
            worker.stop(30)
        worker.cleanup()
    return out


def _batch_times(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The worker's own part of the latency, from its ``leadscore_batch_seconds``
    histogram between two scrapes: batches, events per batch, and the bucket bounds
    holding the median and the 99th percentile of a batch's processing time (validate,
    apply, produce and confirm; the consume wait and the commit are outside)."""
    prefix = "leadscore_batch_seconds_bucket{le="
    buckets = sorted(
        (float(k[len(prefix) : -1]), after[k] - before.get(k, 0.0))
        for k in after
        if k.startswith(prefix)
    )
    count = buckets[-1][1] if buckets else 0.0
    consumed = after.get("leadscore_events_consumed_total", 0.0) - before.get(
        "leadscore_events_consumed_total", 0.0
    )

    def bound(q: float) -> float | None:
        for le, cumulative in buckets:
            if count and cumulative >= q * count:
                return round(le * 1000, 1)
        return None

    return {
        "batches": int(count),
        "events_per_batch": round(consumed / count, 1) if count else None,
        "batch_ms_p50_at_most": bound(0.5),
        "batch_ms_p99_at_most": bound(0.99),
    }


def _percentiles(lat: list[float], n: int, plan: LatencyPlan) -> dict[str, Any]:
    if not lat:
        return {"p50": None, "p95": None, "p99": None, "hot_events": 0, "events": n}
    p50, p95, p99 = np.percentile(np.array(lat), [50, 95, 99])
    return {
        "p50": round(float(p50), 1),
        "p95": round(float(p95), 1),
        "p99": round(float(p99), 1),
        "hot_events": len(lat),
        "events": n,
        "seconds": plan.seconds,
    }


# ------------------------------------------------------------------------------ memory


def memory(res: Resources, rules: RuleSet, plans: dict[int, int]) -> dict[str, Any]:
    """Redis bytes per lead at ``events_per_lead -> leads``: every key of a fresh prefix
    (lead states, outboxes, indexes, the name dictionary, the applied marks), MEMORY USAGE
    over SCAN, lead ids of 16 characters, a 10-character key prefix (as long as the
    default ``leadscore:``), events written by ``RedisStore.apply_batch``
    (the worker's store). Measured twice: right after the events (all inside the dedupe
    window), and after one more page view per lead dated past the window, which is what
    a lead costs for good; the difference per forgotten id is the window's cost per
    event."""
    out: dict[str, Any] = {}
    for per_lead, leads in plans.items():
        prefix = res.short_prefix()  # (the default prefix's length: names cost memory)
        items = []
        lead_ids = []
        last_ms = 0
        for lead in range(leads):
            # lead id = 11-character prefix + 5 digits = 16 characters
            lead_prefix = f"m{per_lead:04d}{lead:06d}"
            lead_ids.append(f"{lead_prefix}00000")
            for event in generate_event_log(
                lead + 1,
                per_lead,
                1,
                start_ms=FUTURE_MS,
                span_ms=per_lead * DAY_MS // 10,
                duplicate_fraction=0.0,
                lead_prefix=lead_prefix,
            ):
                key, value = encode(event)
                parsed = parse_event(value, key, require_key=True)
                assert not isinstance(parsed, Rejected), parsed
                items.append((parsed, None))
                last_ms = max(last_ms, parsed.occurred_at_ms)
        inside_entries = asyncio.run(_store(res.redis_url, rules, prefix, items, lead_ids))
        inside = _usage(res.redis_url, prefix)
        later_ms = last_ms + rules.dedupe_window_ms + 1
        later = []
        for lead_id in lead_ids:
            event = event_dict("page_view", lead_id, later_ms, f"later-{lead_id}", url="/")
            key, value = encode(event)
            parsed = parse_event(value, key, require_key=True)
            assert not isinstance(parsed, Rejected), parsed
            later.append((parsed, None))
        past_entries = asyncio.run(_store(res.redis_url, rules, prefix, later, lead_ids))
        past = _usage(res.redis_url, prefix)
        forgotten = max(inside_entries - past_entries, 1)
        out[str(per_lead)] = {
            "leads": leads,
            "keys": past["keys"],
            "bytes_per_lead": round(past["bytes"] / leads, 1),
            "bytes_per_lead_inside_window": round(inside["bytes"] / leads, 1),
            "ids_per_lead_inside_window": round(inside_entries / leads, 1),
            "dedupe_bytes_per_event": round((inside["bytes"] - past["bytes"]) / forgotten, 1),
            "gb_per_1m_leads": round(past["bytes"] / leads * 1e6 / 1e9, 2),
        }
        res.drop_prefix(prefix)
        print(f"  redis @ {per_lead} events/lead: {out[str(per_lead)]}", flush=True)
    return out


async def _store(
    redis_url: str, rules: RuleSet, prefix: str, items: list[Any], lead_ids: list[str]
) -> int:
    """Apply ``items`` as the worker does (outboxes emptied once delivered); returns the
    event ids then remembered in the leads' dedupe windows."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        store = RedisStore(client, rules, prefix)
        for i in range(0, len(items), 2000):
            result = await store.apply_batch(items[i : i + 2000])
            await store.mark_delivered(result.crossings)
        states = await store.get_many(lead_ids)
        return sum(len(s.recent_ids) // 16 for s in states.values())
    finally:
        await client.aclose()


def _usage(redis_url: str, prefix: str) -> dict[str, int]:
    client = redis.Redis.from_url(redis_url)
    try:
        total = keys = 0
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            total += int(client.memory_usage(key, samples=0) or 0)
            keys += 1
        return {"bytes": total, "keys": keys}
    finally:
        client.close()


# ------------------------------------------------------------------------------ replay


def replay_throughput(events: int, leads: int) -> dict[str, Any]:
    """bench/bench_replay.py's log and method: ``leadscore replay`` in process."""
    import bench_replay

    from streams.replay.commands import replay

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        log = Path(tmp) / "events.jsonl"
        t = time.perf_counter()
        bench_replay.generate(log, events, leads, 1)
        generated = time.perf_counter() - t
        out = Path(tmp) / "out"
        argv = [
            str(log),
            "--rules",
            str(REPO_ROOT / "scoring" / "default_rules.yaml"),
            "--out",
            str(out),
            "--no-progress",
        ]
        started = time.perf_counter()
        replay.main(argv, prog_name="leadscore replay", standalone_mode=False)
        seconds = time.perf_counter() - started
        records = orjson.loads((out / "summary.json").read_bytes())["counts"]["records"]
    return {
        "records": records,
        "seconds": round(seconds, 2),
        "rate": records / seconds,
        "generate_seconds": round(generated, 1),
    }
