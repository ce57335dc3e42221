"""Harness for end-to-end tests of the live worker: the real ``leadscore worker`` process
against the real Kafka broker and Redis (no mocks, no fakes).

* :class:`WorkerConfig`: the ``LEADSCORE_*`` environment of one worker (unique consumer
  group, topics and Redis key prefix per test);
* :class:`WorkerProcess`: start the worker as a subprocess with a log file, wait for
  ``/healthz``, read ``/metrics``, stop it with SIGTERM or kill it with SIGKILL;
* Kafka helpers (confluent-kafka): :func:`produce` (acknowledged, returns where each
  record landed), :func:`read_topic` (everything up to the current end, no consumer
  group), :func:`committed_total` / :func:`end_offsets` (progress of a group);
* Redis helpers: :func:`read_states` etc. read lead states with the key layout of
  :class:`streams.live.redis_store.RedisStore`;
* the reference: :func:`replay` applies the same log with :class:`scoring.store.MemoryStore`,
  and :func:`record_payload` / :func:`crossing_payload` put live records and replayed
  crossings in the same comparable form (every field but ``emitted_at``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from schemas.events import EVENT_ADAPTER, LeadEvent
from schemas.times import datetime_to_ms
from scoring.crossings import Crossing
from scoring.rules import RuleSet
from scoring.state import LeadState
from scoring.store import MemoryStore
from streams.live.redis_keys import KeySpace
from streams.live.redis_store import RedisStore

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The console script of this virtualenv (the same interpreter that runs the tests).
LEADSCORE = str(Path(sys.executable).with_name("leadscore"))

#: 2030-01-01T00:00:00Z. Event times from here on lie in the future of the wall clock, so
#: nothing they make hot is ever due for the live cooling sweep during a test: live output
#: can be compared exactly with a replay.
FUTURE_MS = 1_893_456_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    return datetime_to_ms(datetime.now(UTC))


#: Where :func:`free_port` looks first: from here up to the kernel's ephemeral range.
PRIVATE_PORTS_FROM = 20_000
#: Ports :func:`free_port` handed out in this process (each at most once).
_handed_out: set[int] = set()
#: Its own generator: tests that seed the global one keep their sequence.
_port_choice = random.Random()


def free_port() -> int:
    """A local TCP port free now, for a server a test starts later. Taken below the
    kernel's ephemeral range (``net.ipv4.ip_local_port_range``) when there is room: a
    port from that range can be taken, between this check and the server's bind, as the
    local end of any outgoing connection (a private Redis Cluster node once failed to
    start that way: "bind: Address already in use" on its bus port). Never the same port
    twice in a session."""
    low = _ephemeral_ports_from()
    if low > PRIVATE_PORTS_FROM + 1_000:
        for _ in range(500):
            port = _port_choice.randrange(PRIVATE_PORTS_FROM, low)
            if port not in _handed_out and _can_bind(port):
                _handed_out.add(port)
                return port
    for _ in range(100):  # no room below the range (or all taken): any free port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free local TCP port")


def _ephemeral_ports_from() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def closed_port() -> int:
    """A local TCP port nothing listens on (bound then released)."""
    return free_port()


# ------------------------------------------------------------------------------ the worker


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, as ``LEADSCORE_*`` variables (see streams/settings.py)."""

    bootstrap: str
    redis_url: str
    app_id: str
    input_topics: tuple[str, ...]
    hot_topic: str
    dlq_topic: str
    key_prefix: str
    partitions: int = 2
    sweep_interval: float = 1.0
    #: The control topic (None: ``<app_id>-control``, so that tests never share one).
    control_topic: str | None = None
    #: The identity topic (identity merges; None: ``<app_id>-identity``).
    identity_topic: str | None = None
    #: Further LEADSCORE_* (or other) variables, e.g. {"LEADSCORE_MAX_EVENT_BYTES": "1024"}.
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def with_(self, **changes: Any) -> WorkerConfig:
        return replace(self, **changes)

    def env(self, web_port: int) -> dict[str, str]:
        # Start from the test process' environment without any LEADSCORE_* variable, so
        # that only what this config says reaches the worker.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
        env.update(
            {
                "LEADSCORE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "LEADSCORE_REDIS_URL": self.redis_url,
                "LEADSCORE_REDIS_CLUSTER": str(redis_is_cluster(self.redis_url)).lower(),
                "LEADSCORE_APP_ID": self.app_id,
                "LEADSCORE_INPUT_TOPICS": ",".join(self.input_topics),
                "LEADSCORE_HOT_TOPIC": self.hot_topic,
                "LEADSCORE_DLQ_TOPIC": self.dlq_topic,
                "LEADSCORE_CONTROL_TOPIC": self.control_topic or f"{self.app_id}-control",
                "LEADSCORE_IDENTITY_TOPIC": self.identity_topic or f"{self.app_id}-identity",
                "LEADSCORE_REDIS_KEY_PREFIX": self.key_prefix,
                "LEADSCORE_WEB_PORT": str(web_port),
                "LEADSCORE_SWEEP_INTERVAL": str(self.sweep_interval),
                "LEADSCORE_TOPIC_PARTITIONS": str(self.partitions),
                # The tests and benches date events in the future (FUTURE_MS, 2030) on
                # purpose; the clock-skew policy has tests of its own that set it.
                "LEADSCORE_MAX_CLOCK_SKEW": "off",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def cli_env(self) -> dict[str, str]:
        """Environment for the other CLI commands (produce, tail, top, score)."""
        return self.env(web_port=0)


class WorkerError(AssertionError):
    """The worker did not do what the harness waited for; the message has its log tail."""


class WorkerProcess:
    """One ``leadscore worker`` subprocess."""

    def __init__(self, config: WorkerConfig, log_path: Path, web_port: int | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.web_port = web_port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._cwd = Path(tempfile.mkdtemp(prefix="leadscore-worker-"))  # no stray .env

    # -- lifecycle
    def start(self) -> WorkerProcess:
        assert self.proc is None, "already started"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {datetime.now(UTC).isoformat()} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [LEADSCORE, "worker"],
                env=self.config.env(self.web_port),
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful: the current batch is finished) and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise WorkerError(
                f"worker did not stop within {timeout}s of SIGTERM\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL: a crash at an arbitrary point."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def cleanup(self) -> None:
        if self.alive:
            self.kill()
        shutil.rmtree(self._cwd, ignore_errors=True)

    # -- observing
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_text().splitlines()[-lines:]
        return f"--- last {len(text)} lines of {self.log_path} ---\n" + "\n".join(text)

    def _fail(self, what: str) -> WorkerError:
        code = None if self.proc is None else self.proc.poll()
        state = "running" if code is None else f"exited with {code}"
        return WorkerError(f"{what} (worker pid {self.pid}, {state})\n{self.log_tail()}")

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_http(self, path: str = "/healthz", timeout: float = 60.0) -> tuple[int, bytes]:
        """Wait until the web server answers ``path`` (any status); returns status, body."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise self._fail(f"worker exited before serving {path}")
            try:
                return self.http_get(path)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"{path} did not answer within {timeout}s")
            time.sleep(0.1)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.wait_http("/healthz", max(0.1, deadline - time.monotonic()))
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise self._fail(f"/healthz answered {status} {body!r}, not 200")
            time.sleep(0.2)

    def wait_log(self, pattern: str, timeout: float = 60.0, count: int = 1) -> str:
        """Wait until the log has ``count`` lines matching the regex; returns the last."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.log_text().splitlines() if regex.search(line)]
            if len(found) >= count:
                return found[count - 1]
            if not self.alive:
                raise self._fail(f"worker exited before logging {pattern!r}")
            if time.monotonic() > deadline:
                raise self._fail(f"no {count} log line(s) matching {pattern!r} in {timeout}s")
            time.sleep(0.1)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Healthy, partitions assigned and the start-up outbox relay done."""
        self.wait_healthy(timeout)
        self.wait_log(r"leadscore worker started", timeout)

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{"name{label=value,...}": value}`` (``name`` alone without labels)."""
        status, body = self.http_get("/metrics")
        if status != 200:
            raise self._fail(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    def wait_processed(self, count: int, timeout: float = 120.0) -> dict[str, float]:
        """Wait until ``count`` messages went through finished batches (applied, skipped as
        duplicates or dead-lettered) and no batch is in flight (every consumer-lag gauge 0:
        positions only move when a batch is done). Returns the metrics then."""
        deadline = time.monotonic() + timeout
        metrics: dict[str, float] = {}
        while True:
            if not self.alive:
                raise self._fail(f"worker exited while waiting for {count} processed")
            with contextlib.suppress(OSError, urllib.error.URLError):
                metrics = self.metrics()
                lags = [v for k, v in metrics.items() if k.startswith("leadscore_consumer_lag{")]
                if processed_count(metrics) >= count and lags and not any(lags):
                    return metrics
            if time.monotonic() > deadline:
                raise self._fail(
                    f"{processed_count(metrics)} of {count} processed after {timeout}s: {metrics}"
                )
            time.sleep(0.1)

    def wait_metric(
        self,
        name: str,
        predicate: Callable[[float], bool],
        timeout: float = 60.0,
        what: str = "",
    ) -> float:
        deadline = time.monotonic() + timeout
        value = None
        while True:
            if not self.alive:
                raise self._fail(f"worker exited while waiting for {name} {what}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                value = self.metrics().get(name, 0.0)
                if predicate(value):
                    return value
            if time.monotonic() > deadline:
                raise self._fail(f"{name} is {value}, still not {what} after {timeout}s")
            time.sleep(0.1)


def processed_count(metrics: Mapping[str, float]) -> float:
    """Messages whose batch finished: applied + duplicates + dead letters."""
    return (
        metrics.get("leadscore_events_applied_total", 0.0)
        + metrics.get("leadscore_events_duplicate_total", 0.0)
        + sum(v for k, v in metrics.items() if k.startswith("leadscore_events_dead_lettered_total"))
    )


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


# ------------------------------------------------------------------------------ Kafka

Record = tuple[bytes | None, bytes | None]


def produce(
    bootstrap: str, topic: str, records: Iterable[Record], **config: Any
) -> list[tuple[int, int]]:
    """Produce (key, value) records, in order, and wait for every ack (idempotent producer:
    a retry can neither duplicate nor reorder). Returns (partition, offset) per record."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "compression.type": "lz4",
            **config,
        }
    )
    where: list[tuple[int, int] | None] = []
    errors: list[str] = []

    def delivered(index: int) -> Callable[[KafkaError | None, Any], None]:
        def callback(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                where[index] = (msg.partition(), msg.offset())

        return callback

    for i, (key, value) in enumerate(records):
        where.append(None)
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered(i))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(120)
    assert remaining == 0, f"{remaining} record(s) to {topic} not acknowledged"
    assert not errors, f"{len(errors)} record(s) to {topic} failed: {errors[:3]}"
    assert all(w is not None for w in where)
    return [w for w in where if w is not None]


@dataclass(frozen=True)
class ReadRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def json(self) -> dict[str, Any]:
        assert self.value is not None
        data: dict[str, Any] = json.loads(self.value)
        return data


def _consumer(bootstrap: str, **config: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "leadscore-tests-reader",  # never joined nor committed: assign() only
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            **config,
        }
    )


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = _consumer(bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        assert meta.error is None, meta.error
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[ReadRecord]:
    """Every record of ``topic`` from the beginning up to its current end (watermarks taken
    first), in partition then offset order. No consumer group is joined."""
    ends = end_offsets(bootstrap, topic)
    consumer = _consumer(bootstrap)
    out: list[ReadRecord] = []
    try:
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: partitions {sorted(todo)} not read to the end")
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error():
                    raise RuntimeError(f"{topic}: {msg.error()}")
                p, o = msg.partition(), msg.offset()
                assert p is not None and o is not None
                if o < ends[p]:
                    out.append(ReadRecord(p, o, msg.key(), msg.value()))
                if o >= ends[p] - 1:
                    todo.discard(p)
    finally:
        consumer.close()
    out.sort(key=lambda r: (r.partition, r.offset))
    return out


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    """Sum over the topic's partitions of the group's committed offsets (0 when none)."""
    ends = end_offsets(bootstrap, topic)
    consumer = _consumer(bootstrap, **{"group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        consumer.close()


def commit_offsets(bootstrap: str, group: str, topic: str, offsets: Mapping[int, int]) -> None:
    """Commit offsets for a group that has no active member (e.g. rewind it to 0)."""
    consumer = _consumer(bootstrap, **{"group.id": group})
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def delete_groups(bootstrap: str, groups: Sequence[str]) -> None:
    if not groups:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_consumer_groups(list(groups), request_timeout=10).values():
        with contextlib.suppress(Exception):
            future.result(timeout=10)


# ------------------------------------------------------------------------------ Redis


@functools.cache
def redis_is_cluster(redis_url: str) -> bool:
    """The Redis at ``redis_url`` is a Redis Cluster node (False when it does not answer)."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.RedisError:
        return False
    finally:
        client.close()


def sync_client(redis_url: str, **kwargs: Any) -> Any:
    """A ``redis.Redis``, or a ``redis.RedisCluster`` for a cluster node's URL."""
    if redis_is_cluster(redis_url):
        return redis.RedisCluster.from_url(redis_url, **kwargs)
    return redis.Redis.from_url(redis_url, **kwargs)


def close_client(client: Any) -> None:
    """Close a :func:`sync_client`, and on a cluster every node's connection pool too
    (``RedisCluster.close`` leaves the pools of the nodes it found open)."""
    client.close()
    for node in client.get_nodes() if hasattr(client, "get_nodes") else ():
        if node.redis_connection is not None:
            node.redis_connection.connection_pool.disconnect()


def async_client(redis_url: str) -> Any:
    """:func:`sync_client`, asyncio (what the store takes)."""
    if redis_is_cluster(redis_url):
        return redis.asyncio.RedisCluster.from_url(redis_url)
    return redis.asyncio.Redis.from_url(redis_url)


def key_space(redis_url: str, prefix: str) -> KeySpace:
    """The store's key names under ``prefix`` on the Redis at ``redis_url``."""
    return KeySpace(prefix, cluster=redis_is_cluster(redis_url))


async def _read_states(
    redis_url: str, prefix: str, rules: RuleSet, lead_ids: Sequence[str]
) -> dict[str, LeadState]:
    client = async_client(redis_url)
    try:
        store = RedisStore(client, rules, prefix)
        states: dict[str, LeadState] = {}
        for start in range(0, len(lead_ids), 1000):
            states.update(await store.get_many(lead_ids[start : start + 1000]))
        return states
    finally:
        await client.aclose()


def read_states(
    redis_url: str, prefix: str, rules: RuleSet, lead_ids: Iterable[str]
) -> dict[str, LeadState]:
    """The stored state of each lead that has one (RedisStore key layout)."""
    return asyncio.run(_read_states(redis_url, prefix, rules, sorted(set(lead_ids))))


@dataclass(frozen=True)
class Converged:
    """Redis against a replay, once the worker(s) caught up (or the wait ran out)."""

    states: dict[str, LeadState]
    #: events the replay applied that Redis has not, and the other way round
    lost: int
    doubled: int


def wait_for_replayed_states(
    redis_url: str, prefix: str, rules: RuleSet, store: MemoryStore, timeout: float = 120.0
) -> Converged:
    """Poll Redis until every lead of the replay ``store`` has as many events applied as
    in it (or ``timeout`` ran out), then count what is lost or doubled per lead."""
    want = {lead: s.events_applied for lead, s in store.states.items()}
    deadline = time.monotonic() + timeout
    while True:
        states = read_states(redis_url, prefix, rules, store.states)
        got = {lead: s.events_applied for lead, s in states.items()}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return Converged(
        states,
        sum(max(0, want[lead] - got.get(lead, 0)) for lead in want),
        sum(max(0, got.get(lead, 0) - want[lead]) for lead in want),
    )


def read_state(redis_url: str, prefix: str, rules: RuleSet, lead_id: str) -> LeadState | None:
    async def get() -> LeadState | None:
        client = async_client(redis_url)
        try:
            return await RedisStore(client, rules, prefix).get(lead_id)
        finally:
            await client.aclose()

    return asyncio.run(get())


def stored_lead_ids(redis_url: str, prefix: str) -> set[str]:
    """Lead ids with a state under ``prefix``, from the state keys' hash tags (the test
    lead ids have no braces, so the tag is the id)."""
    client = sync_client(redis_url)
    try:
        head = f"{prefix}lead:{{".encode()
        return {
            k[len(head) : -1].decode()
            for k in client.scan_iter(match=f"{prefix}lead:*", count=1000)
            if k.endswith(b"}")  # the state; not :outbox
        }
    finally:
        client.close()


def cool_due_entries(redis_url: str, prefix: str) -> dict[str, float]:
    """Every entry of the store's cooling index (all its buckets): lead -> due ms."""
    keys = key_space(redis_url, prefix)
    client = sync_client(redis_url, decode_responses=True)
    try:
        out: dict[str, float] = {}
        for bucket in client.zrange(keys.cool_due_min, 0, -1):
            entries = client.zrange(f"{keys.cool_due_base}{bucket}", 0, -1, withscores=True)
            out.update({m: float(s) for m, s in entries})
        return out
    finally:
        close_client(client)


def outbox_size(redis_url: str, prefix: str) -> int:
    """Undelivered crossings left in every lead's outbox."""
    client = sync_client(redis_url)
    try:
        return sum(int(client.hlen(k)) for k in client.scan_iter(match=f"{prefix}lead:*:outbox"))
    finally:
        client.close()


# ------------------------------------------------------------------------------ reference


def to_iso(ms: int) -> str:
    from datetime import timedelta

    return (
        (_EPOCH + timedelta(milliseconds=ms))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def encode(event: Mapping[str, Any]) -> Record:
    """(key, value) of a JSON-able event dict as a producer sends it."""
    return str(event["lead_id"]).encode(), json.dumps(event, separators=(",", ":")).encode()


def parse(value: bytes | Mapping[str, Any]) -> LeadEvent:
    if isinstance(value, bytes | str):
        return EVENT_ADAPTER.validate_json(value)
    return EVENT_ADAPTER.validate_json(json.dumps(value))


def replay(
    events: Iterable[LeadEvent | Mapping[str, Any] | bytes | None],
    rules: RuleSet,
    until_ms: int | None = None,
) -> tuple[MemoryStore, list[Crossing]]:
    """The reference: every event (arrival order; each lead's order is what matters) applied
    with a MemoryStore, then the coolings due by ``until_ms`` (the live sweep's wall clock).
    Events are parsed when given as JSON bytes or dicts."""
    parsed: list[LeadEvent] = []
    for e in events:
        assert e is not None
        parsed.append(parse(e) if isinstance(e, bytes | Mapping) else e)
    store = MemoryStore(rules)
    crossings = list(store.apply_batch_sync([(e, None) for e in parsed]).crossings)
    if until_ms is not None:
        crossings.extend(store.cool_due_sync(until_ms).crossings)
    return store, crossings


def crossing_payload(crossing: Crossing) -> dict[str, Any]:
    """A replayed crossing as the JSON the worker publishes, without ``emitted_at``."""
    data: dict[str, Any] = json.loads(crossing.to_record(_EPOCH).model_dump_json())
    del data["emitted_at"]
    return data


def record_payload(record: ReadRecord | bytes) -> dict[str, Any]:
    """A published hot-topic record as JSON, without ``emitted_at``."""
    raw = record.value if isinstance(record, ReadRecord) else record
    assert raw is not None
    data: dict[str, Any] = json.loads(raw)
    del data["emitted_at"]
    return data


def by_lead(payloads: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in payloads:
        out.setdefault(p["lead_id"], []).append(p)
    return out


# ------------------------------------------------------------------------------ a test's stack


class WorkerStack:
    """Per-test names (topics, group, Redis prefix), worker processes and their clean-up.
    Built by the ``stack`` fixture (tests/integration/conftest.py)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        redis_url: str,
        name: str,
        key_prefix: str,
        create_topic: Callable[..., str],
        log_dir: Path,
    ) -> None:
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.name = name
        self.key_prefix = key_prefix
        self._create_topic = create_topic
        self.log_dir = log_dir
        self.workers: list[WorkerProcess] = []
        self.groups: set[str] = set()
        self.input_topic = f"{name}-events"
        self.hot_topic = f"{name}-hot"
        self.dlq_topic = f"{name}-dlq"
        self.control_topic = f"{name}-control"
        self.identity_topic = f"{name}-identity"
        self._topics_made = False

    def make_topics(self, partitions: int = 2) -> None:
        """Create the input, control and identity (``partitions`` each), hot and DLQ topics
        (deleted at teardown)."""
        if not self._topics_made:
            self._create_topic(self.input_topic, partitions)
            self._create_topic(self.control_topic, partitions)
            self._create_topic(self.identity_topic, partitions)
            self._create_topic(self.hot_topic, 2)
            self._create_topic(self.dlq_topic, 1)
            self._topics_made = True
        self.partitions = partitions

    def config(self, **changes: Any) -> WorkerConfig:
        base = WorkerConfig(
            bootstrap=self.bootstrap,
            redis_url=self.redis_url,
            app_id=f"{self.name}-group",
            input_topics=(self.input_topic,),
            hot_topic=self.hot_topic,
            dlq_topic=self.dlq_topic,
            key_prefix=self.key_prefix,
            partitions=getattr(self, "partitions", 2),
            control_topic=self.control_topic,
            identity_topic=self.identity_topic,
        )
        return base.with_(**changes)

    def start(
        self, config: WorkerConfig | None = None, *, ready: bool = True, log_name: str = "worker"
    ) -> WorkerProcess:
        config = config or self.config()
        self.groups.add(config.app_id)
        worker = WorkerProcess(config, self.log_dir / f"{log_name}.log")
        self.workers.append(worker)
        worker.start()
        if ready:
            worker.wait_ready()
        return worker

    def produce(self, records: Iterable[Record], topic: str | None = None) -> list[tuple[int, int]]:
        return produce(self.bootstrap, topic or self.input_topic, records)

    def read_hot(self) -> list[ReadRecord]:
        return read_topic(self.bootstrap, self.hot_topic)

    def read_dlq(self) -> list[ReadRecord]:
        return read_topic(self.bootstrap, self.dlq_topic)

    def run_cli(
        self,
        *args: str,
        config: WorkerConfig | None = None,
        timeout: float = 60.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        config = config or self.config()
        result = subprocess.run(
            [LEADSCORE, *args],
            env=config.cli_env(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"leadscore {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def close(self) -> None:
        for worker in self.workers:
            worker.cleanup()
        delete_groups(self.bootstrap, sorted(self.groups))
        for group in self.groups:
            shutil.rmtree(
                Path(tempfile.gettempdir()) / "leadscore-faust" / group, ignore_errors=True
            )

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(w.log_tail(lines) for w in self.workers)
