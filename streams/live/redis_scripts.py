"""The live store's Lua scripts: each a module constant (its KEYS and ARGV in a header
comment) with one typed wrapper that builds the arguments and reads the result. Key names
come from :mod:`streams.live.redis_keys`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from scoring.crossings import Crossing, crossing_to_dict
from scoring.state import LeadState

from .redis_keys import LeadKeys

LEAD_CAS_SCRIPT = """
-- Compare-and-set of one lead: state, applied event ids and new outbox entries at once.
-- KEYS[1] = P lead:{T}         (hash: v, s)
-- KEYS[2] = P lead:{T}:seen    (set of applied event ids)
-- KEYS[3] = P lead:{T}:outbox  (hash: crossing id -> crossing JSON)
-- ARGV[1] = expected version ("0" for a lead not stored yet)
-- ARGV[2] = new state JSON
-- ARGV[3] = n, the number of applied event ids that follow
-- ARGV[4 .. 3+n]   = applied event ids
-- ARGV[4+n .. end] = outbox entries: crossing id, crossing JSON, ...
-- Returns the new version, or -1 when the stored version is not the expected one (another
-- writer got there first: reload and recompute).
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if current ~= tonumber(ARGV[1]) then
  return -1
end
redis.call('HSET', KEYS[1], 'v', current + 1, 's', ARGV[2])
local n = tonumber(ARGV[3])
local i = 4
while i <= 3 + n do
  local last = math.min(i + 999, 3 + n)
  redis.call('SADD', KEYS[2], unpack(ARGV, i, last))
  i = last + 1
end
i = 4 + n
while i <= #ARGV do
  local last = math.min(i + 999, #ARGV)
  redis.call('HSET', KEYS[3], unpack(ARGV, i, last))
  i = last + 1
end
return current + 1
"""


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
    """Run :data:`LEAD_CAS_SCRIPT` for every write, in one round trip. Leads with crossings
    are first added to ``outbox_index`` (a global key, so outside the script; before it,
    so that a crash right after the script leaves them findable by the outbox relay).
    Returns the ids of the leads whose compare-and-set lost (reload and retry those)."""
    if not writes:
        return []
    script = client.register_script(LEAD_CAS_SCRIPT)
    with_outbox = [w.keys.lead_id for w in writes if w.crossings]
    pipe: Any  # redis-py's reply annotations are unions of everything a reply could be
    async with client.pipeline(transaction=False) as pipe:
        if with_outbox:
            pipe.sadd(outbox_index, *with_outbox)
        for w in writes:
            args: list[Any] = [
                w.expected_version,
                orjson.dumps(w.state.to_dict()),
                len(w.applied_event_ids),
                *w.applied_event_ids,
            ]
            for crossing in w.crossings:
                args += [crossing.event_id, orjson.dumps(crossing_to_dict(crossing))]
            await script(keys=[w.keys.state, w.keys.seen, w.keys.outbox], args=args, client=pipe)
        replies = await pipe.execute()
    versions = replies[1:] if with_outbox else replies
    return [w.keys.lead_id for w, v in zip(writes, versions, strict=True) if int(v) < 0]
