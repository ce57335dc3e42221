"""Log volume with a limit: a logger that writes at most ``burst`` lines per ``interval``
seconds and sums up the rest, for messages that hostile or broken input can produce at
any rate (one line per rejected message would let a flood of bad input fill the disk).
Whatever it leaves out is still counted in full by the caller's metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Longest text of one logged line: a rejection reason may quote a whole field.
MAX_LINE_CHARS = 500


class RateLimitedLog:
    """``log(...)`` at most ``burst`` times per ``interval`` seconds; past that, lines are
    only counted, and the next line after the window (or :meth:`flush`) says how many were
    left out."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        level: int = logging.WARNING,
        burst: int = 20,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.level = level
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._window_start = clock()
        self._written = 0
        self._left_out = 0

    def log(self, message: str, *args: object) -> None:
        self._roll()
        if self._written < self.burst:
            self._written += 1
            text = message % args if args else message
            if len(text) > MAX_LINE_CHARS:
                text = f"{text[:MAX_LINE_CHARS]}... ({len(text)} characters)"
            self.logger.log(self.level, "%s", text)
        else:
            self._left_out += 1

    def flush(self) -> None:
        """Say how many lines the current window left out, if it is over."""
        self._roll()

    def _roll(self) -> None:
        now = self.clock()
        if now - self._window_start < self.interval:
            return
        if self._left_out:
            self.logger.log(
                self.level,
                "%d more %s in the last %.0fs not logged (at most %d lines per %.0fs)",
                self._left_out,
                self.what,
                now - self._window_start,
                self.burst,
                self.interval,
            )
        self._window_start = now
        self._written = 0
        self._left_out = 0
