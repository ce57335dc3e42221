"""``leadscore replay kafka:TOPIC --from --to`` reads exactly the events of the file that was
produced to the topic, and gives the same outputs as replaying the file; it never joins a
consumer group nor moves anyone's offsets.

Real broker (tests/conftest.py's fixtures); the log is produced with the same code as
``leadscore produce`` (``streams.live.commands._lines`` / ``_key_of`` and the acked
producer)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from scoring.rules_file import default_rules_path
from streams.kafka import AckedProducer, confluent_config
from streams.live.commands import _key_of, _lines
from streams.replay.commands import replay
from streams.replay.reading import ReadStats, read_events
from streams.replay.sources import KafkaSource
from streams.settings import load_settings
from tests.strategies import event_dict, generate_event_log

pytestmark = pytest.mark.integration

PARTITIONS = 3
BAD_LINES = [
    b'{"event_id": "bad-1", "type": "page_view", "lead_id": "lead-00001"',  # cut short
    b'{"event_id": "bad-2", "type": "page_view", "lead_id": "lead-00002", '
    b'"occurred_at": "2026-01-05T10:00:00", "url": "https://example.com/"}',  # naive time
]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _write_log(path: Path) -> None:
    """~3000 events for 150 leads (late events and re-sent duplicates included) with two
    bad lines in the middle and a blank line (not sent by produce)."""
    lines = [json.dumps(e).encode() for e in generate_event_log(11, 3000, 150)]
    lines[1000:1000] = BAD_LINES
    lines.insert(2000, b"")
    path.write_bytes(b"\n".join(lines) + b"\n")


def _produce(bootstrap: str, topic: str, path: Path) -> int:
    """Send the file like ``leadscore produce`` does (key = lead_id); returns the count."""
    producer = AckedProducer(load_settings(kafka_bootstrap_servers=bootstrap))
    records = [(_key_of(line), line) for line in _lines(path)]
    producer.send_all(topic, records)
    return len(records)


def _replay(args: list[str], out: Path) -> dict[str, Any]:
    result = CliRunner().invoke(
        replay,
        [*args, "--rules", str(default_rules_path()), "--out", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def _hot_records(out: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (out / "hot.jsonl").read_text().splitlines()]
    for record in records:
        del record["emitted_at"]  # the replay's wall clock
    return records


def _committed(bootstrap: str, group: str, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return [tp.offset for tp in consumer.committed(parts, timeout=30)]
    finally:
        consumer.close()


@pytest.fixture
def live_group(kafka_bootstrap: str, unique_name: str) -> Callable[[str], list[int]]:
    """A stand-in for the worker's consumer group: commits offset 1 on every partition."""
    group = f"{unique_name}-live"

    def commit(topic: str) -> list[int]:
        consumer = Consumer(
            {"bootstrap.servers": kafka_bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        try:
            offsets = [TopicPartition(topic, p, 1) for p in range(PARTITIONS)]
            consumer.commit(offsets=offsets, asynchronous=False)
        finally:
            consumer.close()
        return _committed(kafka_bootstrap, group, topic)

    commit.group = group  # type: ignore[attr-defined]
    return commit


def test_kafka_range_replay_equals_file_replay(
    tmp_path: Path,
    kafka_bootstrap: str,
    create_topic: Callable[..., str],
    unique_name: str,
    live_group: Callable[[str], list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEADSCORE_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    topic = create_topic(unique_name, partitions=PARTITIONS)
    log = tmp_path / "events.jsonl"
    _write_log(log)

    start_ms = _now_ms() - 1000
    sent = _produce(kafka_bootstrap, topic, log)
    time.sleep(0.05)
    middle_ms = _now_ms()  # every message of the log was written before this
    time.sleep(0.05)
    later = tmp_path / "later.jsonl"  # more events after --to: must not be read
    later.write_text(
        "\n".join(
            json.dumps(e) for e in generate_event_log(12, 200, 150, start_ms=1_770_000_000_000)
        )
        + "\n"
    )
    sent_later = _produce(kafka_bootstrap, topic, later)
    group_offsets = live_group(topic)

    from_file = _replay([str(log)], tmp_path / "file")
    from_kafka = _replay(
        [f"kafka:{topic}", "--from", _iso(start_ms), "--to", _iso(middle_ms)], tmp_path / "kafka"
    )

    # The same records: every line but the blank one, the same bad ones, the same events.
    counts_file, counts_kafka = from_file["counts"], from_kafka["counts"]
    assert counts_kafka["records"] == sent == counts_file["records"] - 1
    assert counts_file["blank_lines"] == 1
    for name in ("valid_events", "bad", "applied", "duplicates", "leads"):
        assert counts_kafka[name] == counts_file[name], name
    assert counts_file["bad"] == len(BAD_LINES)
    assert from_kafka["bad_by_kind"] == from_file["bad_by_kind"]
    assert sorted(r["error"] for r in from_kafka["bad_records"]) == sorted(
        r["error"] for r in from_file["bad_records"]
    )
    assert all("partition" in r and "offset" in r for r in from_kafka["bad_records"])
    assert from_kafka["time"] == from_file["time"]

    # ... and the same outputs (emitted_at aside).
    hot_file = _hot_records(tmp_path / "file")
    assert hot_file, "the log should make some leads hot"
    assert _hot_records(tmp_path / "kafka") == hot_file
    scores = (tmp_path / "file" / "scores.csv").read_text()
    assert (tmp_path / "kafka" / "scores.csv").read_text() == scores

    # Without --to the range ends at the end of the topic: the later events are read too.
    everything = _replay([f"kafka:{topic}", "--from", _iso(start_ms)], tmp_path / "all")
    assert everything["counts"]["records"] == sent + sent_later

    # The replays joined no group and left the live group's offsets alone.
    assert _committed(kafka_bootstrap, live_group.group, topic) == group_offsets  # type: ignore[attr-defined]
    groups = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_consumer_groups().result()
    assert not [g.group_id for g in groups.valid if g.group_id.startswith("leadscore-replay-")]


def test_kafka_source_errors_are_reported(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, unique_name: str
) -> None:
    monkeypatch.setenv("LEADSCORE_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    result = CliRunner().invoke(
        replay,
        [
            f"kafka:{unique_name}-missing",
            "--rules",
            str(default_rules_path()),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 1
    assert f"kafka:{unique_name}-missing" in result.output


def test_a_replay_from_kafka_rejects_what_the_worker_rejects_as_dated_too_far_ahead(
    kafka_bootstrap: str,
    create_topic: Callable[..., str],
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The clock-skew policy (LEADSCORE_MAX_CLOCK_SKEW, default 1 day) in a replay from
    Kafka, on the native path (``leadscore replay``) and the reference path (what
    calibration reads): an event dated in 2099 is a bad record naming occurred_at, its
    neighbours count; with the policy off it is applied."""
    topic = create_topic(unique_name, partitions=1)
    now = _now_ms()
    events = [
        event_dict("page_view", "skew", now - 60_000, event_id="ok-1", url="https://x.io/"),
        event_dict("form_submit", "skew", 4_070_908_800_000, event_id="far", form_id="demo"),
        event_dict("page_view", "skew", now - 30_000, event_id="ok-2", url="https://x.io/"),
    ]
    producer = AckedProducer(load_settings(kafka_bootstrap_servers=kafka_bootstrap))
    producer.send_all(topic, [(b"skew", json.dumps(e).encode()) for e in events])
    monkeypatch.setenv("LEADSCORE_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.delenv("LEADSCORE_MAX_CLOCK_SKEW", raising=False)
    summary = _replay([f"kafka:{topic}"], tmp_path / "on")
    assert (summary["counts"]["bad"], summary["counts"]["applied"]) == (1, 2)
    [bad] = summary["bad_records"]
    assert bad["kind"] == "invalid_event" and bad["error"].startswith("occurred_at: 2099-")
    assert "LEADSCORE_MAX_CLOCK_SKEW" in bad["error"]
    config = confluent_config(load_settings())
    stats = ReadStats()
    source = KafkaSource(topic, config, max_clock_skew_ms=24 * 3600 * 1000)
    read = [e.event_id for chunk in read_events([source], stats) for e in chunk]
    assert read == ["ok-1", "ok-2"]
    assert [r.to_dict() for r in stats.bad_records] == summary["bad_records"]
    monkeypatch.setenv("LEADSCORE_MAX_CLOCK_SKEW", "off")
    summary = _replay([f"kafka:{topic}"], tmp_path / "off")
    assert (summary["counts"]["bad"], summary["counts"]["applied"]) == (0, 3)
