"""The live store's Lua scripts: each a module constant (its KEYS and ARGV in a header
comment) with one typed wrapper that builds the arguments and reads the result. Key names
come from :mod:`streams.live.redis_keys`.

Each script takes a whole batch's leads in one call (one round trip, one command to pack),
so the store's cost does not grow with commands per lead. That needs a standalone Redis:
on Redis Cluster a script may only touch keys of one slot, so a cluster store will call
the same scripts per slot (each lead's keys share a hash tag), pipelined per node."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from scoring.crossings import Crossing, crossing_to_dict
from scoring.state import LeadState

from .redis_keys import LeadKeys

LOAD_LEADS_SCRIPT = """
-- Load a batch's leads in one call: each lead's version and state, and which of the given
-- event ids it has already applied.
-- KEYS[2i-1] = P lead:{T_i}       (hash: v, s)
-- KEYS[2i]   = P lead:{T_i}:seen  (set of applied event ids)
-- ARGV = for each lead in KEYS order: n_i, then its n_i event ids
-- Returns, per lead: {version or nil, state JSON or nil, {0/1 per event id}}.
local out = {}
local a = 1
for k = 1, #KEYS, 2 do
  local vs = redis.call('HMGET', KEYS[k], 'v', 's')
  local n = tonumber(ARGV[a])
  local flags = {}
  local i = a + 1
  while i <= a + n do
    local last = math.min(i + 999, a + n)
    local got = redis.call('SMISMEMBER', KEYS[k + 1], unpack(ARGV, i, last))
    for _, f in ipairs(got) do flags[#flags + 1] = f end
    i = last + 1
  end
  out[#out + 1] = {vs[1], vs[2], flags}
  a = a + n + 1
end
return out
"""

SAVE_LEADS_SCRIPT = """
-- Compare-and-set of a batch's changed leads in one call; per lead: state, applied event
-- ids and new outbox entries at once, or nothing when its stored version moved.
-- KEYS[1]      = P idx:outbox        (set of leads that may have undelivered crossings)
-- KEYS[3i-1]   = P lead:{T_i}        (hash: v, s)
-- KEYS[3i]     = P lead:{T_i}:seen   (set of applied event ids)
-- KEYS[3i+1]   = P lead:{T_i}:outbox (hash: crossing id -> crossing JSON)
-- ARGV = for each lead in KEYS order: lead id, expected version ("0": not stored yet),
--        new state JSON, n, n applied event ids, m, m outbox entries (crossing id, JSON)
-- Returns, per lead: its new version, or -1 when the stored version was not the expected
-- one (another writer got there first: reload and recompute that lead).
local out = {}
local a = 1
for k = 2, #KEYS, 3 do
  local lead, expected, state = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
  local n = tonumber(ARGV[a + 3])
  local ids_from = a + 4
  local m = tonumber(ARGV[ids_from + n])
  local box_from = ids_from + n + 1
  local current = tonumber(redis.call('HGET', KEYS[k], 'v') or '0')
  if current ~= expected then
    out[#out + 1] = -1
  else
    redis.call('HSET', KEYS[k], 'v', current + 1, 's', state)
    local i = ids_from
    while i < ids_from + n do
      local last = math.min(i + 999, ids_from + n - 1)
      redis.call('SADD', KEYS[k + 1], unpack(ARGV, i, last))
      i = last + 1
    end
    if m > 0 then
      redis.call('SADD', KEYS[1], lead)
      i = box_from
      while i < box_from + 2 * m do
        local last = math.min(i + 999, box_from + 2 * m - 1)
        redis.call('HSET', KEYS[k + 2], unpack(ARGV, i, last))
        i = last + 1
      end
    end
    out[#out + 1] = current + 1
  end
  a = box_from + 2 * m
end
return out
"""


@dataclass(frozen=True, slots=True)
class LoadedLead:
    """A lead as :data:`LOAD_LEADS_SCRIPT` found it."""

    version: int
    state_json: bytes | None
    #: Of the event ids asked about, those the lead has already applied.
    seen: frozenset[str]


async def load_leads(
    client: Redis, leads: Sequence[tuple[LeadKeys, Sequence[str]]]
) -> list[LoadedLead]:
    """Run :data:`LOAD_LEADS_SCRIPT` for ``(keys, event ids to check)`` per lead: one
    round trip for the whole batch. Results in the order of ``leads``."""
    if not leads:
        return []
    keys: list[str] = []
    args: list[Any] = []
    for lead_keys, event_ids in leads:
        keys += [lead_keys.state, lead_keys.seen]
        args.append(len(event_ids))
        args += event_ids
    replies: Any = await client.register_script(LOAD_LEADS_SCRIPT)(keys=keys, args=args)
    out: list[LoadedLead] = []
    for (_, event_ids), (version, state, flags) in zip(leads, replies, strict=True):
        seen = frozenset(e for e, f in zip(event_ids, flags, strict=True) if f)
        out.append(LoadedLead(int(version or 0), state, seen))
    return out


@dataclass(frozen=True, slots=True)
class LeadWrite:
    """One lead's new state, to be written only if its stored version is still
    ``expected_version``."""

    keys: LeadKeys
    expected_version: int
    state: LeadState
    applied_event_ids: Sequence[str]
    crossings: Sequence[Crossing]


async def compare_and_set_leads(
    client: Redis, writes: Sequence[LeadWrite], *, outbox_index: str
) -> list[str]:
    """Run :data:`SAVE_LEADS_SCRIPT` for all ``writes`` in one round trip. A lead whose
    crossings are written joins ``outbox_index`` in the same atomic step, so the outbox
    relay finds it after any crash. Returns the ids of the leads whose compare-and-set lost
    (reload and retry those)."""
    if not writes:
        return []
    keys: list[str] = [outbox_index]
    args: list[Any] = []
    for w in writes:
        keys += [w.keys.state, w.keys.seen, w.keys.outbox]
        args += [
            w.keys.lead_id,
            w.expected_version,
            orjson.dumps(w.state.to_dict()),
            len(w.applied_event_ids),
            *w.applied_event_ids,
            len(w.crossings),
        ]
        for crossing in w.crossings:
            args += [crossing.event_id, orjson.dumps(crossing_to_dict(crossing))]
    versions: Any = await client.register_script(SAVE_LEADS_SCRIPT)(keys=keys, args=args)
    return [w.keys.lead_id for w, v in zip(writes, versions, strict=True) if int(v) < 0]
