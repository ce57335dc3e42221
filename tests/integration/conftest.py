"""Fixtures for the worker's end-to-end tests (on top of tests/conftest.py's services).

* ``stack``: a :class:`~tests.integration.worker_harness.WorkerStack` with names unique to
  the test (topics, consumer group, Redis key prefix); starts ``leadscore worker``
  subprocesses and cleans everything up afterwards (processes, topics, groups, keys). When
  the test fails, the tail of every worker log is printed;
* ``rules``: the default rules (what the worker loads without LEADSCORE_RULES_FILE);
* ``private_redis``: a redis-server of our own on a free port, which a test may stop and
  restart (the shared Redis is never touched).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from scoring.rules import RuleSet
from scoring.rules_file import default_rules_path, load_rules
from tests.integration.worker_harness import WorkerStack, free_port


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def rules() -> RuleSet:
    return load_rules(default_rules_path())


@pytest.fixture
def stack(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    redis_url: str,
    unique_name: str,
    key_prefix: str,
    redis_client: redis.Redis,  # deletes every key under key_prefix at teardown
    create_topic: Any,  # deletes the topics at teardown
    tmp_path: Path,
) -> Iterator[WorkerStack]:
    s = WorkerStack(
        bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        name=unique_name,
        key_prefix=key_prefix,
        create_topic=create_topic,
        log_dir=tmp_path,
    )
    try:
        yield s
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed and s.workers:
            print(f"\nworker logs (in {tmp_path}):\n{s.log_tails(80)}")
        s.close()


class PrivateRedis:
    """A redis-server process of this test (AOF with fsync always, so that a restart
    keeps every acknowledged write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"private redis-server on {self.port} did not start")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def backup(self) -> Path:
        """A copy of the append-only files as they are now (every acknowledged write:
        fsync always). Take it while nothing writes."""
        target = self.directory.parent / f"{self.directory.name}-backup-{time.monotonic_ns()}"
        shutil.copytree(self.directory / "appendonlydir", target)
        return target

    def restore(self, backup: Path) -> None:
        """Kill the server, put ``backup`` back as its data, start it: a Redis rollback
        (what a restore from backup, a failover to a lagging replica or an AOF tail lost
        on power failure does)."""
        self.kill()
        shutil.rmtree(self.directory / "appendonlydir")
        shutil.copytree(backup, self.directory / "appendonlydir")
        self.start()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (scripts/services needs it too)")
    server = PrivateRedis(tmp_path / "private-redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()
