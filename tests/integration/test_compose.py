"""Static checks of docker-compose.yml (no Docker, no services needed).

The compose file runs the whole stack: ``kafka``, ``redis`` and the ``worker`` built from the
Dockerfile. These tests pin what the rest of the project relies on:

* the three services exist, each with a healthcheck (the worker's probes ``/healthz``);
* Kafka and Redis are published on the same host ports as ``scripts/services`` (19092,
  16379), so the CLI and the tests work against either;
* the worker is configured only through ``LEADSCORE_*`` variables that
  :class:`streams.settings.Settings` really has (a typo would be silently ignored: the
  settings use ``extra="ignore"``), and it reaches Kafka and Redis by service name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from streams.settings import ENV_PREFIX, Settings, env_name

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
KAFKA_HOST_PORT = 19092
REDIS_HOST_PORT = 16379
SETTINGS_ENV = {env_name(name) for name in Settings.model_fields}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    if not COMPOSE_FILE.is_file():
        pytest.fail(f"{COMPOSE_FILE.name} is missing (expected at {COMPOSE_FILE})", pytrace=False)
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), (
        "docker-compose.yml must have a services: mapping"
    )
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (list or mapping form) as a dict."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return dict(pairs)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def published_ports(service: dict[str, Any]) -> set[int]:
    """Host ports a service publishes (short ``[IP:]HOST:CONTAINER[/proto]`` or long form)."""
    ports: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                ports.add(int(str(entry["published"]).split("-")[0]))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) >= 2 and parts[-2].isdigit():
            ports.add(int(parts[-2]))
    return ports


def unquote_default(value: str) -> str:
    """``${VAR:-default}`` -> ``default`` (what compose uses when VAR is unset)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def test_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "redis", "worker"} <= set(services), sorted(services)


def test_kafka_and_redis_ports_are_published(services: dict[str, dict[str, Any]]) -> None:
    assert KAFKA_HOST_PORT in published_ports(services["kafka"])
    assert REDIS_HOST_PORT in published_ports(services["redis"])


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name in ("kafka", "redis", "worker"):
        check = services[name].get("healthcheck")
        assert isinstance(check, dict) and check.get("test"), f"{name}: no healthcheck test"
        assert not check.get("disable"), f"{name}: healthcheck disabled"
    test = services["worker"]["healthcheck"]["test"]
    text = " ".join(test) if isinstance(test, list) else str(test)
    assert "/healthz" in text, f"the worker's healthcheck should probe /healthz: {text}"


def test_worker_env_names_are_settings_fields(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["worker"])
    assert env, "the worker service has no environment"
    unknown = sorted(name for name in env if name not in SETTINGS_ENV)
    not_ours = [name for name in unknown if not name.startswith(ENV_PREFIX)]
    assert not not_ours, f"worker env vars without the {ENV_PREFIX} prefix: {not_ours}"
    assert not unknown, (
        f"worker env vars that are no Settings field (silently ignored): {unknown}; "
        f"known: {sorted(SETTINGS_ENV)}"
    )


def test_worker_reaches_kafka_and_redis_by_service_name(
    services: dict[str, dict[str, Any]],
) -> None:
    env = {k: unquote_default(v) for k, v in environment(services["worker"]).items()}
    bootstrap = env.get(env_name("kafka_bootstrap_servers"))
    assert bootstrap, "LEADSCORE_KAFKA_BOOTSTRAP_SERVERS is not set for the worker"
    hosts = {server.strip().rsplit(":", 1)[0] for server in bootstrap.split(",")}
    assert hosts <= set(services) and "kafka" in hosts, bootstrap
    url = env.get(env_name("redis_url"))
    assert url, "LEADSCORE_REDIS_URL is not set for the worker"
    assert urlparse(url).scheme in ("redis", "rediss"), url
    assert urlparse(url).hostname == "redis", url


def test_kafka_advertises_the_service_name_and_the_host_port(
    services: dict[str, dict[str, Any]],
) -> None:
    """The worker (in the compose network) and host clients (port 19092) both need a
    listener Kafka advertises to them."""
    env = {k: unquote_default(v) for k, v in environment(services["kafka"]).items()}
    advertised = env.get("KAFKA_ADVERTISED_LISTENERS") or env.get("KAFKA_CFG_ADVERTISED_LISTENERS")
    if advertised is None:
        pytest.fail("kafka: no KAFKA_ADVERTISED_LISTENERS; host and worker cannot both connect")
    worker_bootstrap = environment(services["worker"]).get(env_name("kafka_bootstrap_servers"), "")
    internal = unquote_default(worker_bootstrap).split(",")[0].strip()
    listeners = [entry.split("://", 1)[-1] for entry in advertised.split(",")]
    assert internal in listeners, f"worker bootstrap {internal} not advertised: {advertised}"
    assert any(
        lst.endswith(f":{KAFKA_HOST_PORT}") and lst.split(":")[0] in ("localhost", "127.0.0.1")
        for lst in listeners
    ), f"no listener advertised as localhost:{KAFKA_HOST_PORT}: {advertised}"
