"""Keeping secrets out of what leadscore prints: URLs with their password masked
(:func:`redact_url`), every log record of every library scrubbed of the configured
secret values (:func:`redact_in_logs`, installed by ``streams.settings.load_settings``),
and lead ids in the worker's log lines hashed on request (:class:`LeadIdsInLogs`)."""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit


class _Redactor:
    """The one log-record factory that replaces secret values by ``***``."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.pattern: re.Pattern[str] | None = None
        self.installed = False
        self.formatter = logging.Formatter()

    def add(self, secrets: list[str]) -> None:
        self.secrets.update(s for s in secrets if len(s) >= 3)
        if not self.secrets:
            return
        ordered = sorted(self.secrets, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(s) for s in ordered))
        if not self.installed:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                return self.scrub(previous(*args, **kwargs))

            logging.setLogRecordFactory(factory)
            self.installed = True

    def scrub(self, record: logging.LogRecord) -> logging.LogRecord:
        pattern = self.pattern
        if pattern is None:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports that itself
            return record
        if pattern.search(message):
            record.msg, record.args = pattern.sub("***", message), ()
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = pattern.sub("***", self.formatter.formatException(record.exc_info))
        return record


_REDACTOR = _Redactor()


def redact_in_logs(secrets: list[str]) -> None:
    """From now on, every log record of every library (leadscore's, Faust's, aiokafka's,
    librdkafka's through its Python logger, redis-py's) has these values (and those of
    earlier calls) replaced by ``***`` in its message and its traceback, at every level.
    Values shorter than 3 characters are not secrets worth the name and are left alone."""
    _REDACTOR.add(secrets)


def redact_url(url: str) -> str:
    """``url`` fit to print: any password (``redis://:PW@host``, ``redis://user:PW@host``)
    replaced by ``***``; the rest kept so the message still says where."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


LeadIdLogging = Literal["plain", "hashed"]


class LeadIdsInLogs:
    """How the worker's log lines name leads (``LEADSCORE_LOG_LEAD_IDS``): ``plain``, or
    ``hashed``: ``h:`` and the first 12 hex digits of the id's SHA-256 (the start of an
    erased lead's tombstone key), and errors and dead-letter reasons, which may quote ids
    or event values, cut to their type or the field they name (the dead-letter topic keeps
    the whole text)."""

    def __init__(self, mode: LeadIdLogging = "plain") -> None:
        self.hashed = mode == "hashed"

    def __call__(self, lead_id: str) -> str:
        if not self.hashed:
            return lead_id
        return "h:" + hashlib.sha256(lead_id.encode()).hexdigest()[:12]

    def error(self, exc: BaseException) -> str:
        return type(exc).__name__ if self.hashed else f"{type(exc).__name__}: {exc}"

    def reason(self, text: str) -> str:
        if not self.hashed:
            return text
        return text.split(":", 1)[0] + " (details in the dead-letter topic)"
