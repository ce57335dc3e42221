"""Runtime settings: one pydantic-settings model (:class:`Settings`), built by each command
when it starts (:func:`load_settings`) and passed down; nothing else reads the environment.

Every field is read from an environment variable ``LEADSCORE_<FIELD>`` (or a ``.env`` file
in the working directory). Bad values fail at start with a message naming the variable.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.formats import InputFormat
from schemas.times import parse_duration_ms
from schemas.validation import DEFAULT_MAX_CLOCK_SKEW_MS
from scoring.rules_file import default_rules_path

from .redaction import LeadIdLogging, redact_in_logs

ENV_PREFIX = "LEADSCORE_"

#: LEADSCORE_* variables that belong to the service scripts (scripts/services), not to the
#: settings.
_NOT_SETTINGS = frozenset(
    {
        "LEADSCORE_KAFKA_VERSION",
        "LEADSCORE_CACHE_DIR",
        "LEADSCORE_KAFKA_PORT",
        "LEADSCORE_KAFKA_CONTROLLER_PORT",
        "LEADSCORE_REDIS_PORT",
        "LEADSCORE_STOP_SERVICES",
        "LEADSCORE_KAFKA_START_TIMEOUT",
        "LEADSCORE_KAFKA_SASL_PORT",
        "LEADSCORE_TEST_KAFKA_SASL",
        "LEADSCORE_KAFKA_SSL_PORT",
        "LEADSCORE_TEST_KAFKA_SSL",
        "LEADSCORE_REDIS_CLUSTER_PORT",
        "LEADSCORE_TEST_REDIS_CLUSTER",
    }
)

log = logging.getLogger("leadscore.settings")

#: Fields whose values are never printed (they are, or may contain, passwords).
_SECRET_FIELDS = frozenset({"redis_url", "redis_password", "kafka_sasl_password"})


class SettingsError(ValueError):
    """Invalid configuration; the message names the environment variable(s)."""


class Settings(BaseSettings):
    """leadscore configuration (env prefix ``LEADSCORE_``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # Kafka
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Comma-separated host:port list of Kafka brokers."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for SSL connections.")
    kafka_ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM) for brokers that require one (mTLS)."
    )
    kafka_ssl_keyfile: Path | None = Field(None, description="Its private key (PEM).")

    broker_session_timeout: float = Field(
        10.0,
        ge=6,
        le=300,
        description="Seconds before the group gives a silent (crashed) worker's partitions "
        "to another; Faust's default of 60 s idles them for a minute after a crash.",
    )
    broker_heartbeat_interval: float = Field(3.0, gt=0, le=60)

    # Topics
    input_topics: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["lead-events"],
        description="Input topic(s), comma-separated (key = lead_id).",
    )
    kafka_partitioner: Literal["consistent_random", "murmur2_random"] = Field(
        "consistent_random",
        description="How `leadscore produce|adjust|reset|erase` pick a key's partition: "
        "librdkafka's default, or murmur2_random to match Java clients (Kafka Connect, "
        "Kafka Streams): use what your tracking producers use.",
    )
    control_topic: str = Field(
        "lead-control",
        description="Control events (score_adjusted, score_reset, lead_erased: `leadscore "
        "adjust|reset|erase`), "
        "read only from here so that ACLs can keep tracking producers from sending them.",
    )
    identity_topic: str | None = Field(
        None,
        description="With identity merges on: the worker's internal topic of events "
        "re-keyed to their canonical lead (default: <app_id>-identity).",
    )
    hot_topic: str = Field("lead-hot", description="Output: lead_became_hot / lead_cooled.")
    dlq_topic: str = Field("lead-events-dlq", description="Dead letters (rejected input).")
    topic_partitions: int = Field(6, ge=1, le=10_000, description="Partitions of new topics.")
    topic_replication_factor: int = Field(1, ge=1, le=32)

    # Redis
    redis_url: str = Field("redis://127.0.0.1:16379/0", description="redis:// or rediss:// URL.")
    redis_password: SecretStr | None = Field(None, description="Overrides a URL password.")
    redis_key_prefix: str = Field("leadscore:", description="Prefix of every Redis key.")
    redis_cluster: bool = Field(
        False,
        description="redis_url names a node of a Redis Cluster (7.0+): the store finds the "
        "other nodes from it.",
    )
    #: ``90d``, ``12h``, ... (or seconds) in the environment; held in milliseconds.
    idle_lead_retention: int | None = Field(
        None, description="Delete leads that are not hot after this long unwritten (off)."
    )
    unidentified_lead_retention: int | None = Field(
        None,
        description="Delete leads that are not hot and have no profile (never identified: "
        "one-time anonymous visitors) after this long unwritten (off: as other leads).",
    )

    # Scoring
    rules_file: Path = Field(default_factory=default_rules_path)
    input_format: InputFormat = Field(
        "leadscore",
        description="What the input topic carries: leadscore events, or Segment-spec "
        "messages (segment: analytics.js, RudderStack, ...).",
    )

    identity_merges: bool | None = Field(
        None,
        description="Merge identities (an anonymous visitor's history joins the known lead "
        "it identifies as; Segment identify with both ids, alias): events are re-keyed "
        "through the identity topic. Default: on for input_format segment, else off.",
    )

    # Worker
    app_id: str = Field("leadscore", description="Faust app id = Kafka consumer group.")
    batch_size: int = Field(2000, ge=1, le=100_000, description="Max events per micro-batch.")
    batch_timeout: float = Field(
        0.1,
        gt=0,
        le=60,
        description="Max seconds to wait for the first message of a batch when idle "
        "(then the batch waits at most batch_linger to fill).",
    )
    batch_linger: float = Field(
        0.002,
        ge=0,
        le=1,
        description="When a batch is not full, wait up to this many seconds for more "
        "messages to join it (0: never, a lone event goes at once). At low load: fewer, "
        "larger batches and less CPU per event, for up to this much more latency.",
    )
    sweep_interval: float = Field(5.0, gt=0, le=3600, description="Seconds between cooling sweeps.")
    max_clock_skew: int | None = Field(
        DEFAULT_MAX_CLOCK_SKEW_MS,
        description="An event dated more than this after its Kafka record is dead-lettered "
        "(1d; off: no limit). Milliseconds once read; 12h, 1d... in the environment.",
    )
    stop_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a stop waits for the batch in flight (e.g. through a Redis "
        "outage) before abandoning it uncommitted.",
    )
    max_event_bytes: int = Field(64 * 1024, ge=256, le=10 * 1024 * 1024)
    web_host: str = Field("127.0.0.1", description="Address of /healthz and /metrics.")
    web_port: int = Field(6066, ge=0, le=65_535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_lead_ids: LeadIdLogging = Field(
        "plain",
        description="How log lines name leads: plain, or hashed (h: + 12 hex digits of "
        "SHA-256; errors and dead-letter reasons cut to the field they name).",
    )

    @field_validator("input_topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("input_topics")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one input topic is required")
        return value

    @field_validator("control_topic")
    @classmethod
    def _not_an_input_topic(cls, value: str, info: ValidationInfo) -> str:
        if value in info.data.get("input_topics", ()):
            raise ValueError(
                f"{value!r} is also an input topic: control events need a topic of their own"
            )
        return value

    @property
    def merges_identities(self) -> bool:
        """Whether the worker runs the identity stage (``identity_merges``, or its default)."""
        if self.identity_merges is None:
            return self.input_format == "segment"
        return self.identity_merges

    @property
    def identity_topic_name(self) -> str:
        """The identity topic (``identity_topic``, default ``<app_id>-identity``)."""
        return self.identity_topic or f"{self.app_id}-identity"

    @field_validator("identity_topic")
    @classmethod
    def _identity_topic_of_its_own(cls, value: str | None, info: ValidationInfo) -> str | None:
        others = (*info.data.get("input_topics", ()), info.data.get("control_topic"))
        if value is not None and value in others:
            raise ValueError(f"{value!r} is also an input or the control topic")
        return value

    @field_validator(
        "idle_lead_retention", "unidentified_lead_retention", "max_clock_skew", mode="before"
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        """From the environment, ``90d``, ``12h``, ... (or seconds) -> ms; empty or ``off``:
        none. A number given in code (a default, an override) is already ms."""
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "off")):
            return None
        if isinstance(value, str):
            return parse_duration_ms(value)
        return value

    @field_validator("redis_key_prefix")
    @classmethod
    def _no_braces(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("must not contain { or } (they are Redis Cluster hash tags)")
        return value

    @field_validator("rules_file")
    @classmethod
    def _rules_exist(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"rules file {value} does not exist")
        return value


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Build the settings (environment, .env, then ``overrides``); raise
    :class:`SettingsError` naming each offending environment variable."""
    unknown = sorted(
        name
        for name in os.environ
        if name.startswith(ENV_PREFIX)
        and name[len(ENV_PREFIX) :].lower() not in Settings.model_fields
        and name not in _NOT_SETTINGS
    )
    if unknown:
        log.warning(
            "ignoring unknown variable(s) %s (a typo?); settings are: %s",
            ", ".join(unknown),
            ", ".join(env_name(f) for f in Settings.model_fields),
        )
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            got = "" if field in _SECRET_FIELDS else f" (got {error.get('input')!r})"
            lines.append(f"{env_name(field)}: {error['msg']}{got}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    redact_in_logs(secrets_of(settings))
    return settings


def secrets_of(settings: Settings) -> list[str]:
    """The secret values in ``settings``: passwords, also one inside the Redis URL."""
    found = [urlsplit(settings.redis_url).password or ""]
    for secret in (settings.redis_password, settings.kafka_sasl_password):
        if secret is not None:
            found.append(secret.get_secret_value())
    return [s for s in found if s]
