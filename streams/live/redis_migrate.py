"""One-time conversion of a format-1 Redis store (leadscore before the compact state
format) to format 2, run by :meth:`streams.live.redis_store.RedisStore.prepare` when the
worker starts, before it consumes (upgrade: stop all workers, start the new ones).

Per lead, format 1 kept a hash ``P lead:{T}`` (``v``: version, ``s``: state JSON) and a set
``P lead:{T}:seen`` of every event id ever applied; the indexes had one rank zset per
half-life, ``P idx:rank:<ms>``. The conversion, lead by lead (SCAN, 500 at a time, each
lead by a compare-and-set script, so a second worker starting at the same time cannot
overwrite a converted lead):

* the state keeps everything (sums by rule id, positions, profile, counters);
* the applied ids become the lead's dedupe window, each remembered as if it had occurred at
  the lead's clock: a re-send of an old event is still caught for one dedupe window after
  the upgrade, then forgotten like any other;
* the rank and cooling indexes are rewritten for the converted leads; the per-half-life
  rank indexes are deleted at the end, and ``meta.format`` set to 2.

Interrupted, it resumes: converted leads are strings and the SCAN skips them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson

from scoring.state import LeadState
from scoring.state_machine import dedupe_window_of

from .redis_keys import KeySpace
from .redis_scripts import convert_lead
from .state_format import FORMAT

log = logging.getLogger("leadscore.store")

#: Leads per SCAN round.
CONVERT_CHUNK = 500

#: ``state, version -> stored bytes`` (naming what the state uses first).
Encode = Callable[[LeadState, int], Awaitable[bytes]]
#: Rewrites the indexes of the given states.
Reindex = Callable[[Sequence[LeadState]], Awaitable[None]]


async def stored_format(client: Any, keys: KeySpace) -> int | None:
    """The format of the store under ``keys`` (None: nothing stored yet)."""
    fmt, landmark = await client.hmget(keys.meta, "format", "landmark")
    if fmt is not None:
        return int(fmt)
    # Format 1 had no ``format`` field; it wrote ``landmark`` with its first lead.
    return None if landmark is None else 1


async def convert_format_1(
    client: Any,
    keys: KeySpace,
    encode: Encode,
    reindex: Reindex,
    progress: Callable[[int], None] | None,
) -> int:
    """Convert every format-1 lead under ``keys``; returns how many."""
    log.warning(
        "the Redis store under %r is in format 1: converting it to format %d before "
        "consuming (one pass over the leads)",
        keys.prefix,
        FORMAT,
    )
    converted = 0
    cursor = 0
    while True:
        cursor, found = await client.scan(
            cursor, match=keys.lead_pattern, count=CONVERT_CHUNK, _type="hash"
        )
        states = []
        for key in (k.decode() for k in found if k.endswith(b"}")):  # not :outbox
            state = await _convert(client, keys, encode, key)
            if state is not None:
                states.append(state)
        await reindex(states)
        converted += len(states)
        if progress is not None and states:
            progress(converted)
        if cursor == 0:
            break
    async for key in client.scan_iter(match=keys.legacy_rank_pattern, count=100):
        await client.delete(key)
    await client.hset(keys.meta, "format", FORMAT)
    log.warning("converted %d lead(s) to store format %d", converted, FORMAT)
    return converted


async def _convert(client: Any, keys: KeySpace, encode: Encode, key: str) -> LeadState | None:
    seen_key = keys.legacy_seen(key)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hmget(key, "v", "s")
        pipe.smembers(seen_key)
        (version, raw), seen = await pipe.execute()
    if raw is None:
        return None
    old = LeadState.from_dict(orjson.loads(raw))
    recent = dedupe_window_of((m.decode(), old.clock_ms) for m in seen)
    state = replace(old, recent_ids=recent)
    if not await convert_lead(client, key, seen_key, version or b"", await encode(state, 1)):
        return None  # converted (or rewritten) by someone else meanwhile
    return state
