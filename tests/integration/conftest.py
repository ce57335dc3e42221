"""Fixtures for the worker's end-to-end tests (on top of tests/conftest.py's services).

* ``stack``: a :class:`~tests.integration.worker_harness.WorkerStack` with names unique to
  the test (topics, consumer group, Redis key prefix); starts ``leadscore worker``
  subprocesses and cleans everything up afterwards (processes, topics, groups, keys). When
  the test fails, the tail of every worker log is printed;
* ``rules``: the default rules (what the worker loads without LEADSCORE_RULES_FILE);
* ``private_redis``: a redis-server of our own on a free port, which a test may stop and
  restart (the shared Redis is never touched);
* ``new_store_client``: makes asyncio clients for the store's tests, once on the standalone
  Redis and once on the Redis Cluster (the test runs twice).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from scoring.rules import RuleSet
from scoring.rules_file import default_rules_path, load_rules
from tests.integration.worker_harness import WorkerStack, close_client, free_port, sync_client


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def rules() -> RuleSet:
    return load_rules(default_rules_path())


#: Makes a new asyncio client on the Redis a store test runs against.
NewClient = Callable[[], Any]


@pytest.fixture(params=["standalone", "cluster"])
def new_store_client(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[NewClient]:
    """``new_store_client()``: a new ``redis.asyncio`` client on the standalone Redis, or on
    the Redis Cluster (``RedisCluster``: the store then keeps its cluster layout). Keys
    under ``key_prefix`` are deleted afterwards."""
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
        yield lambda: redis.asyncio.RedisCluster.from_url(url)
    else:
        url = request.getfixturevalue("redis_url")
        yield lambda: redis.asyncio.Redis.from_url(url)
    delete_keys(url, key_prefix)


def delete_keys(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (on each node of a cluster)."""
    client = sync_client(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        close_client(client)


@pytest.fixture
def stack(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    unique_name: str,
    key_prefix: str,
    create_topic: Any,  # deletes the topics at teardown
    tmp_path: Path,
) -> Iterator[WorkerStack]:
    """On the standalone Redis; ``@pytest.mark.parametrize("stack", ["standalone",
    "cluster"], indirect=True)`` runs a test on the Redis Cluster too. Every key under
    ``key_prefix`` is deleted at teardown."""
    cluster = getattr(request, "param", "standalone") == "cluster"
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    s = WorkerStack(
        bootstrap=kafka_bootstrap,
        redis_url=url,
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
        delete_keys(url, key_prefix)


class PrivateRedis:
    """A redis-server process of this test (AOF with fsync always, so that a restart
    keeps every acknowledged write)."""

    def __init__(self, directory: Path, *, cluster: bool = False) -> None:
        self.directory = directory
        #: a node of a Redis Cluster (its nodes.conf stays in ``directory``)
        self.cluster = cluster
        self.port = free_port()
        self.bus_port = free_port() if cluster else 0
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
                    *(
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-port",  # the bus; by default port + 10000
                            str(self.bus_port),
                        ]
                        if self.cluster
                        else []
                    ),
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


class PrivateRedisCluster:
    """Three :class:`PrivateRedis` masters in one Redis Cluster (no replicas), of this test;
    :meth:`restore` rolls one node back."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [PrivateRedis(directory / f"node-{i}", cluster=True) for i in range(3)]
        self.url = self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok()

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every node says every slot is served."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            client: Any = redis.Redis.from_url(node.url, socket_connect_timeout=1)
            try:
                while client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"private Redis Cluster not ok on {node.port}")
                    time.sleep(0.1)
            finally:
                client.close()

    def node_of(self, key: str) -> int:
        """Which of :attr:`nodes` serves ``key``."""
        client: Any = redis.Redis.from_url(self.url)
        try:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            for start, end, (_, port, *_), *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return [n.port for n in self.nodes].index(int(port))
        finally:
            client.close()
        raise LookupError(key)

    def restore(self, index: int, backup: Path) -> None:
        """Roll node ``index`` back to ``backup`` (:meth:`PrivateRedis.backup`)."""
        self.nodes[index].restore(backup)
        self.wait_ok()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


@pytest.fixture
def private_redis_cluster(tmp_path: Path) -> Iterator[PrivateRedisCluster]:
    """A Redis Cluster of this test, which it may roll back node by node."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (scripts/services needs it too)")
    cluster = PrivateRedisCluster(tmp_path / "private-cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill()


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
