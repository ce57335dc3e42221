"""Kafka with SASL/PLAIN on the project's own broker (``scripts/services`` opens a
SASL_PLAINTEXT listener with one local test user): the worker scores through it, and a
wrong password is reported as refused credentials, never as "unreachable", and never
printed."""

from __future__ import annotations

import os
import time

import pytest
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

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


def _sasl_listener() -> tuple[str, str, str]:
    value = os.environ.get("LEADSCORE_TEST_KAFKA_SASL")
    if not value:
        pytest.fail(
            "LEADSCORE_TEST_KAFKA_SASL is not set: run the tests with scripts/test (or "
            'eval "$(scripts/services env)"), whose broker has a SASL/PLAIN listener'
        )
    bootstrap, user, password = value.split(",")
    return bootstrap, user, password


def _sasl_env(user: str, password: str) -> dict[str, str]:
    return {
        "LEADSCORE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "LEADSCORE_KAFKA_SASL_MECHANISM": "PLAIN",
        "LEADSCORE_KAFKA_SASL_USERNAME": user,
        "LEADSCORE_KAFKA_SASL_PASSWORD": password,
        "LEADSCORE_LOG_LEVEL": "debug",  # the password must not show even at debug level
    }


def test_the_worker_scores_through_a_sasl_listener(stack: WorkerStack, rules: RuleSet) -> None:
    bootstrap, user, password = _sasl_listener()
    events = generate_event_log(41, 1_000, 60, start_ms=FUTURE_MS, lead_prefix="sasl-")
    stack.make_topics(partitions=2)
    config = stack.config(sweep_interval=3600, bootstrap=bootstrap)
    config = config.with_(extra_env={**config.extra_env, **_sasl_env(user, password)})
    worker = stack.start(config)
    stack.produce([encode(e) for e in events])  # through the plaintext listener
    store, crossings = replay(events, rules)
    end = wait_for_replayed_states(stack.redis_url, stack.key_prefix, rules, store, 90)
    assert (end.lost, end.doubled) == (0, 0)
    deadline = time.monotonic() + 30
    while len(stack.read_hot()) < len(crossings) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert len(stack.read_hot()) >= len(crossings) > 0
    assert worker.stop() == 0
    assert password not in worker.log_path.read_text(errors="replace")


def test_a_wrong_sasl_password_is_reported_as_refused_and_never_printed(
    stack: WorkerStack,
) -> None:
    bootstrap, user, _ = _sasl_listener()
    wrong = "not-the-password-4711"
    config = stack.config(bootstrap=bootstrap)
    config = config.with_(extra_env={**config.extra_env, **_sasl_env(user, wrong)})
    started = time.monotonic()
    result = stack.run_cli("worker", config=config, check=False, timeout=60)
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "refused our credentials" in output, output[-2000:]
    assert "unreachable" not in output
    assert wrong not in output
    assert took < 30


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_the_worker_scores_with_scram(stack: WorkerStack, rules: RuleSet, mechanism: str) -> None:
    """SCRAM on the same listener, with a user this test creates (through PLAINTEXT)."""
    bootstrap, _, _ = _sasl_listener()
    user, password = f"scram-{stack.key_prefix[5:13]}", "scram-test-secret-8"
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    kind = (
        ScramMechanism.SCRAM_SHA_256 if mechanism.endswith("256") else ScramMechanism.SCRAM_SHA_512
    )
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(kind, 4096), password.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)
    events = generate_event_log(47, 300, 20, start_ms=FUTURE_MS, lead_prefix="scram-")
    stack.make_topics(partitions=1)
    config = stack.config(sweep_interval=3600, bootstrap=bootstrap)
    env = {**_sasl_env(user, password), "LEADSCORE_KAFKA_SASL_MECHANISM": mechanism}
    worker = stack.start(config.with_(extra_env={**config.extra_env, **env}))
    stack.produce([encode(e) for e in events])
    store, _ = replay(events, rules)
    end = wait_for_replayed_states(stack.redis_url, stack.key_prefix, rules, store, 90)
    assert (end.lost, end.doubled) == (0, 0)
    assert worker.stop() == 0
    assert password not in worker.log_path.read_text(errors="replace")
