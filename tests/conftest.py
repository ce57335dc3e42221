"""Generic service fixtures: a real Kafka broker and a real Redis for integration tests.

Where the services come from (first match wins):

1. ``LEADSCORE_KAFKA_BOOTSTRAP_SERVERS`` and ``LEADSCORE_REDIS_URL`` are set: use them.
   ``scripts/test`` does this for you (it runs ``scripts/services up`` and exports
   ``scripts/services env``).
2. A Docker engine is reachable: start ``apache/kafka`` (KRaft) and ``redis:7`` containers
   with testcontainers, once per session.
3. Otherwise the requesting test FAILS (never skips), naming the command to run.

Only tests that request one of these fixtures need Kafka/Redis; unit tests do not.
Mark such tests with ``@pytest.mark.integration``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

log = logging.getLogger("leadscore.tests.services")

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_ENV = "LEADSCORE_KAFKA_BOOTSTRAP_SERVERS"
REDIS_ENV = "LEADSCORE_REDIS_URL"
#: A node of the 3-master Redis Cluster of `scripts/services` (the store's cluster tests).
REDIS_CLUSTER_ENV = "LEADSCORE_TEST_REDIS_CLUSTER"
# Exported by `scripts/services env`: the pinned version and where the broker log lives.
KAFKA_VERSION_ENV = "LEADSCORE_KAFKA_VERSION"
CACHE_DIR_ENV = "LEADSCORE_CACHE_DIR"
DOCKER_REDIS_IMAGE = "redis:7"

HOW_TO_RUN = (
    "Run the tests with `scripts/test` (starts Kafka + Redis locally, no Docker needed), "
    'or first run `scripts/services up && eval "$(scripts/services env)"`.'
)


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    redis_url: str
    #: "env" (scripts/services, CI, ...) or "testcontainers"
    source: str
    #: Kafka version as reported by the broker log (or the pin), None if unknown
    kafka_version: str | None = None


# ----------------------------------------------------------------------------------------------
# Discovery helpers
# ----------------------------------------------------------------------------------------------


def pinned_kafka_version() -> str:
    """KAFKA_VERSION pinned in scripts/services (the single source of the Kafka version)."""
    text = (REPO_ROOT / "scripts" / "services").read_text()
    match = re.search(r'^KAFKA_VERSION="([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise RuntimeError('KAFKA_VERSION="..." not found in scripts/services')
    return match.group(1)


def kafka_version_from_env() -> str | None:
    """Broker version: "Kafka version: X" from scripts/services' broker.log, else the pin."""
    cache_dir = Path(os.environ.get(CACHE_DIR_ENV) or REPO_ROOT / ".cache")
    broker_log = cache_dir / "kafka" / "broker.log"
    with contextlib.suppress(OSError):
        found = re.findall(r"Kafka version: (\S+)", broker_log.read_text(errors="replace"))
        if found:
            return str(found[-1])
    return os.environ.get(KAFKA_VERSION_ENV)


def check_kafka(bootstrap: str, timeout: float = 15.0) -> None:
    """Raise unless a metadata request to the broker succeeds."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=timeout)
    if not metadata.brokers:
        raise RuntimeError(f"Kafka at {bootstrap} returned metadata without brokers")


def check_redis(url: str, timeout: float = 5.0) -> str:
    """Raise unless Redis answers PING; return its version."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def docker_available() -> bool:
    """True if a Docker engine answers (DOCKER_HOST or the default socket)."""

    def ping() -> bool:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()

    with warnings.catch_warnings():
        # docker-py leaks the socket of a failed connection attempt; collect it here while its
        # ResourceWarning is ignored instead of failing some unrelated test later.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            available = ping()
        except Exception:
            available = False
        gc.collect()
    return available


def start_containers(stack: contextlib.ExitStack) -> Services:
    """Kafka (KRaft, apache/kafka image) and Redis (AOF on) via testcontainers."""
    from testcontainers.community.redis import RedisContainer
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    redis_c = RedisContainer(DOCKER_REDIS_IMAGE).with_command(
        "redis-server --appendonly yes --appendfsync everysec"
    )
    stack.enter_context(redis_c)
    redis_host = redis_c.get_container_host_ip()
    redis_url = f"redis://{redis_host}:{redis_c.get_exposed_port(6379)}/0"

    # The advertised listener must contain the host port Docker maps, which is only known
    # after the container started: the container waits for a start script we copy in then
    # (same approach as testcontainers-java's KafkaContainer for apache/kafka).
    start_script, ready_flag = "/tmp/leadscore_start.sh", "/tmp/leadscore_start.ready"
    kafka_version = pinned_kafka_version()
    kafka_c = (
        DockerContainer(f"apache/kafka:{kafka_version}")
        .with_exposed_ports(9092)
        .with_envs(
            CLUSTER_ID="bGVhZHNjb3JlLWRldi0wMQ",
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://:9092,BROKER://:9093,CONTROLLER://:9094",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=(
                "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT"
            ),
            KAFKA_INTER_BROKER_LISTENER_NAME="BROKER",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9094",
            KAFKA_NUM_PARTITIONS="1",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        )
        .with_command(
            ["sh", "-c", f"while [ ! -f {ready_flag} ]; do sleep 0.1; done; sh {start_script}"]
        )
    )
    stack.enter_context(kafka_c)
    bootstrap = f"{kafka_c.get_container_host_ip()}:{kafka_c.get_exposed_port(9092)}"
    script = (
        f"export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://{bootstrap},BROKER://localhost:9093\n"
        "exec /etc/kafka/docker/run\n"
    )
    kafka_c.copy_into_container(script.encode(), start_script, 0o755)
    kafka_c.copy_into_container(b"", ready_flag)
    LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(120).wait_until_ready(
        kafka_c
    )
    return Services(bootstrap, redis_url, "testcontainers", kafka_version)


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


def _why(exc: BaseException) -> str:
    return f"does not answer: {str(exc).rstrip('.')}"


@pytest.fixture(scope="session")
def services(request: pytest.FixtureRequest) -> Iterator[Services]:
    """Kafka + Redis for this session; fails (does not skip) when none are available."""
    bootstrap, redis_url = os.environ.get(KAFKA_ENV), os.environ.get(REDIS_ENV)
    with contextlib.ExitStack() as stack:
        problem: str | None = None
        if bootstrap and redis_url:
            found = Services(bootstrap, redis_url, "env", kafka_version_from_env())
        elif bootstrap or redis_url:
            problem = f"Only one of {KAFKA_ENV} / {REDIS_ENV} is set; set both."
        elif docker_available():
            try:
                found = start_containers(stack)
            except Exception as exc:
                problem = f"Starting Kafka/Redis with testcontainers failed: {exc!r}."
        else:
            problem = (
                f"No Kafka/Redis for integration tests: {KAFKA_ENV} and {REDIS_ENV} are not set "
                "and no Docker engine is reachable."
            )
        if problem is None:
            try:
                check_kafka(found.kafka_bootstrap)
            except Exception as exc:
                problem = f"Kafka at {found.kafka_bootstrap} ({found.source}): {_why(exc)}."
        if problem is None:
            try:
                redis_version = check_redis(found.redis_url)
            except Exception as exc:
                problem = f"Redis at {found.redis_url} ({found.source}): {_why(exc)}."
        if problem is not None:
            # Outside the except blocks: a plain message, no chained traceback.
            pytest.fail(f"{problem} {HOW_TO_RUN}", pytrace=False)

        line = (
            f"services ({found.source}): Kafka {found.kafka_version or '?'} at "
            f"{found.kafka_bootstrap}, Redis {redis_version} at {found.redis_url}"
        )
        log.info(line)
        # Also on the terminal, whether or not output capturing (-s) is on.
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.ensure_newline()
                reporter.write_line(line)
        yield found


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(services: Services) -> str:
    return services.redis_url


@pytest.fixture(scope="session")
def redis_cluster_url(services: Services) -> str:
    """A node of a Redis Cluster (``scripts/services`` starts one); fails when there is none."""
    url = os.environ.get(REDIS_CLUSTER_ENV)
    if not url:
        pytest.fail(
            f"{REDIS_CLUSTER_ENV} is not set: no Redis Cluster. {HOW_TO_RUN}", pytrace=False
        )
    try:
        client = redis.RedisCluster.from_url(url, socket_connect_timeout=5)
        client.ping()
        client.close()
    except Exception as exc:
        pytest.fail(f"Redis Cluster at {url} {_why(exc)}. {HOW_TO_RUN}", pytrace=False)
    return url


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name unique to this test run, legal as a Kafka topic / group id / Redis key part."""
    test_name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-.")[:80]
    return f"t-{test_name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def key_prefix() -> str:
    """Redis key prefix unique to this test; everything under it is deleted at teardown."""
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture
def redis_client(redis_url: str, key_prefix: str) -> Iterator[redis.Redis]:
    """redis.Redis (decode_responses=True). Use `key_prefix` for every key you write."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        batch: list[str] = []
        for key in client.scan_iter(match=f"{key_prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
        client.close()


@pytest.fixture
def create_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """`create_topic(name, partitions=1, config=None) -> name`: creates the topic, waits until
    it has leaders for all partitions, and deletes it at teardown."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def _create(name: str, partitions: int = 1, config: dict[str, Any] | None = None) -> str:
        new = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        admin.create_topics([new], operation_timeout=30)[name].result(timeout=30)
        created.append(name)
        deadline = time.monotonic() + 30
        while True:
            topic = admin.list_topics(topic=name, timeout=10).topics.get(name)
            ready = (
                topic is not None
                and topic.error is None
                and len(topic.partitions) == partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            )
            if ready:
                return name
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} has no leaders after 30s")
            time.sleep(0.1)

    yield _create

    if created:
        for name, future in admin.delete_topics(created, operation_timeout=30).items():
            try:
                future.result(timeout=30)
            except KafkaException as exc:
                log.warning("could not delete topic %s: %s", name, exc)


# ----------------------------------------------------------------------------------------------
# Report header: which services the run uses (only when configured through the environment;
# nothing here starts or requires a service).
# ----------------------------------------------------------------------------------------------


def pytest_report_header(config: pytest.Config) -> list[str]:
    bootstrap, redis_url = os.environ.get(KAFKA_ENV), os.environ.get(REDIS_ENV)
    if not (bootstrap and redis_url):
        return [
            f"services: {KAFKA_ENV}/{REDIS_ENV} not set; integration tests will use "
            "testcontainers if Docker is reachable, else fail (use scripts/test)"
        ]
    try:
        redis_info = f"Redis {check_redis(redis_url, timeout=2)}"
    except Exception as exc:
        redis_info = f"Redis NOT ANSWERING ({type(exc).__name__})"
    return [
        f"services: Kafka {kafka_version_from_env() or 'version unknown'} at {bootstrap}, "
        f"{redis_info} at {redis_url}"
    ]
