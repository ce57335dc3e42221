"""Fault scenarios against live workers: the fixtures of tests/integration (``stack``,
``rules``, ``private_redis``), re-used as they are."""

from tests.integration.conftest import (  # noqa: F401 (fixtures, found by name)
    private_redis,
    pytest_runtest_makereport,
    rules,
    stack,
)
