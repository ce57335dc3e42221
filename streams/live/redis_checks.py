"""What the worker checks of Redis's own configuration when it starts, and says in its log:
settings under which Redis loses scores without telling anyone (docs/architecture.md,
"Durability").

* ``maxmemory-policy`` other than ``noeviction``: when memory is full Redis deletes keys
  (lead states) to make room: scores silently lost. An error line.
* no persistence (``appendonly no`` and no ``save`` points): a Redis restart loses every
  lead; the worker then re-reads its input from the start (rollback repair), which only
  helps while Kafka still holds it. A warning.
* ``appendfsync everysec`` (or ``no``): a power failure loses up to a second (or more) of
  writes; the worker notices and re-reads them (rollback repair). An info line.
* ``zset-max-listpack-entries`` below 128 or ``zset-max-listpack-value`` below 64: the
  index buckets (:mod:`.redis_index`) become skiplists, ~100 bytes more per lead. A
  warning (memory, not correctness).
"""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions

log = logging.getLogger("leadscore.store")

#: What the index buckets need of ``zset-max-listpack-entries`` and ``-value`` (defaults).
LISTPACK_ENTRIES, LISTPACK_VALUE = 128, 64


async def durability_findings(client: Any) -> list[tuple[int, str]]:
    """``(log level, message)`` for each risky setting of the Redis behind ``client``;
    an info line when its configuration cannot be read (a managed Redis without CONFIG)."""
    try:
        config = {}
        for name in ("maxmemory-policy", "appendonly", "appendfsync", "save", "zset-max-*"):
            config.update(_texts(await client.config_get(name)))
    except redis.exceptions.ResponseError as exc:
        return [
            (
                logging.INFO,
                f"cannot read Redis's configuration ({exc}); make sure maxmemory-policy is "
                "noeviction and persistence is on",
            )
        ]
    findings: list[tuple[int, str]] = []
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        findings.append(
            (
                logging.ERROR,
                f"Redis maxmemory-policy is {policy}: when its memory is full it deletes "
                "keys, and lead scores are lost silently; set maxmemory-policy noeviction "
                "(a full Redis then refuses writes, and the worker waits and says so)",
            )
        )
    aof = config.get("appendonly", "no") == "yes"
    if not aof and not config.get("save", "").strip():
        findings.append(
            (
                logging.WARNING,
                "Redis has no persistence (appendonly no, no save points): a restart loses "
                "every lead, and the worker then re-reads its input from the start, which "
                "only recovers what Kafka still holds; turn on appendonly",
            )
        )
    elif aof and config.get("appendfsync", "everysec") != "always":
        findings.append(
            (
                logging.INFO,
                f"Redis appendfsync is {config.get('appendfsync')}: a power failure can lose "
                "the last writes; the worker notices and re-reads them from Kafka (keep the "
                "input topics' retention longer than any rollback you may have to recover)",
            )
        )
    entries = int(
        config.get("zset-max-listpack-entries", config.get("zset-max-ziplist-entries", "128"))
    )
    value = int(config.get("zset-max-listpack-value", config.get("zset-max-ziplist-value", "64")))
    if entries < LISTPACK_ENTRIES or value < LISTPACK_VALUE:
        findings.append(
            (
                logging.WARNING,
                f"Redis zset-max-listpack-entries is {entries} and zset-max-listpack-value "
                f"{value}: the lead indexes' buckets (up to ~110 leads, lead ids up to 64 "
                f"bytes) need at least {LISTPACK_ENTRIES} and {LISTPACK_VALUE} to stay "
                "compact; they work either way, at ~100 more bytes per lead",
            )
        )
    return findings


def _texts(reply: Any) -> dict[str, str]:
    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    return {text(k): text(v) for k, v in dict(reply).items()}
