"""Log volume has a limit: a flood of dead letters writes a bounded number of lines."""

from __future__ import annotations

import logging

import pytest

from streams.log_limits import MAX_LINE_CHARS, RateLimitedLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_at_most_burst_lines_per_window_then_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(
        logging.getLogger("t"), "dead letters", burst=5, interval=10.0, clock=clock
    )
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(10_000):
            limited.log("dead letter %d: %s", i, "invalid_json")
        assert len(caplog.records) == 5
        assert [r.getMessage() for r in caplog.records][:2] == [
            "dead letter 0: invalid_json",
            "dead letter 1: invalid_json",
        ]
        clock.now = 10.0
        limited.flush()
        assert caplog.records[-1].getMessage().startswith("9995 more dead letters in the last 10s")
        limited.log("dead letter %d: %s", 10_000, "oversized")  # a new window: logged
        assert caplog.records[-1].getMessage() == "dead letter 10000: oversized"
        assert len(caplog.records) == 7


def test_a_quiet_window_logs_no_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(logging.getLogger("t"), "dead letters", burst=5, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t"):
        limited.log("one")
        clock.now = 60.0
        limited.flush()
        assert [r.getMessage() for r in caplog.records] == ["one"]


def test_a_long_line_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("t"), "dead letters")
    with caplog.at_level(logging.WARNING, logger="t"):
        limited.log("reason: %s", "x" * 100_000)
    (record,) = caplog.records
    assert len(record.getMessage()) < MAX_LINE_CHARS + 40
    assert record.getMessage().endswith("(100008 characters)")
