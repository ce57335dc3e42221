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

Readers that take more than one round trip (``top``) read against a *snapshot* of the
bucket count: asking for bucket ``b`` as it was then also reads every bucket split off
it since (``b + k * modulus``), so a split between two reads never hides a lead.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .redis_keys import KeySpace, text

#: Average entries per bucket before the next bucket is split. Unsplit buckets hold up to
#: twice the average just before a round of splits ends; 40 keeps them (and chance
#: variation) under Redis's default ``zset-max-listpack-entries`` of 128.
BUCKET_LOAD = 40
#: Rank score units per doubling of the bound (:func:`rank_score`).
RANK_STEPS = 1024
#: Buckets the sweep's script looks at per call, at most.
DUE_BUCKETS_PER_CALL = 1000
#: An index entry and a removal as :data:`WRITE_INDEXES_SCRIPT` reads them.
_ENTRY = struct.Struct("<IqH")
_REMOVAL = struct.Struct("<IH")

WRITE_INDEXES_SCRIPT = """
-- Refresh the rank and cooling indexes of a batch's leads (bucketed by linear hashing,
-- see streams/live/redis_index.py), unless the rank scores were computed against another
-- landmark than the store's (another worker re-based it).
-- KEYS[1] = P meta (hash: landmark; <index>:level, :split, :count)
-- KEYS[2] = P rank:max (zset: bucket -> at least the highest score in it)
-- KEYS[3] = P cool-due:min (zset: bucket -> at most the earliest due ms in it)
-- ARGV[1] = landmark of the rank scores ('': removals only, no check),
-- ARGV[2] = P rank: , ARGV[3] = P cool-due: (bucket key bases),
-- ARGV[4] = entries per bucket before a split, then four packed lists (one argument
--   each, so that the client packs 8 arguments, not 3 per lead): rank entries, rank
--   removals, cool-due entries, cool-due removals; an entry is little-endian
--   u32 hash | i64 score | u16 length | lead id, a removal u32 hash | u16 length | lead id
-- Returns 1, or 0 (nothing written) when meta's landmark is not ARGV[1].
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'landmark') ~= ARGV[1] then return 0 end
local load = tonumber(ARGV[4])
local a = 5
local function index(name, summary, base, keep, edge)
  local at = redis.call('HMGET', KEYS[1], name .. ':level', name .. ':split', name .. ':count')
  local level, split = tonumber(at[1] or '0'), tonumber(at[2] or '0')
  local count = tonumber(at[3] or '0')
  local function bucket(h)
    local b = h % 2 ^ level
    if b < split then b = h % 2 ^ (level + 1) end
    return string.format('%d', b)
  end
  -- The bucket's summary entry made exact (its edge entry, or none when empty).
  local function exact(b)
    local e = redis.call('ZRANGE', base .. b, edge, edge, 'WITHSCORES')
    if #e == 0 then redis.call('ZREM', summary, b) else redis.call('ZADD', summary, e[2], b) end
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
        redis.call('ZREM', base .. from, m)
      end
    end
    exact(from)
    exact(to)
    split = split + 1
    if split == 2 ^ level then level, split = level + 1, 0 end
  end
  local packed, at = ARGV[a], 1
  while at <= #packed do
    local h, score, lead
    h, score, lead, at = struct.unpack('<I4i8Hc0', packed, at)
    local b = bucket(h)
    score = string.format('%d', score)
    count = count + redis.call('ZADD', base .. b, score, lead)
    redis.call('ZADD', summary, keep, score, b)
    if count > load * (2 ^ level + split) then split_next() end
  end
  packed, at = ARGV[a + 1], 1
  while at <= #packed do
    local h, lead
    h, lead, at = struct.unpack('<I4Hc0', packed, at)
    count = count - redis.call('ZREM', base .. bucket(h), lead)
  end
  a = a + 2
  redis.call('HSET', KEYS[1], name .. ':level', level, name .. ':split', split,
             name .. ':count', count)
end
index('rank', KEYS[2], ARGV[2], 'GT', -1)
index('cool-due', KEYS[3], ARGV[3], 'LT', 0)
return 1
"""

DUE_SCRIPT = """
-- Due leads of the cooling index, whole buckets at a time in bucket-number order from
-- ARGV[3], looking at ARGV[5] buckets at most. A bucket whose summary said due but that
-- has nothing due gets its exact earliest time in the summary again.
-- KEYS[1] = P meta, KEYS[2] = P cool-due:min (zset: bucket -> at most its earliest due)
-- ARGV[1] = until (ms), ARGV[2] = P cool-due: (bucket key base), ARGV[3] = first bucket,
-- ARGV[4] = stop after the bucket that brings this many leads, ARGV[5] = see above
-- Returns the bucket to go on from (-1: none left), then bucket, lead id, bucket, ...
local at = redis.call('HMGET', KEYS[1], 'cool-due:level', 'cool-due:split')
local n = 2 ^ tonumber(at[1] or '0') + tonumber(at[2] or '0')
local first, limit, until_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[1])
local last = math.min(n, first + tonumber(ARGV[5])) - 1
local out = {-1}
if first > last then return out end
local numbers = {}
for b = first, last do numbers[#numbers + 1] = string.format('%d', b) end
local earliest = redis.call('ZMSCORE', KEYS[2], unpack(numbers))
local found = 0
for i, b in ipairs(numbers) do
  if earliest[i] and tonumber(earliest[i]) <= until_ms then
    local key = ARGV[2] .. b
    local due = redis.call('ZRANGEBYSCORE', key, '-inf', ARGV[1])
    if #due == 0 then
      local e = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if #e == 0 then redis.call('ZREM', KEYS[2], b) else redis.call('ZADD', KEYS[2], e[2], b) end
    end
    for _, lead in ipairs(due) do
      out[#out + 1] = b
      out[#out + 1] = lead
    end
    found = found + #due
    if found >= limit then
      out[1] = tonumber(b) + 1
      return out
    end
  end
end
if last + 1 < n then out[1] = last + 1 end
return out
"""

SNAPSHOT_SCRIPT = """
-- An index's bucket count and summary at one moment (what a reader of several round
-- trips reads against: FAMILIES_SCRIPT).
-- KEYS[1] = P meta, KEYS[2] = the index's summary zset; ARGV[1] = the index's name
-- Returns level, split, then bucket, summary score, ... highest score first.
local at = redis.call('HMGET', KEYS[1], ARGV[1] .. ':level', ARGV[1] .. ':split')
local out = {tonumber(at[1] or '0'), tonumber(at[2] or '0')}
for _, v in ipairs(redis.call('ZREVRANGE', KEYS[2], 0, -1, 'WITHSCORES')) do
  out[#out + 1] = v
end
return out
"""

FAMILIES_SCRIPT = """
-- Buckets of a snapshot, read now: each with every bucket split off it since (the
-- buckets b + k * modulus, where modulus is b's at the snapshot), so that no lead that
-- was in b is missed.
-- KEYS[1] = P meta; ARGV[1] = the index's name, ARGV[2] = its bucket key base,
-- then pairs: bucket, its modulus at the snapshot.
-- Returns per pair: an entry count, then lead id, score, lead id, score, ...
local at = redis.call('HMGET', KEYS[1], ARGV[1] .. ':level', ARGV[1] .. ':split')
local n = 2 ^ tonumber(at[1] or '0') + tonumber(at[2] or '0')
local out = {}
for i = 3, #ARGV, 2 do
  local slot = #out + 1
  out[slot] = 0
  local b, m, found = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), 0
  while b < n do
    local entries = redis.call('ZRANGE', ARGV[2] .. string.format('%d', b), 0, -1, 'WITHSCORES')
    for _, v in ipairs(entries) do out[#out + 1] = v end
    found = found + #entries / 2
    b = b + m
  end
  out[slot] = found
end
return out
"""

REBASE_SCRIPT = """
-- Move the rank landmark from ARGV[1] to ARGV[2]: add ARGV[3] (negative) to every rank
-- score and make each bucket's summary exact; all or nothing, once (a second worker
-- finds the landmark moved and does nothing). About a microsecond per entry, once per
-- 512 of the longest half-lives.
-- KEYS[1] = P meta, KEYS[2] = P rank:max; ARGV[4] = P rank: (bucket key base)
-- Returns 1, or 0 when the landmark is not ARGV[1].
if redis.call('HGET', KEYS[1], 'landmark') ~= ARGV[1] then return 0 end
local by = tonumber(ARGV[3])
for _, b in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local key = ARGV[4] .. b
  local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  if #entries == 0 then
    redis.call('ZREM', KEYS[2], b)
  else
    local args = {}
    for j = 1, #entries, 2 do
      args[#args + 1] = string.format('%d', tonumber(entries[j + 1]) + by)
      args[#args + 1] = entries[j]
    end
    redis.call('ZADD', key, unpack(args))
    redis.call('ZADD', KEYS[2], args[#args - 1], b)
  end
end
redis.call('HSET', KEYS[1], 'landmark', ARGV[2])
return 1
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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An index's buckets at one moment (:data:`SNAPSHOT_SCRIPT`)."""

    level: int
    split: int
    #: (bucket, its summary score), the highest score first
    buckets: list[tuple[int, float]]

    def modulus(self, bucket: int) -> int:
        """What a hash was taken modulo to name ``bucket`` at the snapshot."""
        low: int = 1 << self.level
        return low if self.split <= bucket < low else low << 1


class LeadIndexes:
    """The rank and cool-due indexes of one store (:mod:`streams.live.redis_index`)."""

    def __init__(self, client: Any, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys
        self._bases = {"rank": (keys.rank_base, keys.rank_max)}
        self._bases["cool-due"] = (keys.cool_due_base, keys.cool_due_min)

    async def write(
        self,
        landmark: int | None,
        rank: tuple[Mapping[str, int], Sequence[str]],
        cool_due: tuple[Mapping[str, int], Sequence[str]],
    ) -> bool:
        """Run :data:`WRITE_INDEXES_SCRIPT`: ``rank`` and ``cool_due`` are (lead ->
        score to set, leads to remove). False when the store's landmark is no longer
        ``landmark`` (nothing written; None: removals only, no check)."""
        keys, args = self.arguments(landmark, rank, cool_due)
        script = self.client.register_script(WRITE_INDEXES_SCRIPT)
        done: Any = await script(keys=keys, args=args)
        return int(done) == 1

    def arguments(
        self,
        landmark: int | None,
        rank: tuple[Mapping[str, int], Sequence[str]],
        cool_due: tuple[Mapping[str, int], Sequence[str]],
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of :data:`WRITE_INDEXES_SCRIPT` (:meth:`write`'s arguments)."""
        keys = self.keys
        check = "" if landmark is None else landmark
        args: list[Any] = [check, keys.rank_base, keys.cool_due_base, BUCKET_LOAD]
        hashes: dict[str, int] = {}
        for entries, removals in (rank, cool_due):
            parts = []
            for member, score in entries.items():
                h = hashes.get(member)
                if h is None:
                    h = hashes[member] = lead_hash(member)
                raw = member.encode()
                parts.append(_ENTRY.pack(h, score, len(raw)) + raw)
            args.append(b"".join(parts))
            parts = []
            for member in removals:
                raw = member.encode()
                parts.append(_REMOVAL.pack(lead_hash(member), len(raw)) + raw)
            args.append(b"".join(parts))
        return [keys.meta, keys.rank_max, keys.cool_due_min], args

    async def remove(self, rank: Sequence[str] = (), cool_due: Sequence[str] = ()) -> None:
        """Drop leads from the indexes (gone: expired by idle-lead retention)."""
        await self.write(None, ({}, rank), ({}, cool_due))

    async def due(self, until_ms: int, first: int, limit: int) -> tuple[int, list[tuple[int, str]]]:
        """Leads due by ``until_ms`` as (bucket, lead id), whole buckets from bucket
        ``first`` until at least ``limit`` leads; and the bucket to go on from (-1:
        none left)."""
        script = self.client.register_script(DUE_SCRIPT)
        args = [until_ms, self.keys.cool_due_base, first, limit, DUE_BUCKETS_PER_CALL]
        raw: Any = await script(keys=[self.keys.meta, self.keys.cool_due_min], args=args)
        found = [(int(raw[i]), text(raw[i + 1])) for i in range(1, len(raw), 2)]
        return int(raw[0]), found

    async def snapshot(self, kind: str) -> Snapshot:
        """The ``rank`` or ``cool-due`` index's buckets now."""
        script = self.client.register_script(SNAPSHOT_SCRIPT)
        raw: Any = await script(keys=[self.keys.meta, self._bases[kind][1]], args=[kind])
        pairs = [(int(text(raw[i])), float(raw[i + 1])) for i in range(2, len(raw), 2)]
        return Snapshot(int(raw[0]), int(raw[1]), pairs)

    async def read(
        self, kind: str, snapshot: Snapshot, buckets: Sequence[int]
    ) -> list[list[tuple[str, float]]]:
        """The entries of ``buckets`` of ``snapshot`` (with what split off them since),
        per bucket, in one script call."""
        if not buckets:
            return []
        args: list[Any] = [kind, self._bases[kind][0]]
        for bucket in buckets:
            args += [bucket, snapshot.modulus(bucket)]
        raw: Any = await self.client.register_script(FAMILIES_SCRIPT)(
            keys=[self.keys.meta], args=args
        )
        out: list[list[tuple[str, float]]] = []
        i = 0
        while i < len(raw):
            n = int(raw[i])
            out.append([(text(raw[j]), float(raw[j + 1])) for j in range(i + 1, i + 1 + 2 * n, 2)])
            i += 1 + 2 * n
        return out

    async def everything(self, kind: str) -> dict[str, float]:
        """Every entry of the ``rank`` or ``cool-due`` index (tests, tools: reads all)."""
        snapshot = await self.snapshot(kind)
        buckets = [b for b, _ in snapshot.buckets]
        out: dict[str, float] = {}
        for i in range(0, len(buckets), 100):
            for entries in await self.read(kind, snapshot, buckets[i : i + 100]):
                out.update(entries)
        return out

    async def rebase(self, old: int, new: int, by: int) -> bool:
        """Move the rank landmark from ``old`` to ``new``, adding ``by`` to every score
        (:data:`REBASE_SCRIPT`); False when another worker moved it first."""
        script = self.client.register_script(REBASE_SCRIPT)
        args = [old, new, by, self.keys.rank_base]
        done: Any = await script(keys=[self.keys.meta, self.keys.rank_max], args=args)
        return int(done) == 1
