"""One-time conversions of a Redis store written by an earlier leadscore to store format 3,
run by :meth:`streams.live.redis_store.RedisStore.prepare` when the
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
  rank indexes are deleted at the end, and ``meta.format`` set to 3.

Interrupted, it resumes: converted leads are strings and the SCAN skips them.

Format 2 had the same lead states, but each index in one zset (``P idx:rank``: lead ->
raw rank bound, ``P idx:cool-due``), skiplists of ~120 bytes an entry. Its conversion
moves the entries into the buckets of :mod:`.redis_index` (ZSCAN, 500 at a time; adding
an entry twice is harmless, so an interrupted conversion starts over), deletes the old
zsets and sets ``meta.format`` to 3. The state bytes are unchanged (their own format
byte stays 2).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson

from scoring.state import LeadState
from scoring.state_machine import dedupe_window_of

from .redis_index import LeadIndexes, rank_score
from .redis_keys import KeySpace, text
from .redis_scripts import convert_lead

#: The store's format (``P meta`` ``format``): 1 JSON hashes and a set of every id, 2 the
#: compact state strings (:mod:`.state_format`), 3 the same with bucketed indexes.
STORE_FORMAT = 3

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
        STORE_FORMAT,
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
    # (format 1 had a P idx:cool-due too, the zset format 2 kept)
    await client.delete(keys.legacy_cool_due_index)
    await client.delete(keys.legacy_rank_index)
    await client.hset(keys.meta, "format", STORE_FORMAT)
    log.warning("converted %d lead(s) to store format %d", converted, STORE_FORMAT)
    return converted


async def convert_format_2(client: Any, keys: KeySpace, indexes: LeadIndexes) -> int:
    """Move format 2's two index zsets into buckets; returns the entries moved."""
    log.warning(
        "the Redis store under %r is in format 2: moving its indexes into buckets "
        "(store format %d) before consuming",
        keys.prefix,
        STORE_FORMAT,
    )
    moved = 0
    landmark = await client.hget(keys.meta, "landmark")
    for old, kind in ((keys.legacy_rank_index, "rank"), (keys.legacy_cool_due_index, "cool")):
        cursor = 0
        while landmark is not None:
            cursor, entries = await client.zscan(old, cursor, count=CONVERT_CHUNK)
            if kind == "rank":
                rank = {text(m): rank_score(s) for m, s in entries if s > 0}
                done = await indexes.write(int(landmark), (rank, ()), ({}, ()))
            else:
                due = {text(m): int(s) for m, s in entries}
                done = await indexes.write(int(landmark), ({}, ()), (due, ()))
            if not done:
                raise RuntimeError("the rank landmark moved during the conversion")
            moved += len(entries)
            if cursor == 0:
                break
        await client.delete(old)
    await client.hset(keys.meta, "format", STORE_FORMAT)
    log.warning("moved %d index entries: store format %d", moved, STORE_FORMAT)
    return moved


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
