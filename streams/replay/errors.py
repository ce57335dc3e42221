"""The one error replay reports to the user: :class:`ReplayError`."""

from __future__ import annotations


class ReplayError(Exception):
    """A problem the user must fix (unreadable source, bad conversions file...); the
    message says what and where. The commands print it without a traceback."""
