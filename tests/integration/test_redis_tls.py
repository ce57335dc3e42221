"""Redis over TLS: a redis-server of the test's own with only a TLS port (certificates made
here with openssl, a CA of the test's own); the worker and `score` reach it through a
``rediss://`` URL that names the CA (``?ssl_ca_certs=``), as an operator would."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from schemas.times import format_ms
from scoring.rules import RuleSet
from tests.integration.worker_harness import (
    FUTURE_MS,
    WorkerStack,
    encode,
    free_port,
    read_state,
)

pytestmark = pytest.mark.integration


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A TLS-only redis-server; yields its ``rediss://`` URL (with the CA to trust)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates (apt-get install openssl)")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.crt", "-days", "2", "-subj", "/CN=leadscore-test-ca", cwd=tmp_path,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
        "server.csr", "-subj", "/CN=127.0.0.1", cwd=tmp_path,
    )  # fmt: skip
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf",
        cwd=tmp_path,
    )  # fmt: skip
    port = free_port()
    with (tmp_path / "redis.log").open("wb") as log:
        server = subprocess.Popen(
            [
                "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
                "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no",
                "--save", "", "--appendonly", "no",
            ],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.crt'}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if redis.Redis.from_url(url, socket_connect_timeout=1).ping():
                    break
            except redis.RedisError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"TLS redis-server did not start: {(tmp_path / 'redis.log').read_text()}"
                    )
                time.sleep(0.1)
        yield url
    finally:
        server.kill()
        server.wait(10)


def test_the_worker_and_score_use_redis_over_tls(
    stack: WorkerStack, rules: RuleSet, tls_redis: str
) -> None:
    stack.make_topics(partitions=1)
    config = stack.config(redis_url=tls_redis, sweep_interval=3600)
    worker = stack.start(config)
    events = [
        {"event_id": f"tls-{i}", "type": "page_view", "lead_id": "tls-a",
         "occurred_at": format_ms(FUTURE_MS + i * 60_000), "url": "https://example.com/pricing"}
        for i in range(3)
    ]  # fmt: skip
    stack.produce([encode(e) for e in events])
    worker.wait_processed(len(events))
    assert worker.stop() == 0
    state = read_state(tls_redis, stack.key_prefix, rules, "tls-a")
    assert state is not None and state.events_applied == 3
    result = stack.run_cli("score", "tls-a", "--json", config=config)
    assert '"lead_id": "tls-a"' in result.stdout or '"lead_id":"tls-a"' in result.stdout
