"""Kafka over TLS with a client certificate (mTLS) on the project's own broker
(``scripts/services`` opens an SSL listener that requires one, with certificates made by
openssl for local tests): the worker scores through it; without its certificate the
broker does not let it in, and the worker stops at start with a message."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scoring.rules import RuleSet
from tests.integration.worker_harness import (
    FUTURE_MS,
    WorkerStack,
    encode,
    replay,
    wait_for_replayed_states,
)
from tests.strategies import generate_event_log

pytestmark = pytest.mark.integration


def _ssl_listener() -> tuple[str, Path]:
    value = os.environ.get("LEADSCORE_TEST_KAFKA_SSL")
    if not value:
        pytest.fail(
            "LEADSCORE_TEST_KAFKA_SSL is not set: run the tests with scripts/test (or "
            'eval "$(scripts/services env)"), whose broker has an SSL listener'
        )
    bootstrap, directory = value.split(",", 1)
    return bootstrap, Path(directory)


def test_the_worker_scores_through_an_mtls_listener(stack: WorkerStack, rules: RuleSet) -> None:
    bootstrap, tls = _ssl_listener()
    events = generate_event_log(43, 1_000, 60, start_ms=FUTURE_MS, lead_prefix="mtls-")
    stack.make_topics(partitions=2)
    config = stack.config(sweep_interval=3600, bootstrap=bootstrap)
    env = {
        "LEADSCORE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "LEADSCORE_KAFKA_SSL_CAFILE": str(tls / "ca.crt"),
        "LEADSCORE_KAFKA_SSL_CERTFILE": str(tls / "client.crt"),
        "LEADSCORE_KAFKA_SSL_KEYFILE": str(tls / "client.key"),
    }
    worker = stack.start(config.with_(extra_env={**config.extra_env, **env}))
    stack.produce([encode(e) for e in events])  # through the plaintext listener
    store, _ = replay(events, rules)
    end = wait_for_replayed_states(stack.redis_url, stack.key_prefix, rules, store, 90)
    assert (end.lost, end.doubled) == (0, 0)
    assert worker.stop() == 0


def test_without_a_client_certificate_the_worker_stops_at_start(stack: WorkerStack) -> None:
    bootstrap, tls = _ssl_listener()
    config = stack.config(bootstrap=bootstrap)
    env = {
        "LEADSCORE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "LEADSCORE_KAFKA_SSL_CAFILE": str(tls / "ca.crt"),
    }
    config = config.with_(extra_env={**config.extra_env, **env})
    started = time.monotonic()
    result = stack.run_cli("worker", config=config, check=False, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "refused our credentials" in output and "bad certificate" in output, output[-2000:]
    assert "Traceback" not in output
    assert time.monotonic() - started < 30  # not retried as if Kafka were down
