"""The live store's Lua scripts: each a module constant (its KEYS and ARGV in a header
comment) with one typed wrapper that builds the arguments and reads the result. Key names
come from :mod:`streams.live.redis_keys`; the state bytes from
:mod:`streams.live.state_format`.

The save script takes a whole batch's leads in one call (one round trip, one command to
pack), so the store's cost does not grow with commands per lead. On a Redis Cluster a
script may only touch keys of the node it runs on: the cluster variants
(:data:`SAVE_NODE_LEADS_SCRIPT`, :data:`LOAD_NODE_STATES_SCRIPT`, one call per master node,
see :mod:`streams.live.redis_nodes`) take the lead keys in ARGV and carry the
``allow-cross-slot-keys`` flag; both save scripts share their per-lead body
(docs/architecture.md, "The live store")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from scoring.crossings import Crossing, crossing_to_dict

from .interfaces import StoreRolledBack
from .redis_index import WRITE_INDEXES_SCRIPT
from .redis_keys import LeadKeys, text

_SAVE_LEADS_BODY = """
local behind = {}
local unknown = {}
for j = 3, 2 + 3 * k, 3 do
  local known = tonumber(ARGV[j + 2])
  local stored = redis.call('HGET', KEYS[2], ARGV[j])
  if known >= 0 and not unmarked then
    if not stored then
      unknown[#unknown + 1] = ARGV[j]
    elseif tonumber(stored) < known then
      behind[#behind + 1] = ARGV[j]
      behind[#behind + 1] = tonumber(stored)
    end
  end
end
if #unknown > 0 and (missing_mark_is_loss or #behind > 0) then
  for _, stream in ipairs(unknown) do
    behind[#behind + 1] = stream
    behind[#behind + 1] = -1
  end
end
if #behind > 0 then
  table.insert(behind, 1, -2)
  return behind
end
local out = {}
local ttl_text, unidentified_text = string.match(ARGV[1], '^(%d+)/?(%d*)$')
local ttl = tonumber(ttl_text)
local unidentified_ttl = tonumber(unidentified_text) or 0
local key = 1
local previous_written = true
while a <= #ARGV do
  local expected, state, m = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local current = redis.call('GET', lead_key(key))
  local version = ''
  if current then version = string.sub(current, 2, 5) end
  local write
  if expected == '+' then
    write = previous_written
  elseif expected == '&' then
    write = previous_written and version == ''
  else
    write = version == expected
  end
  previous_written = write
  if not write then
    out[#out + 1] = -1
  elseif state == '=' then
    out[#out + 1] = 1
  else
    if state == '' then
      redis.call('DEL', lead_key(key))
    elseif string.byte(state, 22) % 2 == 0 and (ttl > 0 or unidentified_ttl > 0) then
      local expire = ttl
      local unidentified = math.floor(string.byte(state, 22) / 8) % 2 == 1
      if unidentified and unidentified_ttl > 0 and (expire == 0 or unidentified_ttl < expire) then
        expire = unidentified_ttl
      end
      if expire > 0 then
        redis.call('SET', lead_key(key), state, 'PX', expire)
      else
        redis.call('SET', lead_key(key), state)
      end
    else
      redis.call('SET', lead_key(key), state)
    end
    if m > 0 then
      redis.call('SADD', KEYS[1], ARGV[a + 3])
      local from, to = a + 4, a + 3 + 2 * m
      local j = from
      while j <= to do
        local last = math.min(j + 999, to)
        redis.call('HSET', lead_key(key + 1), unpack(ARGV, j, last))
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

SAVE_LEADS_SCRIPT = (
    """
-- Compare-and-set of a batch's changed leads in one call; per lead: its state and new
-- outbox entries at once, or nothing when its stored version moved. Then the batch's
-- "applied up to" marks. Nothing at all when a mark is behind what the caller knows was
-- applied: Redis lost writes (a rollback), and the caller must re-read from the marks.
-- KEYS[1] = P idx:outbox (set of leads that may have undelivered crossings)
-- KEYS[2] = P applied    (hash: topic:partition -> next offset)
-- KEYS[3] = P meta       (hash; exists once the store holds anything)
-- then per lead, in ARGV order: P lead:{T} (string: state), and only for a lead with
--   crossings, P lead:{T}:outbox (hash: crossing id -> crossing JSON)
-- ARGV[1] = TTL in ms for leads that are not hot ("0": none), optionally "/" and a TTL
--   for those of them without a profile (flag 8: unidentified); ARGV[2] = k; then k marks
--   (stream, next offset, offset the caller knows was applied or -1); then per lead:
--   expected version (state bytes 2-5, "" when not stored yet, "+": write only if the
--   lead before it was written; "&": only if it was and the key is not stored), new
--   state (byte 22: flags, 1 = hot; "": delete the key; "=": write nothing, only
--   compare), m, and when m > 0: the lead id and m (crossing id, crossing JSON) pairs
-- Returns, per entry: 1, or -1 when the stored version was not the expected one (another
-- writer got there first: reload and recompute that lead); or, after a rollback,
-- {-2, stream, stored mark (-1: none), ...} for each mark found behind and nothing written.
local k = tonumber(ARGV[2])
local a = 3 + 3 * k
local function lead_key(i) return KEYS[3 + i] end
-- No marks yet in a store that holds leads: written by a leadscore without marks.
local unmarked = redis.call('EXISTS', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[3]) == 1
local missing_mark_is_loss = true
"""
    + _SAVE_LEADS_BODY
)

SAVE_NODE_LEADS_SCRIPT = (
    """#!lua flags=allow-cross-slot-keys
-- SAVE_LEADS_SCRIPT for the leads of one Redis Cluster node, and that node's marks: on a
-- cluster a script may only touch keys of its own node, and declare keys of one slot, so
-- the lead keys come in ARGV (the flag lets it touch their slots on this node).
-- KEYS[1] = P idx:outbox:{nK} (this node's set of leads that may have undelivered crossings)
-- KEYS[2] = P applied:{nK}    (this node's marks; created, with a '#created' field, before
--                              its tag is registered, so missing means lost)
-- ARGV: as SAVE_LEADS_SCRIPT's, but after the k marks: n and the n lead keys (in the
--   order SAVE_LEADS_SCRIPT takes them in KEYS), then o and the marks keys of o older
--   tags of this node (merged when KEYS[2] is missing: the node's tag changed in a
--   resharding).
-- A mark missing for one stream is no information on a node that lost nothing (its first
-- batch of that stream, or another worker's stream); on a node that lost writes (a mark
-- behind, or its marks key gone under every tag) it is lost too: behind, at -1.
local k = tonumber(ARGV[2])
local at = 3 + 3 * k
local n = tonumber(ARGV[at])
local keys_at = at
local function lead_key(i) return ARGV[keys_at + i] end
local o = tonumber(ARGV[at + n + 1])
local a = at + n + 2 + o
local unmarked = false
local missing_mark_is_loss = false
if redis.call('EXISTS', KEYS[2]) == 0 then
  local found = false
  for j = at + n + 2, at + n + 1 + o do
    local old = redis.call('HGETALL', ARGV[j])
    for i = 1, #old, 2 do
      found = true
      local mark = tonumber(redis.call('HGET', KEYS[2], old[i]) or '-1')
      if tonumber(old[i + 1]) > mark then redis.call('HSET', KEYS[2], old[i], old[i + 1]) end
    end
  end
  missing_mark_is_loss = not found
end
"""
    + _SAVE_LEADS_BODY
)

SAVE_LEADS_AND_INDEXES_SCRIPT = f"""
-- One Redis (not a cluster): SAVE_LEADS_SCRIPT, then, only if it wrote every lead and
-- the leads indexed without a write of their own are still at the version they were
-- read at, WRITE_INDEXES_SCRIPT (streams/live/redis_index.py) for the batch's leads: a
-- batch's writes in one round trip. (On a cluster the indexes live on another node.)
-- KEYS    = SAVE_LEADS_SCRIPT's keys (s), the unchanged leads' state keys (c), then
--   WRITE_INDEXES_SCRIPT's
-- ARGV[1] = s; ARGV[2] = n, how many of ARGV are SAVE_LEADS_SCRIPT's; ARGV[3] = c; then
--   SAVE_LEADS_SCRIPT's n arguments; the c versions (bytes 2-5 of a state; '': none
--   stored) the unchanged leads were read at; then WRITE_INDEXES_SCRIPT's
-- Returns {{SAVE_LEADS_SCRIPT's reply, WRITE_INDEXES_SCRIPT's (1; 0: the landmark moved)
-- or -1 when it did not run (a lead lost its compare-and-set, a mark was behind, or an
-- unchanged lead was written by another writer since it was read)}}.
local function save_leads(KEYS, ARGV)
{SAVE_LEADS_SCRIPT}
end
local function write_indexes(KEYS, ARGV)
{WRITE_INDEXES_SCRIPT}
end
local function slice(t, from, to)
  local out = {{}}
  for i = from, to do out[#out + 1] = t[i] end
  return out
end
local s, n, c = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local saved = save_leads(slice(KEYS, 1, s), slice(ARGV, 4, 3 + n))
if saved[1] == -2 then return {{saved, -1}} end
for _, r in ipairs(saved) do
  if r ~= 1 then return {{saved, -1}} end
end
for i = 1, c do
  if redis.call('GETRANGE', KEYS[s + i], 1, 4) ~= ARGV[3 + n + i] then return {{saved, -1}} end
end
return {{saved, write_indexes(slice(KEYS, s + c + 1, #KEYS), slice(ARGV, 4 + n + c, #ARGV))}}
"""

LOAD_NODE_STATES_SCRIPT = """#!lua flags=allow-cross-slot-keys
-- The states of leads of one Redis Cluster node, in one call (MGET cannot span slots).
-- KEYS[1] = any key of this node (routes the call)
-- ARGV    = the state keys, P lead:{T}, of leads on this node
-- Returns their values in ARGV order (nil: not stored).
local out = {}
for i = 1, #ARGV do out[i] = redis.call('GET', ARGV[i]) end
return out
"""

#: Runs a script (body, KEYS, ARGV) on the one Redis Cluster node it is meant for.
RunOnNode = Callable[[str, Sequence[str], Sequence[Any]], Awaitable[Any]]

REGISTER_NAMES_SCRIPT = """
-- Give each name a number, once: an existing number is kept, a new name gets the next,
-- above ARGV[1] (on a Redis Cluster: the highest number in any node's copy, so that a
-- dictionary that rolled back on its node never gives a number in use again).
-- KEYS[1] = P names (hash: name -> number; '#next': the last number given)
-- ARGV    = the floor, then the names
-- Returns the numbers of the names, in ARGV order.
if tonumber(redis.call('HGET', KEYS[1], '#next') or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], '#next', ARGV[1])
end
local out = {}
for i = 2, #ARGV do
  local n = redis.call('HGET', KEYS[1], ARGV[i])
  if not n then
    n = redis.call('HINCRBY', KEYS[1], '#next', 1)
    redis.call('HSET', KEYS[1], ARGV[i], n)
  end
  out[i - 1] = tonumber(n)
end
return out
"""

MERGE_NAMES_SCRIPT = """
-- Put back names a rollback of the dictionary's node lost, from the nodes' copies.
-- KEYS[1] = P names; ARGV = (name, number) pairs
-- Returns the names whose stored number differs (never expected: numbers are not reused).
local clash = {}
for i = 1, #ARGV, 2 do
  local n = tonumber(ARGV[i + 1])
  if redis.call('HSETNX', KEYS[1], ARGV[i], n) == 0 then
    if tonumber(redis.call('HGET', KEYS[1], ARGV[i])) ~= n then clash[#clash + 1] = ARGV[i] end
  end
  if tonumber(redis.call('HGET', KEYS[1], '#next') or '0') < n then
    redis.call('HSET', KEYS[1], '#next', n)
  end
end
return clash
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


#: ``LeadWrite.expected_version`` of a write made only if the write before it in the same
#: call was (an erased lead's tombstone, after its lead key's delete: both or neither;
#: the two keys share a Cluster slot, so one script does both).
AFTER_PREVIOUS = b"+"
#: ``LeadWrite.expected_version`` of a write made only if the key is not stored and the
#: write before it was made (a lead without a state, after the check that its tombstone
#: did not move). (A version is 4 bytes, so it is never one of these markers.)
AND_PREVIOUS = b"&"
#: ``LeadWrite.state`` of an entry that only compares the version (a tombstone's).
CHECK_ONLY = b"="


@dataclass(frozen=True, slots=True)
class LeadWrite:
    """One lead's new state, to be written only if its stored version is still
    ``expected_version`` (the 4 version bytes read; ``b""``: not stored; or
    :data:`AFTER_PREVIOUS` or :data:`AND_PREVIOUS`). An empty ``state``
    deletes the key (an erased lead); :data:`CHECK_ONLY` writes nothing."""

    keys: LeadKeys
    expected_version: bytes
    state: bytes
    crossings: Sequence[Crossing]


def _save_arguments(
    writes: Sequence[LeadWrite], applied_marks: Mapping[str, tuple[int, int]], idle_ttl: int | str
) -> tuple[list[str], list[Any], list[Any]]:
    """The lead keys, the marks' arguments and the leads' arguments of a save script call
    (its ARGV is marks + [what the variant adds] + leads)."""
    lead_keys: list[str] = []
    marks: list[Any] = [idle_ttl, len(applied_marks)]
    for stream, (offset, known) in applied_marks.items():
        marks += [stream, offset, known]
    leads: list[Any] = []
    for w in writes:
        lead_keys.append(w.keys.state)
        leads += [w.expected_version, w.state, len(w.crossings)]
        if w.crossings:
            lead_keys.append(w.keys.outbox)
            leads.append(w.keys.lead_id)
            for crossing in w.crossings:
                leads += [crossing.event_id, orjson.dumps(crossing_to_dict(crossing))]
    return lead_keys, marks, leads


def _lost_leads(writes: Sequence[LeadWrite], results: Any) -> list[str]:
    """The ids of the leads whose compare-and-set lost, from a save script's reply; raises
    :class:`~streams.live.interfaces.StoreRolledBack` when the reply says a mark was behind."""
    if results and int(results[0]) == -2:
        marks = results[1:]
        raise StoreRolledBack(
            {text(s): int(m) for s, m in zip(marks[0::2], marks[1::2], strict=True)}
        )
    return [w.keys.lead_id for w, r in zip(writes, results, strict=True) if int(r) < 0]


async def compare_and_set_leads(
    client: Redis,
    writes: Sequence[LeadWrite],
    *,
    outbox_index: str,
    applied_key: str,
    meta_key: str,
    applied_marks: Mapping[str, tuple[int, int]],
    idle_ttl_ms: int | str = 0,
    index: tuple[Sequence[str], Sequence[Any]] | None = None,
    unchanged: Sequence[tuple[str, bytes]] = (),
) -> tuple[list[str], bool]:
    """Run :data:`SAVE_LEADS_SCRIPT` for all ``writes`` in one round trip. A lead whose
    crossings are written joins ``outbox_index`` in the same atomic step, so the outbox
    relay finds it after any crash; ``applied_marks`` (stream -> (next offset, the offset
    the caller knows was applied or -1)) only move forward; a lead that is not hot
    expires after ``idle_ttl_ms`` without a write (0: never). With ``index`` (KEYS and
    ARGV of ``WRITE_INDEXES_SCRIPT``, :meth:`LeadIndexes.arguments`), that index write
    runs in the same call if every lead was written and every ``unchanged`` lead (state
    key, the version it was read at) still has that version
    (:data:`SAVE_LEADS_AND_INDEXES_SCRIPT`). Returns the ids of the leads whose
    compare-and-set lost (reload and retry those), and whether the indexes were written.
    Raises :class:`~streams.live.interfaces.StoreRolledBack`, having written nothing,
    when a stored mark is behind what the caller knows was applied."""
    if not writes and not applied_marks and index is None:
        return [], False
    lead_keys, marks, leads = _save_arguments(writes, applied_marks, idle_ttl_ms)
    keys = [outbox_index, applied_key, meta_key, *lead_keys]
    if index is None:
        results: Any = await client.register_script(SAVE_LEADS_SCRIPT)(
            keys=keys, args=marks + leads
        )
        return _lost_leads(writes, results), False
    checked = [key for key, _ in unchanged]
    args = [len(keys), len(marks) + len(leads), len(checked), *marks, *leads]
    args += [version for _, version in unchanged]
    script = client.register_script(SAVE_LEADS_AND_INDEXES_SCRIPT)
    saved, indexed = await script(keys=[*keys, *checked, *index[0]], args=[*args, *index[1]])
    return _lost_leads(writes, saved), int(indexed) == 1


@dataclass(frozen=True, slots=True)
class NodeMarks:
    """The marks keys of one Redis Cluster node (:data:`SAVE_NODE_LEADS_SCRIPT`)."""

    #: ``P idx:outbox:{nK}`` and ``P applied:{nK}`` of the node's tag
    outbox_index: str
    applied: str
    #: marks keys of the node's older tags (merged when ``applied`` is missing)
    older: Sequence[str]


async def compare_and_set_node_leads(
    run: RunOnNode,
    writes: Sequence[LeadWrite],
    node: NodeMarks,
    *,
    applied_marks: Mapping[str, tuple[int, int]],
    idle_ttl_ms: int | str = 0,
) -> list[str]:
    """:func:`compare_and_set_leads` for the leads of one cluster node, run by ``run``
    (routes the script to the node); the node's marks are written even with no leads."""
    lead_keys, marks, leads = _save_arguments(writes, applied_marks, idle_ttl_ms)
    node_args = [len(lead_keys), *lead_keys, len(node.older)]
    args = marks + node_args + list(node.older) + leads
    results = await run(SAVE_NODE_LEADS_SCRIPT, [node.outbox_index, node.applied], args)
    return _lost_leads(writes, results)


async def load_node_states(run: RunOnNode, anchor: str, keys: Sequence[LeadKeys]) -> list[Any]:
    """:func:`load_states` for leads of one cluster node (``anchor``: any key of it)."""
    if not keys:
        return []
    found: Any = await run(LOAD_NODE_STATES_SCRIPT, [anchor], [k.state for k in keys])
    return list(found)


async def register_names(
    client: Redis, names_key: str, names: Sequence[str], floor: int = 0
) -> dict[str, int]:
    """Run :data:`REGISTER_NAMES_SCRIPT`: the numbers of ``names``, new ones given above
    ``floor``."""
    if not names:
        return {}
    numbers: Any = await client.register_script(REGISTER_NAMES_SCRIPT)(
        keys=[names_key], args=[floor, *names]
    )
    return {name: int(n) for name, n in zip(names, numbers, strict=True)}


async def merge_names(client: Redis, names_key: str, numbers: Mapping[str, int]) -> list[str]:
    """Run :data:`MERGE_NAMES_SCRIPT`; returns the names that clash (none expected)."""
    if not numbers:
        return []
    args = [x for pair in numbers.items() for x in pair]
    clash: Any = await client.register_script(MERGE_NAMES_SCRIPT)(keys=[names_key], args=args)
    return [text(c) for c in clash]


async def convert_lead(
    client: Redis, state_key: str, seen_key: str, old_version: bytes, state: bytes
) -> bool:
    """Run :data:`CONVERT_LEAD_SCRIPT`; False when the lead was converted or rewritten
    meanwhile."""
    done: Any = await client.register_script(CONVERT_LEAD_SCRIPT)(
        keys=[state_key, seen_key], args=[old_version, state]
    )
    return int(done) == 1
