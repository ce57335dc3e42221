"""The live worker's Faust app, wired by :func:`build_app` from the settings: the agent,
the outbox relay at start, the cooling-sweep timer, ``/healthz`` and ``/metrics``, and
:func:`run_worker`.

Faust only moves bytes: it consumes the input topic(s) in micro-batches and hands them to
:class:`streams.live.processor.Processor`, which does validation, scoring (Redis store) and
publishing. See docs/architecture.md for the delivery guarantees.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from scoring.rules import RuleSet
from scoring.rules_file import load_rules

from ..kafka import ensure_topics
from ..settings import Settings
from .interfaces import RawMessage
from .metrics import Metrics
from .processor import Processor
from .redis_store import RedisStore

log = logging.getLogger("leadscore.worker")

#: /healthz turns 503 when an operation (a batch, a produce, the sweep) has been failing
#: and retrying for this long: the worker is alive but not making progress.
HEALTH_STUCK_AFTER_S = 30.0


class FaustSink:
    """Produces through the Faust app's producer and waits for every ack."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

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


def build_app(settings: Settings, rules: RuleSet | None = None) -> Worker:
    """Build the worker's Faust app (no global singleton, no import-time side effects),
    in the start order of :mod:`streams.live`."""
    rules = rules or load_rules(settings.rules_file)
    store = RedisStore.connect(settings, rules)
    app = _faust_app(settings)
    metrics = Metrics()
    processor = Processor(
        store,
        FaustSink(app),
        hot_topic=settings.hot_topic,
        dlq_topic=settings.dlq_topic,
        metrics=metrics,
        max_event_bytes=settings.max_event_bytes,
        partition_lag=lambda: partition_lag(app, processor),
    )
    # Crossings a crash left in the outbox go out before any new batch is processed.
    outbox_relayed = asyncio.Event()
    _add_agent(app, settings, processor, outbox_relayed)
    _add_tasks(app, settings, processor, outbox_relayed, rules)
    _add_pages(app, store, processor, metrics)
    return Worker(app, processor, store, metrics, rules)


def _faust_app(settings: Settings) -> faust.App:
    # Faust keeps table files here (we have none, but it insists on the folder).
    datadir = Path(tempfile.gettempdir()) / "leadscore-faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
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
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password else None,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        ssl_context=context,
    )


def _add_agent(
    app: faust.App, settings: Settings, processor: Processor, outbox_relayed: asyncio.Event
) -> None:
    """The agent: input topic(s) in micro-batches to :meth:`Processor.process`."""
    events = app.topic(
        *settings.input_topics,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )

    @app.agent(events, concurrency=1, name="leadscore.score")
    async def score(stream: Any) -> None:
        await outbox_relayed.wait()
        # Concurrency 1: faust-streaming can commit past unprocessed messages with more
        # (its issue #606). take_events acks a buffer only after this loop body returns.
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_timeout):
            messages = [
                RawMessage(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                )
                for e in batch
            ]
            task = asyncio.ensure_future(processor.process(messages))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                # Shutting down: finish the batch before Faust acks and commits it.
                log.info("stopping: finishing the current batch of %d", len(messages))
                await task
                raise


def _add_tasks(
    app: faust.App,
    settings: Settings,
    processor: Processor,
    outbox_relayed: asyncio.Event,
    rules: RuleSet,
) -> None:
    """The outbox relay at start (then the agent may consume) and the cooling sweep."""

    @app.task
    async def relay_on_start() -> None:
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


def _add_pages(app: faust.App, store: RedisStore, processor: Processor, metrics: Metrics) -> None:
    """``/healthz`` and ``/metrics``."""

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        try:
            await store.client.ping()
            redis_ok = True
        except Exception as exc:  # reported, not raised: this is a health probe
            log.warning("healthz: Redis ping failed: %s", exc)
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
        _update_lag(app, processor, metrics)
        return web.bytes(metrics.render(), content_type="text/plain; version=0.0.4")


async def partition_lag(app: faust.App, processor: Processor) -> dict[tuple[str, int], int]:
    """Unprocessed messages per assigned input partition (for the sweep's limits).
    Unknown counts as lagging (1): holding a cooling back is safe, emitting it early is
    not."""
    lags: dict[tuple[str, int], int] = {}
    consumer = app.consumer
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        next_offset = processor.next_offsets.get((tp.topic, tp.partition))
        if next_offset is None:
            # Nothing processed from it since start: where this run began reading it.
            # Faust has no public view of the committed offsets it started from.
            next_offset = getattr(consumer, "_committed_offset", {}).get(tp)
        if highwater is None or highwater < 0 or next_offset is None:
            lags[(tp.topic, tp.partition)] = 1
        else:
            lags[(tp.topic, tp.partition)] = max(0, highwater - next_offset)
    return lags


def _update_lag(app: faust.App, processor: Processor, metrics: Metrics) -> None:
    try:
        assignment = app.consumer.assignment()
    except Exception:  # consumer not started yet
        return
    for tp in assignment:
        highwater = app.consumer.highwater(tp)
        position = processor.next_offsets.get((tp.topic, tp.partition))
        if highwater is None or position is None:
            continue
        metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
            max(0, highwater - position)
        )


def run_worker(settings: Settings) -> None:
    """Create topics, then run the worker until SIGTERM/SIGINT (graceful: the current
    batch is finished, produced and committed)."""
    ensure_topics(settings)
    worker = build_app(settings)
    faust_worker = faust.Worker(worker.app, loglevel=settings.log_level)
    faust_worker.execute_from_commandline()
