"""Plumbing of ``bench/driver.py``: names and clean-up of a run's Kafka topics, groups and
Redis prefixes; CPU of a subprocess from /proc; running the worker and the peers as
subprocesses with a deadline; the set of hot events on a topic."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis
import redis.asyncio
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from schemas.times import parse_time_ms  # noqa: E402
from streams.live.redis_store import RedisStore  # noqa: E402
from tests.integration.worker_harness import (  # noqa: E402
    WorkerConfig,
    WorkerProcess,
    delete_groups,
    processed_count,
    read_topic,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Events per RedisStore.apply_batch call in the store floor (the worker's default batch).
FLOOR_BATCH = 2000
HotKey = tuple[str, int]


def loopback_only(bootstrap: str, redis_url: str) -> None:
    """All benchmark traffic goes to 127.0.0.1: refuse anything else."""
    hosts = {h.strip().rsplit(":", 1)[0] for h in bootstrap.split(",")}
    hosts.add(urlparse(redis_url).hostname or "")
    if hosts - {"127.0.0.1", "localhost"}:
        raise SystemExit(f"bench: Kafka/Redis must be on 127.0.0.1, not {sorted(hosts)}")


@dataclass
class Resources:
    """Every topic, group, Redis prefix and folder a run creates; all deleted by close()."""

    bootstrap: str
    redis_url: str
    name: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    topics: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap})

    def topic(self, suffix: str, partitions: int) -> str:
        name = f"{self.name}-{suffix}"
        for future in self.admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(30)
        self.topics.append(name)
        return name

    def group(self, suffix: str) -> str:
        self.groups.append(f"{self.name}-{suffix}")
        return self.groups[-1]

    def prefix(self, suffix: str) -> str:
        self.prefixes.append(f"{self.name}:{suffix}:")
        return self.prefixes[-1]

    def short_prefix(self) -> str:
        """A fresh prefix as long as the default ``leadscore:`` (10 characters), for
        measuring Redis memory: key names are part of it."""
        self.prefixes.append(f"{uuid.uuid4().hex[:9]}:")
        return self.prefixes[-1]

    def drop_topics(self, names: Iterable[str]) -> None:
        names = list(names)
        if not names:
            return
        for future in self.admin.delete_topics(names, request_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(30)

    def drop_prefix(self, prefix: str) -> None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i : i + 1000])
        finally:
            client.close()

    def close(self) -> None:
        # Ours, and what peers made on their own (Quix changelog topics carry the group name).
        existing = self.admin.list_topics(timeout=10).topics
        self.drop_topics(t for t in existing if self.name in t)
        delete_groups(self.bootstrap, self.groups)
        for prefix in self.prefixes:
            self.drop_prefix(prefix)
        for group in self.groups:  # the worker's Faust data folder (streams/live/app.py)
            shutil.rmtree(Path(tempfile.gettempdir()) / "leadscore-faust" / group, True)


# ------------------------------------------------------------------------------ processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, all cores, from /proc/stat
    (idle and iowait count as not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    return total - values[3] - values[4], total


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """How busy the machine's cores were between two :func:`machine_jiffies` readings."""
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total > 0 else None


#: The Redis server's pid (driver sets it from INFO): its CPU is sampled with each design's,
#: since a design may move its work into Redis (Lua).
REDIS_PID = [0]


class CpuSampler:
    """(wall time, CPU seconds of the process, of Redis) every poll, to read them at any
    moment."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float, float]] = []

    def sample(self) -> None:
        with contextlib.suppress(OSError, IndexError, ValueError):
            redis_cpu = cpu_seconds(REDIS_PID[0]) if REDIS_PID[0] else 0.0
            self.samples.append((time.time(), cpu_seconds(self.pid), redis_cpu))

    def at(self, moment: float) -> tuple[float, float]:
        """(process, Redis) CPU seconds at the last sample at or before ``moment``."""
        best = self.samples[0][1:] if self.samples else (0.0, 0.0)
        for wall, cpu, redis_cpu in self.samples:
            if wall > moment:
                break
            best = (cpu, redis_cpu)
        return best

    def between(self, start: float, end: float) -> tuple[float, float]:
        (cpu0, redis0), (cpu1, redis1) = self.at(start), self.at(end)
        return cpu1 - cpu0, redis1 - redis0


@dataclass
class DesignRun:
    """One timed run of one design on the bench events."""

    design: str
    ok: bool
    events: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    redis_cpu_seconds: float = 0.0
    startup: float = 0.0
    error: str = ""
    hot: set[HotKey] = field(default_factory=set)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.ok and self.seconds > 0 else 0.0


def run_worker(
    config: WorkerConfig, expected: int, log: Path, timeout: float, poll: float = 0.025
) -> DesignRun:
    """``leadscore worker`` as a subprocess: from the first event consumed (its /metrics) to
    every message applied with its crossings acknowledged (``processed`` counts finished
    batches, which end after the acked produce)."""
    worker = WorkerProcess(config, log)
    started = time.time()
    worker.start()
    sampler = CpuSampler(worker.pid)
    first = done = 0.0
    metrics: dict[str, float] = {}
    try:
        while True:
            sampler.sample()
            if not worker.alive:
                return DesignRun("worker", False, error=f"worker died\n{worker.log_tail(20)}")
            if time.time() - started > timeout:
                return DesignRun("worker", False, error=f"timeout after {timeout:.0f}s")
            try:
                metrics = worker.metrics()
            except (OSError, urllib.error.URLError, AssertionError):
                time.sleep(poll)
                continue
            if not first and metrics.get("leadscore_events_consumed_total", 0) > 0:
                first = time.time()
            processed = processed_count(metrics)
            if processed >= expected:
                done = time.time()
                sampler.sample()
                break
            time.sleep(_next_poll(poll, first, processed, expected))
    finally:
        with contextlib.suppress(Exception):
            worker.stop(timeout=30)
        worker.cleanup()
    return DesignRun(
        "worker",
        True,
        events=expected,
        seconds=done - first,
        cpu_seconds=sampler.between(first, done)[0],
        redis_cpu_seconds=sampler.between(first, done)[1],
        startup=first - started,
        extra={
            "batches": metrics.get("leadscore_batch_seconds_count", 0),
            "hot_emitted": metrics.get("leadscore_hot_emitted_total", 0),
        },
    )


def _next_poll(poll: float, first: float, processed: float, expected: int) -> float:
    """Seconds until the worker's next /metrics poll: ``poll`` until the first event and
    near the end (the timing's resolution), in between a quarter of what the rest should
    take at the rate so far, at most 0.25 s. (Rendering /metrics costs the worker ~0.6 ms;
    40 renders a second took ~4 % of its time, a cost the peers, which write a status
    file, do not pay.)"""
    if not first or processed <= 0:
        return poll
    rate = processed / max(time.time() - first, 1e-3)
    return min(0.25, max(poll, (expected - processed) / rate / 4))


def run_peer(
    design: str,
    command: list[str],
    status: Path,
    log: Path,
    timeout: float,
    env: dict[str, str] | None = None,
) -> DesignRun:
    """A peer script (see bench/peer_common.py) as a subprocess; killed after ``timeout``."""
    started = time.time()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    sampler = CpuSampler(proc.pid)
    try:
        while not status.exists():
            sampler.sample()
            if proc.poll() is not None:
                return DesignRun(design, False, error=f"exited {proc.returncode}: {tail(log)}")
            if time.time() - started > timeout:
                return DesignRun(design, False, error=f"killed after {timeout:.0f}s timeout")
            time.sleep(0.05)
        sampler.sample()
        data = json.loads(status.read_text())
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    first, done = float(data["first"]), float(data["done"])
    return DesignRun(
        design,
        True,
        events=int(data["processed"]),
        seconds=done - first,
        cpu_seconds=sampler.between(first, done)[0],
        redis_cpu_seconds=sampler.between(first, done)[1],
        startup=first - started,
        extra={"crossings": data.get("crossings", 0)},
    )


def tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------ hot events


def hot_set(bootstrap: str, topic: str) -> set[HotKey]:
    """(lead_id, occurred_at ms) of every ``lead_became_hot`` record on ``topic``."""
    out: set[HotKey] = set()
    for record in read_topic(bootstrap, topic, timeout=60):
        if record.value is None:
            continue
        data = json.loads(record.value)
        if data.get("type") == "lead_became_hot":
            out.add((str(data["lead_id"]), parse_time_ms(data["occurred_at"])))
    return out


def hot_file_set(path: Path) -> set[HotKey]:
    """The same set from replay's hot.jsonl."""
    out: set[HotKey] = set()
    for line in path.read_text().splitlines():
        data = json.loads(line)
        if data.get("type") == "lead_became_hot":
            out.add((str(data["lead_id"]), parse_time_ms(data["occurred_at"])))
    return out


def compare_hot(got: set[HotKey], want: set[HotKey]) -> dict[str, Any]:
    return {
        "equal": got == want,
        "expected": len(want),
        "got": len(got),
        "missing": len(want - got),
        "extra": len(got - want),
    }


def bounded(what: str, seconds: float, check: Callable[[], bool], step: float = 0.1) -> bool:
    """Poll ``check`` until it holds or ``seconds`` pass; False (and a note) on time-out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    print(f"  ({what}: gave up after {seconds:.0f}s)", flush=True)
    return False


async def redis_store_floor(redis_url: str, rules: Any, prefix: str, items: list[Any]) -> float:
    """Seconds for ``RedisStore.apply_batch`` alone over ``items`` (parsed events with
    positions), in batches of 2,000: the Redis-store floor of both benchmarks."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        store = RedisStore(client, rules, prefix)
        started = time.perf_counter()
        for i in range(0, len(items), FLOOR_BATCH):
            await store.apply_batch(items[i : i + FLOOR_BATCH])
        return time.perf_counter() - started
    finally:
        await client.aclose()
