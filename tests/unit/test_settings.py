"""Settings: durations, unknown variables, and secrets kept out of every message and log
line (a password inside the Redis URL included)."""

from __future__ import annotations

import logging

import pytest

from streams.redaction import redact_in_logs, redact_url
from streams.settings import SettingsError, load_settings, secrets_of


def test_idle_lead_retention_is_a_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADSCORE_IDLE_LEAD_RETENTION", "90d")
    assert load_settings().idle_lead_retention == 90 * 24 * 3600 * 1000
    monkeypatch.setenv("LEADSCORE_IDLE_LEAD_RETENTION", "off")
    assert load_settings().idle_lead_retention is None
    monkeypatch.setenv("LEADSCORE_IDLE_LEAD_RETENTION", "soon")
    with pytest.raises(SettingsError, match="LEADSCORE_IDLE_LEAD_RETENTION"):
        load_settings()


def test_known_variables_are_not_reported_unknown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LEADSCORE_IDLE_LEAD_RETENTION", "30d")
    monkeypatch.setenv("LEADSCORE_NO_SUCH_THING", "1")
    with caplog.at_level(logging.WARNING, logger="leadscore.settings"):
        load_settings()
    assert "LEADSCORE_NO_SUCH_THING" in caplog.text
    assert "LEADSCORE_IDLE_LEAD_RETENTION," not in caplog.text.split("settings are")[0]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter22@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:hunter22@10.0.0.1/1", "rediss://app:***@10.0.0.1/1"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("redis://:hunter22@[::1]:6379", "redis://:***@[::1]:6379"),
    ],
)
def test_urls_are_printed_without_their_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_secrets_never_reach_a_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LEADSCORE_REDIS_URL", "redis://:url-secret-1@cache:6379/0")
    monkeypatch.setenv("LEADSCORE_KAFKA_SASL_PASSWORD", "sasl-secret-2")
    settings = load_settings()  # installs the redaction
    assert set(secrets_of(settings)) == {"url-secret-1", "sasl-secret-2"}
    library = logging.getLogger("aiokafka.conn")  # any library, any level
    with caplog.at_level(logging.DEBUG):
        library.debug("connecting with sasl_plain_password=%s", "sasl-secret-2")
        try:
            raise ConnectionError("AUTH failed for redis://:url-secret-1@cache")
        except ConnectionError:
            logging.getLogger("leadscore.worker").exception("Redis down")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "sasl-secret-2" not in text and "url-secret-1" not in text
    assert "sasl_plain_password=***" in text
    assert "redis://:***@cache" in text


def test_a_settings_error_does_not_echo_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    redact_in_logs([])  # nothing to add: harmless
    monkeypatch.setenv("LEADSCORE_KAFKA_SASL_MECHANISM", "NOPE")
    monkeypatch.setenv("LEADSCORE_KAFKA_SASL_PASSWORD", "sasl-secret-3")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "sasl-secret-3" not in str(error.value)


def test_the_clock_skew_policy_defaults_to_a_day(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEADSCORE_MAX_CLOCK_SKEW", raising=False)
    assert load_settings().max_clock_skew == 24 * 3600 * 1000
    monkeypatch.setenv("LEADSCORE_MAX_CLOCK_SKEW", "12h")
    assert load_settings().max_clock_skew == 12 * 3600 * 1000
    monkeypatch.setenv("LEADSCORE_MAX_CLOCK_SKEW", "off")
    assert load_settings().max_clock_skew is None
