"""The live store's Lua scripts: each a module constant (its KEYS and ARGV in a header
comment) with one typed wrapper that builds the arguments and reads the result. Key names
come from :mod:`streams.live.redis_keys`; the state bytes from
:mod:`streams.live.state_format`.

The save script takes a whole batch's leads in one call (one round trip, one command to
pack), so the store's cost does not grow with commands per lead. That needs a standalone
Redis: on Redis Cluster a script may only touch keys of one slot, so a cluster store calls
the same script per slot (each lead's keys share a hash tag), pipelined per node, with
the ``applied`` marks kept per node (docs/architecture.md, "The live store")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from scoring.crossings import Crossing, crossing_to_dict

from .interfaces import StoreRolledBack
from .redis_keys import LeadKeys

SAVE_LEADS_SCRIPT = """
-- Compare-and-set of a batch's changed leads in one call; per lead: its state and new
-- outbox entries at once, or nothing when its stored version moved. Then the batch's
-- "applied up to" marks. Nothing at all when a mark is behind what the caller knows was
-- applied: Redis lost writes (a rollback), and the caller must re-read from the marks.
-- KEYS[1] = P idx:outbox (set of leads that may have undelivered crossings)
-- KEYS[2] = P applied    (hash: topic:partition -> next offset)
-- KEYS[3] = P meta       (hash; exists once the store holds anything)
-- then per lead, in ARGV order: P lead:{T} (string: state), and only for a lead with
--   crossings, P lead:{T}:outbox (hash: crossing id -> crossing JSON)
-- ARGV[1] = TTL in ms for leads that are not hot ("0": none); ARGV[2] = k; then k marks
--   (stream, next offset, offset the caller knows was applied or -1); then per lead:
--   expected version (state bytes 2-5, "" when not stored yet), new state (byte 22:
--   flags, 1 = hot), m, and when m > 0: the lead id and m (crossing id, crossing JSON)
--   pairs
-- Returns, per lead: 1, or -1 when the stored version was not the expected one (another
-- writer got there first: reload and recompute that lead); or, after a rollback,
-- {-2, stream, stored mark (-1: none), ...} for each mark found behind and nothing written.
local k = tonumber(ARGV[2])
-- No marks yet in a store that holds leads: written by a leadscore without marks.
local unmarked = redis.call('EXISTS', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[3]) == 1
local behind = {}
for j = 3, 2 + 3 * k, 3 do
  local known = tonumber(ARGV[j + 2])
  if known >= 0 and not unmarked then
    local stored = tonumber(redis.call('HGET', KEYS[2], ARGV[j]) or '-1')
    if stored < known then
      behind[#behind + 1] = ARGV[j]
      behind[#behind + 1] = stored
    end
  end
end
if #behind > 0 then
  table.insert(behind, 1, -2)
  return behind
end
local out = {}
local ttl = tonumber(ARGV[1])
local a = 3 + 3 * k
local key = 4
while a <= #ARGV do
  local expected, state, m = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local current = redis.call('GET', KEYS[key])
  local version = ''
  if current then version = string.sub(current, 2, 5) end
  if version ~= expected then
    out[#out + 1] = -1
  else
    if ttl > 0 and string.byte(state, 22) % 2 == 0 then
      redis.call('SET', KEYS[key], state, 'PX', ttl)
    else
      redis.call('SET', KEYS[key], state)
    end
    if m > 0 then
      redis.call('SADD', KEYS[1], ARGV[a + 3])
      local from, to = a + 4, a + 3 + 2 * m
      local j = from
      while j <= to do
        local last = math.min(j + 999, to)
        redis.call('HSET', KEYS[key + 1], unpack(ARGV, j, last))
        j = last + 1
      end
    end
    out[#out + 1] = 1
  end
  if m > 0 then
    a = a + 4 + 2 * m
    key = key + 2
  else
    a = a + 3
    key = key + 1
  end
end
for j = 3, 2 + 3 * k, 3 do
  local stored = tonumber(redis.call('HGET', KEYS[2], ARGV[j]) or '-1')
  if tonumber(ARGV[j + 1]) > stored then
    redis.call('HSET', KEYS[2], ARGV[j], ARGV[j + 1])
  end
end
return out
"""

WRITE_INDEXES_SCRIPT = """
-- Refresh the rank and cooling indexes of a batch's leads, unless the rank bounds were
-- computed against another landmark than the store's (another worker re-based it).
-- KEYS[1] = P idx:rank (zset), KEYS[2] = P idx:cool-due (zset), KEYS[3] = P meta (hash)
-- ARGV = landmark of the bounds, then four lists, each a count and its items:
--        rank entries (bound, lead id), rank removals (lead id),
--        cool-due entries (ms, lead id), cool-due removals (lead id)
-- Returns 1, or 0 (nothing written) when meta's landmark is not ARGV[1].
if redis.call('HGET', KEYS[3], 'landmark') ~= ARGV[1] then return 0 end
local a = 2
local function each(key, command, width)
  local n = tonumber(ARGV[a])
  local from, to = a + 1, a + n * width
  local j = from
  while j <= to do
    local last = math.min(j + 500 * width - 1, to)
    redis.call(command, key, unpack(ARGV, j, last))
    j = last + 1
  end
  a = to + 1
end
each(KEYS[1], 'ZADD', 2)
each(KEYS[1], 'ZREM', 1)
each(KEYS[2], 'ZADD', 2)
each(KEYS[2], 'ZREM', 1)
return 1
"""

REGISTER_NAMES_SCRIPT = """
-- Give each name a number, once: an existing number is kept, a new name gets the next.
-- KEYS[1] = P names (hash: name -> number; '#next': the last number given)
-- ARGV    = the names
-- Returns the numbers, in ARGV order.
local out = {}
for i = 1, #ARGV do
  local n = redis.call('HGET', KEYS[1], ARGV[i])
  if not n then
    n = redis.call('HINCRBY', KEYS[1], '#next', 1)
    redis.call('HSET', KEYS[1], ARGV[i], n)
  end
  out[i] = tonumber(n)
end
return out
"""

CONVERT_LEAD_SCRIPT = """
-- Replace one lead's format-1 keys by its format-2 state, unless someone did already.
-- KEYS[1] = P lead:{T}      (format 1: hash v, s; format 2: string)
-- KEYS[2] = P lead:{T}:seen (format 1: set of applied event ids)
-- ARGV[1] = the format-1 version read, ARGV[2] = the format-2 state
-- Returns 1 when converted, 0 when the key was no longer that format-1 hash.
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


async def load_states(client: Redis, keys: Sequence[LeadKeys]) -> list[bytes | None]:
    """The stored states of ``keys`` (None: not stored), in one round trip (MGET: one
    slot per call on Redis Cluster)."""
    if not keys:
        return []
    found: Any = await client.mget([k.state for k in keys])
    return list(found)


@dataclass(frozen=True, slots=True)
class LeadWrite:
    """One lead's new state, to be written only if its stored version is still
    ``expected_version`` (the 4 version bytes read; ``b""``: not stored)."""

    keys: LeadKeys
    expected_version: bytes
    state: bytes
    crossings: Sequence[Crossing]


async def compare_and_set_leads(
    client: Redis,
    writes: Sequence[LeadWrite],
    *,
    outbox_index: str,
    applied_key: str,
    meta_key: str,
    applied_marks: Mapping[str, tuple[int, int]],
    idle_ttl_ms: int = 0,
) -> list[str]:
    """Run :data:`SAVE_LEADS_SCRIPT` for all ``writes`` in one round trip. A lead whose
    crossings are written joins ``outbox_index`` in the same atomic step, so the outbox
    relay finds it after any crash; ``applied_marks`` (stream -> (next offset, the offset
    the caller knows was applied or -1)) only move forward; a lead that is not hot
    expires after ``idle_ttl_ms`` without a write (0: never). Returns the ids of the
    leads whose compare-and-set lost (reload and retry those). Raises
    :class:`~streams.live.interfaces.StoreRolledBack`, having written nothing, when a
    stored mark is behind what the caller knows was applied."""
    if not writes and not applied_marks:
        return []
    keys: list[str] = [outbox_index, applied_key, meta_key]
    args: list[Any] = [idle_ttl_ms, len(applied_marks)]
    for stream, (offset, known) in applied_marks.items():
        args += [stream, offset, known]
    for w in writes:
        keys.append(w.keys.state)
        args += [w.expected_version, w.state, len(w.crossings)]
        if w.crossings:
            keys.append(w.keys.outbox)
            args.append(w.keys.lead_id)
            for crossing in w.crossings:
                args += [crossing.event_id, orjson.dumps(crossing_to_dict(crossing))]
    results: Any = await client.register_script(SAVE_LEADS_SCRIPT)(keys=keys, args=args)
    if results and int(results[0]) == -2:
        marks = results[1:]
        raise StoreRolledBack(
            {_text(s): int(m) for s, m in zip(marks[0::2], marks[1::2], strict=True)}
        )
    return [w.keys.lead_id for w, r in zip(writes, results, strict=True) if int(r) < 0]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def write_indexes(
    client: Redis,
    keys: tuple[str, str, str],
    landmark: int,
    rank: tuple[Mapping[str, float], Sequence[str]],
    cool_due: tuple[Mapping[str, int], Sequence[str]],
) -> bool:
    """Run :data:`WRITE_INDEXES_SCRIPT` (``keys``: rank index, cool-due index, meta);
    False when the store's landmark is no longer ``landmark`` (nothing written)."""
    args: list[Any] = [landmark]
    for entries, removals in (rank, cool_due):
        args.append(len(entries))
        for member, score in entries.items():
            args += [score, member]
        args.append(len(removals))
        args += removals
    done: Any = await client.register_script(WRITE_INDEXES_SCRIPT)(keys=list(keys), args=args)
    return int(done) == 1


async def register_names(client: Redis, names_key: str, names: Sequence[str]) -> dict[str, int]:
    """Run :data:`REGISTER_NAMES_SCRIPT`: the numbers of ``names``, new ones given."""
    if not names:
        return {}
    numbers: Any = await client.register_script(REGISTER_NAMES_SCRIPT)(
        keys=[names_key], args=list(names)
    )
    return {name: int(n) for name, n in zip(names, numbers, strict=True)}


async def convert_lead(
    client: Redis, state_key: str, seen_key: str, old_version: bytes, state: bytes
) -> bool:
    """Run :data:`CONVERT_LEAD_SCRIPT`; False when the lead was converted or rewritten
    meanwhile."""
    done: Any = await client.register_script(CONVERT_LEAD_SCRIPT)(
        keys=[state_key, seen_key], args=[old_version, state]
    )
    return int(done) == 1
