"""The live store's two lead indexes, bucketed so that Redis keeps them compact.

* **rank** (``P rank:<n>``, zset: lead id -> rank score): what ``leadscore top`` reads.
  The score is :func:`rank_score` of the lead's ``Kernel.rank_bound`` against the
  landmark in ``P meta``: an integer, ``RANK_STEPS`` per doubling, rounded up, so it
  still bounds the lead's score from above (0.07 % looser at most).
* **cool-due** (``P cool-due:<n>``, zset: hot lead id -> the millisecond it cools if
  nothing happens): what the cooling sweep reads.

Why buckets: one zset of every lead is a skiplist in Redis, about 120 bytes an entry
(dict entry, skiplist node, member). A zset of at most ``zset-max-listpack-entries``
(128 by default) members whose scores are integers stays a *listpack*: about 22 bytes
an entry for a 16-character lead id. So each index is spread over buckets of about
``BUCKET_LOAD`` leads on average, by **linear hashing** (Litwin, 1980): a lead's bucket
is its :func:`lead_hash` modulo ``2**level``, or modulo ``2**(level+1)`` when that is
below ``split``; once the index holds more than ``BUCKET_LOAD`` entries per bucket, the
next bucket (``split``) is split in two, so buckets are added one at a time as the store
grows and never rehashed all at once. ``level``, ``split`` and the entry count live in
``P meta`` (``rank:level``, ``rank:split``, ``rank:count``, likewise ``cool-due:*``);
every change is made inside one script, so a bucket is always where the hash says.

A small *summary* zset per index names the buckets in use: ``P rank:max`` (bucket ->
at least its highest score: never below it, maybe above after a lead's bound fell) and
``P cool-due:min`` (bucket -> at most its earliest due time: the sweep's read makes it
exact again). ``top`` opens buckets in descending ``rank:max`` order; the sweep opens only
the buckets whose ``cool-due:min`` is due. Both kept with ``ZADD GT``/``LT`` (Redis 6.2+).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .redis_keys import KeySpace

#: Average entries per bucket before the next bucket is split. Unsplit buckets hold up to
#: twice the average just before a round of splits ends; 40 keeps them (and chance
#: variation) under Redis's default ``zset-max-listpack-entries`` of 128.
BUCKET_LOAD = 40
#: Rank score units per doubling of the bound (:func:`rank_score`).
RANK_STEPS = 1024

WRITE_INDEXES_SCRIPT = """
-- Refresh the rank and cooling indexes of a batch's leads (bucketed by linear hashing,
-- see streams/live/redis_index.py), unless the rank scores were computed against another
-- landmark than the store's (another worker re-based it).
-- KEYS[1] = P meta (hash: landmark; <index>:level, :split, :count)
-- KEYS[2] = P rank:max (zset: bucket -> at least the highest score in it)
-- KEYS[3] = P cool-due:min (zset: bucket -> at most the earliest due ms in it)
-- ARGV[1] = landmark of the rank scores, ARGV[2] = P rank: , ARGV[3] = P cool-due:
--           (bucket key bases), ARGV[4] = entries per bucket before a split,
-- then four lists, each a count and its items:
--   rank entries (hash, score, lead id), rank removals (hash, lead id),
--   cool-due entries (hash, ms, lead id), cool-due removals (hash, lead id)
-- Returns 1, or 0 (nothing written) when meta's landmark is not ARGV[1].
if redis.call('HGET', KEYS[1], 'landmark') ~= ARGV[1] then return 0 end
local load = tonumber(ARGV[4])
local a = 5
local function index(name, summary, base, keep)
  local at = redis.call('HMGET', KEYS[1], name .. ':level', name .. ':split', name .. ':count')
  local level, split = tonumber(at[1] or '0'), tonumber(at[2] or '0')
  local count = tonumber(at[3] or '0')
  local function bucket(h)
    local b = h % 2 ^ level
    if b < split then b = h % 2 ^ (level + 1) end
    return string.format('%d', b)
  end
  -- Linear hashing: split the next bucket as soon as the average passes the load
  -- (so no bucket outgrows a listpack; Redis does not turn a skiplist back).
  local function split_next()
    local from = string.format('%d', split)
    local to = string.format('%d', split + 2 ^ level)
    local entries = redis.call('ZRANGE', base .. from, 0, -1, 'WITHSCORES')
    for j = 1, #entries, 2 do
      local m = entries[j]
      if tonumber(string.sub(redis.sha1hex(m), 1, 8), 16) % 2 ^ (level + 1) ~= split then
        redis.call('ZADD', base .. to, entries[j + 1], m)
        redis.call('ZADD', summary, keep, entries[j + 1], to)
        redis.call('ZREM', base .. from, m)
      end
    end
    split = split + 1
    if split == 2 ^ level then level, split = level + 1, 0 end
  end
  local n = tonumber(ARGV[a])
  for i = a + 1, a + 3 * n, 3 do
    local b = bucket(tonumber(ARGV[i]))
    count = count + redis.call('ZADD', base .. b, ARGV[i + 1], ARGV[i + 2])
    redis.call('ZADD', summary, keep, ARGV[i + 1], b)
    if count > load * (2 ^ level + split) then split_next() end
  end
  a = a + 3 * n + 1
  n = tonumber(ARGV[a])
  for i = a + 1, a + 2 * n, 2 do
    count = count - redis.call('ZREM', base .. bucket(tonumber(ARGV[i])), ARGV[i + 1])
  end
  a = a + 2 * n + 1
  redis.call('HSET', KEYS[1], name .. ':level', level, name .. ':split', split,
             name .. ':count', count)
end
index('rank', KEYS[2], ARGV[2], 'GT')
index('cool-due', KEYS[3], ARGV[3], 'LT')
return 1
"""

DUE_SCRIPT = """
-- The due leads of the cooling index, bucket by bucket in bucket-number order, from a
-- cursor (a bucket and how many of its due leads to skip: those held back before).
-- A due bucket with nothing due gets its exact earliest time in the summary again.
-- KEYS[1] = P cool-due:min (zset: bucket -> at most its earliest due ms)
-- ARGV[1] = until (ms), ARGV[2] = P cool-due: (bucket key base), ARGV[3] = first bucket,
-- ARGV[4] = due leads of that bucket to skip, ARGV[5] = at most this many leads
-- Returns bucket, lead id, bucket, lead id, ...
local first, limit = tonumber(ARGV[3]), tonumber(ARGV[5])
local numbers = {}
for _, b in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  if tonumber(b) >= first then numbers[#numbers + 1] = tonumber(b) end
end
table.sort(numbers)
local out, found = {}, 0
for _, n in ipairs(numbers) do
  local b = string.format('%d', n)
  local key = ARGV[2] .. b
  local skip = 0
  if n == first then skip = tonumber(ARGV[4]) end
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', ARGV[1], 'LIMIT', skip, limit - found)
  if skip == 0 and #due == 0 then
    local earliest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #earliest == 0 then
      redis.call('ZREM', KEYS[1], b)
    else
      redis.call('ZADD', KEYS[1], earliest[2], b)
    end
  end
  for _, m in ipairs(due) do
    out[#out + 1] = b
    out[#out + 1] = m
  end
  found = found + #due
  if found >= limit then break end
end
return out
"""

BUCKETS_SCRIPT = """
-- Whole buckets of an index, read at once.
-- ARGV[1] = the bucket key base, then bucket numbers.
-- Returns, per bucket, its entry count, then lead id, score, lead id, score, ...
local out = {}
for i = 2, #ARGV do
  local entries = redis.call('ZRANGE', ARGV[1] .. ARGV[i], 0, -1, 'WITHSCORES')
  out[#out + 1] = #entries / 2
  for _, v in ipairs(entries) do out[#out + 1] = v end
end
return out
"""


def lead_hash(lead_id: str) -> int:
    """The lead's bucket hash: the first 32 bits of its id's SHA-1 (what the scripts
    compute with ``redis.sha1hex`` when they split a bucket)."""
    return int(hashlib.sha1(lead_id.encode(), usedforsecurity=False).hexdigest()[:8], 16)


def rank_score(bound: float) -> int:
    """A positive rank bound as the index stores it: an integer above
    ``RANK_STEPS * log2(bound)`` (integers keep a listpack entry small)."""
    return math.floor(RANK_STEPS * math.log2(bound)) + 1


def rank_bound_of(score: float) -> float:
    """The bound a rank score stands for (at least the bound it was made from)."""
    return float(2.0 ** (score / RANK_STEPS))


class LeadIndexes:
    """The rank and cool-due indexes of one store (:mod:`streams.live.redis_index`)."""

    def __init__(self, client: Any, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys

    async def write(
        self,
        landmark: int,
        rank: tuple[Mapping[str, int], Sequence[str]],
        cool_due: tuple[Mapping[str, int], Sequence[str]],
    ) -> bool:
        """Run :data:`WRITE_INDEXES_SCRIPT`: ``rank`` and ``cool_due`` are (lead ->
        score to set, leads to remove). False when the store's landmark is no longer
        ``landmark`` (nothing written)."""
        keys = self.keys
        args: list[Any] = [landmark, keys.rank_base, keys.cool_due_base, BUCKET_LOAD]
        for entries, removals in (rank, cool_due):
            args.append(len(entries))
            for member, score in entries.items():
                args += [lead_hash(member), score, member]
            args.append(len(removals))
            for member in removals:
                args += [lead_hash(member), member]
        script = self.client.register_script(WRITE_INDEXES_SCRIPT)
        done: Any = await script(keys=[keys.meta, keys.rank_max, keys.cool_due_min], args=args)
        return int(done) == 1

    async def due(self, until_ms: int, after: tuple[int, int], limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` leads due by ``until_ms`` as (bucket, lead id), in bucket
        order from ``after`` (a bucket, and how many of its due leads to skip)."""
        script = self.client.register_script(DUE_SCRIPT)
        args = [until_ms, self.keys.cool_due_base, after[0], after[1], limit]
        raw: Any = await script(keys=[self.keys.cool_due_min], args=args)
        return [(int(raw[i]), _text(raw[i + 1])) for i in range(0, len(raw), 2)]

    async def rank_buckets(self) -> list[tuple[int, float]]:
        """The rank index's buckets as (bucket, at least its highest score), highest
        first."""
        raw = await self.client.zrevrange(self.keys.rank_max, 0, -1, withscores=True)
        return [(int(_text(b)), float(score)) for b, score in raw]

    async def read_buckets(
        self, base: str, buckets: Sequence[int]
    ) -> list[list[tuple[str, float]]]:
        """The entries of whole buckets (one script call), per bucket."""
        if not buckets:
            return []
        raw: Any = await self.client.register_script(BUCKETS_SCRIPT)(
            keys=[self.keys.meta], args=[base, *buckets]
        )
        out: list[list[tuple[str, float]]] = []
        i = 0
        while i < len(raw):
            n = int(raw[i])
            out.append([(_text(raw[j]), float(raw[j + 1])) for j in range(i + 1, i + 1 + 2 * n, 2)])
            i += 1 + 2 * n
        return out

    async def everything(self, kind: str) -> dict[str, float]:
        """Every entry of the ``rank`` or ``cool-due`` index (tests, tools: reads all)."""
        base, summary = (
            (self.keys.rank_base, self.keys.rank_max)
            if kind == "rank"
            else (self.keys.cool_due_base, self.keys.cool_due_min)
        )
        buckets = [int(_text(b)) for b in await self.client.zrange(summary, 0, -1)]
        out: dict[str, float] = {}
        for i in range(0, len(buckets), 100):
            for entries in await self.read_buckets(base, buckets[i : i + 100]):
                out.update(entries)
        return out

    async def remove(
        self, landmark: int, rank: Sequence[str] = (), cool_due: Sequence[str] = ()
    ) -> bool:
        """Drop leads from the indexes (gone: expired by idle-lead retention)."""
        return await self.write(landmark, ({}, rank), ({}, cool_due))

    async def shift_rank(self, by: int) -> None:
        """Add ``by`` to every rank score and to the summary (a landmark re-base)."""
        buckets = [int(_text(b)) for b in await self.client.zrange(self.keys.rank_max, 0, -1)]
        for i in range(0, len(buckets), 100):
            chunk = buckets[i : i + 100]
            for bucket, entries in zip(
                chunk, await self.read_buckets(self.keys.rank_base, chunk), strict=True
            ):
                if entries:
                    key = f"{self.keys.rank_base}{bucket}"
                    await self.client.zadd(key, {m: int(s) + by for m, s in entries})
        raw = await self.client.zrange(self.keys.rank_max, 0, -1, withscores=True)
        if raw:
            await self.client.zadd(self.keys.rank_max, {b: int(s) + by for b, s in raw})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
