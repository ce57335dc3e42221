"""Kafka plumbing shared by the worker, the commands and replay (confluent-kafka): client
configuration from the settings, topic creation, and an acknowledged batch producer."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from .settings import Settings

log = logging.getLogger("leadscore.kafka")


def confluent_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka configuration (bootstrap servers and security) for confluent-kafka."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        # PLAIN unless told otherwise, as for the worker (librdkafka would pick GSSAPI).
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        config["sasl.username"] = settings.kafka_sasl_username or ""
        password = settings.kafka_sasl_password
        config["sasl.password"] = password.get_secret_value() if password else ""
    if settings.kafka_ssl_cafile:
        config["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    if settings.kafka_ssl_certfile:
        config["ssl.certificate.location"] = str(settings.kafka_ssl_certfile)
    if settings.kafka_ssl_keyfile:
        config["ssl.key.location"] = str(settings.kafka_ssl_keyfile)
    config.update(extra)
    return config


class KafkaUnavailableError(RuntimeError):
    """Kafka could not be used at start: unreachable for too long, or it refused us."""


class KafkaCredentialsError(KafkaUnavailableError):
    """Kafka refused our credentials (SASL): retrying cannot help until they are fixed."""


#: librdkafka's errors for credentials it was refused.
_AUTH_ERRORS = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})


def ensure_topics(
    settings: Settings, *, timeout: float = 120.0, only: Sequence[str] | None = None
) -> list[str]:
    """Create the input, control, identity (identity merges on), hot-lead and dead-letter
    topics (or ``only`` these) if missing (retrying while the broker is unreachable, up to
    ``timeout`` seconds). The control and identity topics get the first input topic's
    partition count, so that a lead's events have the same partition number in each.
    Returns the topics created.
    Raises :class:`KafkaCredentialsError` at once when the broker refuses the SASL
    credentials, :class:`KafkaUnavailableError` when it stays unreachable."""
    wanted = (
        list(only)
        if only is not None
        else [
            *settings.input_topics,
            settings.control_topic,
            *([settings.identity_topic_name] if settings.merges_identities else []),
            settings.hot_topic,
            settings.dlq_topic,
        ]
    )
    refused: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        # Refused credentials, or a TLS handshake that failed on a certificate (ours
        # missing or not trusted, the broker's not trusted): retrying cannot pass.
        tls = error.code() == KafkaError._SSL or (
            error.code() == KafkaError._TRANSPORT and "SSL routines" in error.str()
        )
        if error.code() in _AUTH_ERRORS or tls:
            refused.append(error)

    admin = AdminClient(
        confluent_config(
            settings, error_cb=on_error, logger=logging.getLogger("leadscore.kafka.admin")
        )
    )
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        try:
            listed = admin.list_topics(timeout=10).topics
            existing = set(listed)
            break
        except KafkaException as exc:
            admin.poll(0.5)  # serve the error callbacks
            if refused:
                raise KafkaCredentialsError(
                    f"Kafka at {settings.kafka_bootstrap_servers} refused our credentials "
                    f"({refused[-1].str()}): check LEADSCORE_KAFKA_SASL_USERNAME, "
                    "LEADSCORE_KAFKA_SASL_PASSWORD and LEADSCORE_KAFKA_SASL_MECHANISM, or for "
                    "TLS LEADSCORE_KAFKA_SSL_CAFILE, LEADSCORE_KAFKA_SSL_CERTFILE and "
                    "LEADSCORE_KAFKA_SSL_KEYFILE"
                ) from None
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"Kafka at {settings.kafka_bootstrap_servers} unreachable for {timeout:.0f}s: "
                    f"{exc}. Is it running? (scripts/services up)"
                ) from exc
            log.warning(
                "Kafka at %s not reachable yet (%s); retrying in %.1fs",
                settings.kafka_bootstrap_servers,
                exc,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 10)
    missing = [t for t in dict.fromkeys(wanted) if t not in existing]
    if not missing:
        return []
    counts = dict.fromkeys(missing, settings.topic_partitions)
    first_input = listed.get(settings.input_topics[0])
    inputs = len(first_input.partitions) if first_input is not None else 0
    for aligned in (settings.control_topic, settings.identity_topic_name):
        if aligned in counts and inputs:
            counts[aligned] = inputs
    control = listed.get(settings.control_topic)
    if control is not None and inputs and len(control.partitions) != inputs:
        log.warning(
            "the control topic %s has %d partitions, the input topic %s %d: a lead's "
            "control events may then be read by another worker than its tracking events "
            "(harmless, but the cooling sweep of such a lead waits for its own worker)",
            settings.control_topic,
            len(control.partitions),
            settings.input_topics[0],
            inputs,
        )
    futures = admin.create_topics(
        [NewTopic(t, n, settings.topic_replication_factor) for t, n in counts.items()]
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=30)
            created.append(topic)
            log.info("created topic %s (%d partitions)", topic, counts[topic])
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


#: Kafka's default ``max.message.bytes`` of a topic.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588

#: Produce errors that the same record will always get: the broker refuses the record
#: itself (too large, invalid), not the connection or the configuration.
PERMANENT_PRODUCE_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
    }
)


class ProduceError(RuntimeError):
    """Records the broker did not acknowledge; ``permanent`` when every one of them was
    refused for what it is (see :data:`PERMANENT_PRODUCE_ERRORS`)."""

    def __init__(self, topic: str, errors: Sequence[KafkaError]) -> None:
        super().__init__(f"{len(errors)} record(s) to {topic} failed: {errors[0]}")
        self.permanent = all(e.code() in PERMANENT_PRODUCE_ERRORS for e in errors)


def topic_max_message_bytes(settings: Settings, topic: str) -> int:
    """The topic's ``max.message.bytes`` (the broker's default when it cannot be read)."""
    admin = AdminClient(confluent_config(settings))
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        configs = admin.describe_configs([resource])[resource].result(timeout=30)
        return int(configs["max.message.bytes"].value)
    except (KafkaException, KeyError, ValueError) as exc:
        log.warning(
            "cannot read max.message.bytes of %s (%s); assuming Kafka's default", topic, exc
        )
        return DEFAULT_MAX_MESSAGE_BYTES


class AckedProducer:
    """A confluent-kafka producer (idempotent, acks=all) whose :meth:`send_all` returns
    only when every record is acknowledged, raising if any failed."""

    def __init__(self, settings: Settings, **extra: Any) -> None:
        self._producer = Producer(
            confluent_config(
                settings,
                **{
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "compression.type": "lz4",
                    "partitioner": settings.kafka_partitioner,
                    **extra,
                },
            )
        )

    def send_all(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        for key, value in records:
            while True:
                try:
                    self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                    break
                except BufferError:
                    self._producer.poll(0.1)  # local queue full: let deliveries drain
            self._producer.poll(0)
        remaining = self._producer.flush(60)
        if remaining:
            raise RuntimeError(f"{remaining} record(s) to {topic} not acknowledged within 60s")
        if errors:
            raise ProduceError(topic, errors)
