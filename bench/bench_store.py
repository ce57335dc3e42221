"""The Redis store alone: ``RedisStore.apply_batch`` over generated events, on one Redis or
on the Redis Cluster of ``scripts/services``, without Kafka. For A/B runs of the store's
own code (its scripts, round trips, codec) where the worker's noise would hide them.

    eval "$(scripts/services env)"
    .venv/bin/python bench/bench_store.py                       # one Redis, batches of 2,000
    .venv/bin/python bench/bench_store.py --cluster --batch 200 # the local 3-master cluster

Prints events/s and the process's CPU per event (the store's Python, not Redis). The
events: ``tests.strategies.generate_event_log(7, --events, --leads)``, with Kafka-like
positions on 4 partitions; the first batch warms up (names, landmark) and is not timed.
Every key it wrote is deleted at the end. Interleave runs of the two codes you compare
(a clone at the other commit, run from its root) and quote the medians of per-pair
ratios: the machine's speed moves by tens of percent within the hour.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import redis.asyncio  # noqa: E402

from schemas.validation import Rejected, parse_event  # noqa: E402
from scoring.rules_file import default_rules_path, load_rules  # noqa: E402
from scoring.state import Position  # noqa: E402
from scoring.store import EventItem  # noqa: E402
from streams.live.redis_store import RedisStore  # noqa: E402
from tests.strategies import generate_event_log  # noqa: E402

PARTITIONS = 4


def items(events: int, leads: int) -> list[EventItem]:
    """The generated log as the worker hands it to the store: parsed, with positions."""
    offsets = [0] * PARTITIONS
    out: list[EventItem] = []
    for data in generate_event_log(7, events, leads, duplicate_fraction=0.0):
        lead = str(data["lead_id"])
        event = parse_event(orjson.dumps(data), lead.encode(), require_key=True)
        assert not isinstance(event, Rejected), event
        partition = zlib.crc32(lead.encode()) % PARTITIONS
        out.append((event, Position(f"events:{partition}", offsets[partition])))
        offsets[partition] += 1
    return out


async def run(url: str, cluster: bool, batch: int, log: list[EventItem]) -> tuple[float, float]:
    """(events/s, CPU µs/event) of applying ``log`` in batches of ``batch``."""
    client: redis.asyncio.Redis | redis.asyncio.RedisCluster
    client = (redis.asyncio.RedisCluster if cluster else redis.asyncio.Redis).from_url(url)
    prefix = f"bench-store-{uuid.uuid4().hex[:8]}:"
    try:
        store = RedisStore(client, load_rules(default_rules_path()), prefix)
        await store.apply_batch(log[:batch])  # warm-up: names, landmark, scripts
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(batch, len(log), batch):
            result = await store.apply_batch(log[start : start + batch])
            await store.mark_delivered(result.crossings)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        timed = len(log) - batch
        return timed / wall, cpu / timed * 1e6
    finally:
        await drop(url, cluster, prefix)
        await client.aclose()


async def drop(url: str, cluster: bool, prefix: str) -> None:
    """Delete every key under ``prefix`` (on each master of a cluster)."""
    nodes: list[redis.asyncio.Redis] = []
    if cluster:
        probe = redis.asyncio.RedisCluster.from_url(url)
        await probe.initialize()
        nodes = [redis.asyncio.Redis(host=n.host, port=int(n.port)) for n in probe.get_primaries()]
        await probe.aclose()
    else:
        nodes = [redis.asyncio.Redis.from_url(url)]
    for node in nodes:
        pipe = node.pipeline(transaction=False)
        async for key in node.scan_iter(match=f"{prefix}*", count=1000):
            pipe.unlink(key)
        await pipe.execute()
        await node.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events (default 20,000)")
    parser.add_argument("--leads", type=int, default=2_000, help="leads (default 2,000)")
    parser.add_argument("--batch", type=int, default=2_000, help="events per batch")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the Redis Cluster of $LEADSCORE_TEST_REDIS_CLUSTER (else $LEADSCORE_REDIS_URL)",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a fresh prefix")
    args = parser.parse_args()
    variable = "LEADSCORE_TEST_REDIS_CLUSTER" if args.cluster else "LEADSCORE_REDIS_URL"
    url = os.environ.get(variable)
    if not url:
        sys.exit(f'bench_store: ${variable} is not set: eval "$(scripts/services env)" first')
    log = items(args.events, args.leads)
    layout = "cluster" if args.cluster else "one Redis"
    for _ in range(args.runs):
        rate, cpu = asyncio.run(run(url, args.cluster, args.batch, log))
        print(f"{layout}, batches of {args.batch}: {rate:,.0f} events/s, CPU {cpu:.1f} µs/event")


if __name__ == "__main__":
    main()
