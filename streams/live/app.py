"""The live worker's Faust app, wired by :func:`build_app` from the settings: the input
consumer task, the outbox relay at start, the cooling-sweep timer, ``/healthz`` and
``/metrics``, and :func:`run_worker`.

Faust runs the process (lifecycle, signals, timers, web pages, its producer);
:class:`streams.live.consumer.BatchConsumer` consumes the input topic(s) in batches and
hands them to :class:`streams.live.processor.Processor`, which does validation, scoring
(Redis store) and publishing. See docs/architecture.md for the delivery guarantees.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiokafka.errors
import faust
from faust.app.base import BootStrategy

from schemas.formats import live_decoder
from scoring.rules import RuleSet
from scoring.rules_file import load_rules

from ..kafka import DEFAULT_MAX_MESSAGE_BYTES, ensure_topics, topic_max_message_bytes
from ..redaction import LeadIdsInLogs
from ..settings import Settings
from .consumer import BatchConsumer
from .identity_stage import IdentityStage
from .metrics import Metrics
from .processor import Processor
from .redis_store import RedisStore

log = logging.getLogger("leadscore.worker")

#: aiokafka errors that a record always gets again (see :meth:`FaustSink.is_permanent`).
PERMANENT_AIOKAFKA_ERRORS: tuple[type[Exception], ...] = (
    aiokafka.errors.MessageSizeTooLargeError,
    aiokafka.errors.RecordTooLargeError,
    aiokafka.errors.RecordListTooLargeError,
    aiokafka.errors.CorruptRecordException,
    aiokafka.errors.InvalidMessageError,
)

#: /healthz turns 503 when an operation (a batch, a produce, the sweep) has been failing
#: and retrying for this long: the worker is alive but not making progress.
HEALTH_STUCK_AFTER_S = 30.0
#: The worker's young-generation garbage-collector threshold (Python's default: 700
#: allocations). A batch of 2,000 events allocates tens of thousands of short-lived
#: objects: with 700 the collector ran ~900 times in a 3.4 s run of
#: ``bench/bench_worker.py --events 60000`` (~115 ms), with 10,000 about 50 times (~57 ms).
GC_GEN0_THRESHOLD = 10_000
#: /healthz gives Redis this long to answer a PING (so it answers within a second).
HEALTH_PING_TIMEOUT_S = 0.5


class FaustSink:
    """Produces through the Faust app's producer and waits for every ack."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    def is_permanent(self, error: Exception) -> bool:
        """The broker refused the records themselves (aiokafka's errors for that)."""
        return isinstance(error, PERMANENT_AIOKAFKA_ERRORS)

    async def send_all(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        producer = self.app.producer
        futures = [
            await producer.send(topic, key, value, partition=None, timestamp=None, headers=None)
            for key, value in records
        ]
        await asyncio.gather(*futures)


@dataclass
class Worker:
    """What :func:`build_app` returns: the Faust app and the parts tests may inspect."""

    app: faust.App
    processor: Processor
    store: RedisStore
    metrics: Metrics
    rules: RuleSet


def build_app(
    settings: Settings,
    rules: RuleSet | None = None,
    dlq_max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Worker:
    """Build the worker's Faust app (no global singleton, no import-time side effects),
    in the start order of :mod:`streams.live`."""
    rules = rules or load_rules(settings.rules_file)
    store = RedisStore.connect(settings, rules)
    app = _faust_app(settings)
    metrics = Metrics()
    consumer = BatchConsumer(settings, on_assigned=store.note_applied)
    processor = Processor(
        store,
        FaustSink(app),
        hot_topic=settings.hot_topic,
        dlq_topic=settings.dlq_topic,
        metrics=metrics,
        max_event_bytes=settings.max_event_bytes,
        max_clock_skew_ms=settings.max_clock_skew,
        dlq_max_message_bytes=dlq_max_message_bytes,
        partition_lag=lambda: _partition_lag(consumer, processor),
        on_rollback=consumer.rewind_to,
        decode=live_decoder(settings.input_format),
        mentioned=rules.by_event.__contains__,
        control_topic=settings.control_topic,
        lead_ids=LeadIdsInLogs(settings.log_lead_ids),
        identity=(
            (settings.identity_topic_name, IdentityStage(store.aliases))
            if settings.merges_identities
            else None
        ),
    )
    # Crossings a crash left in the outbox go out before any new batch is processed.
    outbox_relayed = asyncio.Event()
    _add_tasks(app, settings, processor, outbox_relayed, rules)
    _add_consumer(app, settings, consumer, processor, outbox_relayed)
    _add_pages(app, store, processor, consumer, metrics)
    return Worker(app, processor, store, metrics, rules)


class _NoFaustConsumer(BootStrategy):
    """Faust runs the worker (lifecycle, signals, timers, web pages, its producer) but does
    not consume: :class:`BatchConsumer` does, in batches, without Faust's per-message path
    (and without joining the group with Faust's assignor)."""

    enable_kafka_consumer = False


class _WorkerApp(faust.App):
    """The worker's Faust app: no Faust consumer, and hooks that run first when it stops
    (before Faust stops its producer and web server)."""

    BootStrategy = _NoFaustConsumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_stop: list[Callable[[], Awaitable[None]]] = []

    async def on_stop(self) -> None:
        for hook in self.before_stop:
            await hook()
        await super().on_stop()


def _faust_app(settings: Settings) -> _WorkerApp:
    # Faust keeps table files here (we have none, but it insists on the folder).
    datadir = Path(tempfile.gettempdir()) / "leadscore-faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    return _WorkerApp(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=faust_broker_credentials(settings),
        autodiscover=False,
        store="memory://",
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # topics are created by streams.kafka.ensure_topics
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        producer_acks=-1,
        web_enabled=True,
        # Only our /healthz and /metrics: Faust's own pages (/router/, /table/, graph,
        # stats) would show internals to whoever reaches the port.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
    )


def faust_broker_credentials(settings: Settings) -> Any:
    """Faust (aiokafka) credentials for the configured security protocol, or None."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
        if settings.kafka_ssl_certfile:  # a client certificate (mTLS)
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password else None,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        ssl_context=context,
    )


def _add_tasks(
    app: faust.App,
    settings: Settings,
    processor: Processor,
    outbox_relayed: asyncio.Event,
    rules: RuleSet,
) -> None:
    """The outbox relay at start (then the consumer may start) and the cooling sweep."""

    @app.task
    async def relay_on_start() -> None:
        await processor.prepare()
        relayed = await processor.relay_outbox()
        outbox_relayed.set()
        log.info(
            "leadscore worker started (rules %s, %d rules); outbox relayed: %d",
            rules.version,
            len(rules.rules),
            relayed,
        )

    @app.timer(settings.sweep_interval)
    async def cooling_sweep() -> None:
        await processor.sweep()


def _add_consumer(
    app: _WorkerApp,
    settings: Settings,
    consumer: BatchConsumer,
    processor: Processor,
    outbox_relayed: asyncio.Event,
) -> None:
    """The input: batches from :class:`BatchConsumer` to :meth:`Processor.process`, once
    the outbox relay has run; on shutdown it stops (batch finished, committed, group left)
    before Faust stops the producer."""

    @app.task
    async def consume() -> None:
        await consumer.run(processor.process, ready=outbox_relayed)

    async def stop_consuming() -> None:
        await consumer.stop(timeout=settings.stop_timeout)

    app.before_stop.append(stop_consuming)


def _add_pages(
    app: faust.App,
    store: RedisStore,
    processor: Processor,
    consumer: BatchConsumer,
    metrics: Metrics,
) -> None:
    """``/healthz`` and ``/metrics``."""

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        try:
            # A Redis that hangs (paused, swapping) must not hang the probe.
            await asyncio.wait_for(store.client.ping(), HEALTH_PING_TIMEOUT_S)
            redis_ok = True
        except Exception as exc:  # reported, not raised: this is a health probe
            log.warning("healthz: Redis ping failed: %s", repr(exc))
            redis_ok = False
        now = time.monotonic()
        stuck = {
            what: {"failing_for_s": round(now - since, 1), "last_error": error}
            for what, (since, error) in processor.failing.items()
            if now - since >= HEALTH_STUCK_AFTER_S
        }
        healthy = redis_ok and not stuck
        body = {"status": "ok" if healthy else "degraded", "redis": redis_ok, "stuck": stuck}
        return web.json(body, status=200 if healthy else 503)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        for (topic, partition), lag in consumer.lag(processor.next_offsets).items():
            metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)
        return web.bytes(metrics.render(), content_type="text/plain; version=0.0.4")


async def _partition_lag(
    consumer: BatchConsumer, processor: Processor
) -> dict[tuple[str, int], int] | None:
    """Unprocessed messages per assigned input partition (the sweep's limits); None when
    the assignment cannot be trusted now (see :meth:`BatchConsumer.owns_its_assignment`)."""
    if not consumer.owns_its_assignment():
        return None
    return consumer.lag(processor.next_offsets)


def run_worker(settings: Settings) -> None:
    """Create topics, then run the worker until SIGTERM/SIGINT (graceful: the current
    batch is finished, produced and committed)."""
    ensure_topics(settings)
    worker = build_app(
        settings, dlq_max_message_bytes=topic_max_message_bytes(settings, settings.dlq_topic)
    )
    faust_worker = faust.Worker(worker.app, loglevel=settings.log_level)
    freeze_startup_heap()
    faust_worker.execute_from_commandline()


def freeze_startup_heap() -> None:
    """Move everything allocated so far (modules, the rules, the app: about 100k objects
    that live as long as the process) out of the garbage collector's sight
    (:func:`gc.freeze`), and collect the young generation less often
    (:data:`GC_GEN0_THRESHOLD`). Without it, each full collection re-scans that heap: ~45
    ms, about every half second under full load, which showed as the worker's latency tail
    and ~10 % of its CPU (docs/benchmarks.md, 7 December 2026). Cycles are still
    collected. Called by :func:`run_worker` only: tests that build the app in-process keep
    Python's defaults."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
