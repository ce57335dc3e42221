"""Fault scenarios against live workers: the fixtures of tests/integration (``stack``,
``rules``, ``private_redis``, ``private_redis_cluster``), re-used as they are."""

import pytest

from tests.chaos.report import HEADER, ROWS, format_row
from tests.integration.conftest import (  # noqa: F401 (fixtures, found by name)
    private_redis,
    private_redis_cluster,
    pytest_runtest_makereport,
    rules,
    stack,
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The chaos table: one row per scenario that ran."""
    if not ROWS:
        return
    terminalreporter.section("chaos scenarios")
    terminalreporter.write_line(HEADER)
    terminalreporter.write_line("|---|---:|---|---:|---:|---|---:|")
    for row in ROWS:
        terminalreporter.write_line(format_row(row))
