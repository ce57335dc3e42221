"""Redis lead store: the live worker's source of truth.

Same math as the memory store (:func:`scoring.state_machine.apply_lead_events`,
:func:`scoring.state_machine.advance`); this module only loads and saves states, atomically per
lead, so that a crash at any point neither loses nor double-counts an event.

Key layout (``P`` = the configured key prefix, default ``leadscore:``; ``{T}`` = the lead's
hash tag: the lead id, or ``h:<sha1>`` when the id itself contains a brace). All keys of
one lead share the tag, so they live in one Redis Cluster slot and one Lua script can
update them together:

====================== ====== ======================================================
key                    type   content
====================== ====== ======================================================
``P lead:{T}``         hash   ``v``: version (CAS counter), ``s``: state JSON
                              (:meth:`scoring.state.LeadState.to_dict`), including the
                              last applied offset per ``topic:partition``
``P lead:{T}:seen``    set    event ids applied to the lead (duplicates are skipped)
``P lead:{T}:outbox``  hash   crossing id -> crossing JSON, written atomically with the
                              state, deleted once produced to Kafka (transactional outbox)
``P idx:outbox``       set    lead ids that may have undelivered outbox entries
``P idx:cool-due``     zset   hot lead id -> millisecond it cools if nothing happens
                              (the cooling sweep reads the due ones, no scan)
``P idx:rank:<h>``     zset   lead id -> forward-decayed positive score of the lead's
                              rules with half-life ``h`` ms, against ``P meta.landmark``
``P meta``             hash   ``landmark``: landmark (ms) of the rank indexes
====================== ====== ======================================================

The ``idx:*`` keys are global (other slots), so they are written after the per-lead
script, with idempotent commands (ZADD/ZREM/SADD set absolute values): if a crash falls in
between, the redelivered events (now duplicates) rewrite the same index entries.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from scoring.crossings import Crossing, crossing_from_dict, crossing_to_dict
from scoring.rules import RuleSet
from scoring.state import LeadState, Position
from scoring.state_machine import (
    LeadBatch,
    advance,
    apply_lead_events,
    cool_due_ms,
    decay_to,
    group_by_lead,
    rank_values,
    score_at,
)
from scoring.store import BatchResult, EventItem

# KEYS[1] = P lead:{T}         (hash: v, s)
# KEYS[2] = P lead:{T}:seen    (set of applied event ids)
# KEYS[3] = P lead:{T}:outbox  (hash: crossing id -> crossing JSON)
# ARGV[1] = expected version ("0" for a lead not stored yet)
# ARGV[2] = new state JSON
# ARGV[3] = n, the number of applied event ids that follow
# ARGV[4 .. 3+n]   = applied event ids
# ARGV[4+n .. end] = outbox entries: crossing id, crossing JSON, ...
# Returns the new version, or -1 when the stored version is not the expected one (another
# writer got there first: reload and recompute).
CAS_SCRIPT = """
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

#: Re-base the rank indexes' landmark after this many half-lives (of the shortest rule):
#: keeps the stored forward-decayed values below 2**512, far from double overflow.
RANK_REBASE_AFTER_HALF_LIVES = 512.0
#: Leads per sweep round trip.
SWEEP_CHUNK = 500
#: Attempts for a lead whose compare-and-set keeps losing to another writer.
MAX_CAS_ATTEMPTS = 20


class StoreConflictError(RuntimeError):
    """A lead's compare-and-set failed too many times (two writers fighting over it)."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    state: LeadState | None
    version: int


class RedisStore:
    """:class:`scoring.store.LeadStore` on Redis. One instance per worker process."""

    def __init__(self, client: Redis, rules: RuleSet, prefix: str = "leadscore:") -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the Redis key prefix must not contain braces (hash tags)")
        # redis-py's asyncio reply annotations are unions of everything a reply could be;
        # the replies are checked where they are decoded instead.
        self.client: Any = client
        self.rules = rules
        self.prefix = prefix
        self._cas = client.register_script(CAS_SCRIPT)
        self._outbox_index = f"{prefix}idx:outbox"
        self._cool_due_index = f"{prefix}idx:cool-due"
        self._meta = f"{prefix}meta"
        self._half_lives = rules.half_lives_ms()
        self._rank_landmark: int | None = None

    # ------------------------------------------------------------------ keys
    def lead_key(self, lead_id: str) -> str:
        return f"{self.prefix}lead:{{{_hash_tag(lead_id)}}}"

    def rank_key(self, half_life_ms: int) -> str:
        return f"{self.prefix}idx:rank:{half_life_ms}"

    # ------------------------------------------------------------------ reads
    async def get(self, lead_id: str) -> LeadState | None:
        raw = await self.client.hget(self.lead_key(lead_id), "s")
        return None if raw is None else LeadState.from_dict(orjson.loads(raw))

    async def _load(
        self, lead_ids: Sequence[str], event_ids: dict[str, list[str]] | None = None
    ) -> tuple[dict[str, _Loaded], dict[str, set[str]]]:
        """One round trip: states (with versions) and which event ids were seen."""
        async with self.client.pipeline(transaction=False) as pipe:
            for lead_id in lead_ids:
                key = self.lead_key(lead_id)
                pipe.hmget(key, "v", "s")
                if event_ids is not None:
                    pipe.smismember(f"{key}:seen", event_ids[lead_id])
            replies = await pipe.execute()
        step = 1 if event_ids is None else 2
        loaded: dict[str, _Loaded] = {}
        seen: dict[str, set[str]] = {}
        for i, lead_id in enumerate(lead_ids):
            version, raw = replies[i * step]
            state = None if raw is None else LeadState.from_dict(orjson.loads(raw))
            loaded[lead_id] = _Loaded(state, int(version or 0))
            if event_ids is not None:
                flags = replies[i * step + 1]
                seen[lead_id] = {e for e, f in zip(event_ids[lead_id], flags, strict=True) if f}
        return loaded, seen

    # ------------------------------------------------------------------ writes
    async def apply_batch(self, items: Sequence[EventItem]) -> BatchResult:
        """Apply a batch: 1 round trip to load, 1 to write (per-lead CAS scripts), 1 for
        the indexes; more only for leads that lost a CAS race."""
        groups = group_by_lead(items)
        crossings: list[Crossing] = []
        applied = duplicates = 0
        pending = list(groups)
        for _attempt in range(MAX_CAS_ATTEMPTS):
            event_ids = {lead: [e.event_id for e, _ in groups[lead]] for lead in pending}
            loaded, seen = await self._load(pending, event_ids)
            results = {
                lead: apply_lead_events(loaded[lead].state, groups[lead], self.rules, seen[lead])
                for lead in pending
            }
            conflicts = await self._save(loaded, results)
            for lead, result in results.items():
                if lead in conflicts:
                    continue
                crossings.extend(result.crossings)
                applied += len(result.applied_event_ids)
                duplicates += result.duplicates
            if not conflicts:
                break
            pending = conflicts
        else:
            raise StoreConflictError(f"leads kept changing under us: {pending[:5]}")
        return BatchResult(tuple(crossings), applied, duplicates)

    async def _save(self, loaded: dict[str, _Loaded], results: dict[str, LeadBatch]) -> list[str]:
        """Write changed leads with the CAS script, then refresh the indexes of every lead
        in ``results`` (also unchanged ones: that repairs indexes after a crash). Returns
        the leads that lost a CAS race."""
        changed = [lead for lead, r in results.items() if r.applied_event_ids or r.crossings]
        conflicts: list[str] = []
        if changed:
            async with self.client.pipeline(transaction=False) as pipe:
                with_outputs = [lead for lead in changed if results[lead].crossings]
                if with_outputs:
                    # Before the state write: a crash right after it leaves the lead
                    # findable by the outbox relay.
                    pipe.sadd(self._outbox_index, *with_outputs)
                for lead in changed:
                    result = results[lead]
                    assert result.state is not None
                    key = self.lead_key(lead)
                    args: list[Any] = [
                        loaded[lead].version,
                        orjson.dumps(result.state.to_dict()),
                        len(result.applied_event_ids),
                        *result.applied_event_ids,
                    ]
                    for crossing in result.crossings:
                        args += [crossing.event_id, orjson.dumps(crossing_to_dict(crossing))]
                    await self._cas(
                        keys=[key, f"{key}:seen", f"{key}:outbox"], args=args, client=pipe
                    )
                replies = await pipe.execute()
            versions = replies[1:] if with_outputs else replies
            conflicts = [lead for lead, v in zip(changed, versions, strict=True) if int(v) < 0]
        states = [r.state for lead, r in results.items() if lead not in conflicts]
        await self._update_indexes([s for s in states if s is not None])
        return conflicts

    async def _update_indexes(self, states: Iterable[LeadState]) -> None:
        states = list(states)
        if not states:
            return
        landmark = await self._rank_landmark_for(max(s.clock_ms for s in states))
        async with self.client.pipeline(transaction=False) as pipe:
            due_add: dict[str, int] = {}
            due_remove: list[str] = []
            rank_add: dict[int, dict[str, float]] = {h: {} for h in self._half_lives}
            rank_remove: dict[int, list[str]] = {h: [] for h in self._half_lives}
            for state in states:
                due = cool_due_ms(state, self.rules)
                if due is None:
                    due_remove.append(state.lead_id)
                else:
                    due_add[state.lead_id] = due
                ranks = dict.fromkeys(self._half_lives, 0.0)
                ranks.update(rank_values(state, self.rules, landmark))
                for h, value in ranks.items():
                    if value > 0:
                        rank_add[h][state.lead_id] = value
                    else:
                        rank_remove[h].append(state.lead_id)
            if due_add:
                pipe.zadd(self._cool_due_index, due_add)
            if due_remove:
                pipe.zrem(self._cool_due_index, *due_remove)
            for h in self._half_lives:
                if rank_add[h]:
                    pipe.zadd(self.rank_key(h), rank_add[h])
                if rank_remove[h]:
                    pipe.zrem(self.rank_key(h), *rank_remove[h])
            await pipe.execute()

    async def _rank_landmark_for(self, clock_ms: int) -> int:
        """The rank indexes' landmark, created on first use and re-based (all rank entries
        rewritten once) when ``clock_ms`` has run too far ahead of it."""
        if self._rank_landmark is None:
            await self.client.hsetnx(self._meta, "landmark", clock_ms)
            self._rank_landmark = int(await self.client.hget(self._meta, "landmark"))
        landmark = self._rank_landmark
        if (clock_ms - landmark) > RANK_REBASE_AFTER_HALF_LIVES * self._half_lives[0]:
            await self._rebase_rank(landmark, clock_ms)
            landmark = self._rank_landmark = clock_ms
        return landmark

    async def _rebase_rank(self, old: int, new: int) -> None:
        for h in self._half_lives:
            key = self.rank_key(h)
            cursor = 0
            while True:
                cursor, entries = await self.client.zscan(key, cursor, count=1000)
                if entries:
                    await self.client.zadd(key, {m: decay_to(s, old, new, h) for m, s in entries})
                if cursor == 0:
                    break
        await self.client.hset(self._meta, "landmark", new)

    # ------------------------------------------------------------------ outbox
    async def mark_delivered(self, crossings: Sequence[Crossing]) -> None:
        """Crossings were produced and acknowledged: drop them from the outbox, and drop a
        lead from the outbox index only once its outbox is empty (an older entry left by a
        crash must stay findable by the relay)."""
        if not crossings:
            return
        by_lead: dict[str, list[str]] = {}
        for c in crossings:
            by_lead.setdefault(c.lead_id, []).append(c.event_id)
        async with self.client.pipeline(transaction=False) as pipe:
            for lead, ids in by_lead.items():
                outbox = f"{self.lead_key(lead)}:outbox"
                pipe.hdel(outbox, *ids)
                pipe.hlen(outbox)
            replies = await pipe.execute()
        empty = [lead for lead, left in zip(by_lead, replies[1::2], strict=True) if left == 0]
        if empty:
            await self.client.srem(self._outbox_index, *empty)

    async def undelivered(self, limit: int = 1000) -> list[Crossing]:
        """Crossings written but not confirmed produced (a crash fell in between), oldest
        first. Leads whose outbox turns out empty are dropped from the outbox index."""
        leads = [
            m.decode() if isinstance(m, bytes) else m
            for m in await self.client.srandmember(self._outbox_index, limit)
        ]
        if not leads:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for lead in leads:
                pipe.hvals(f"{self.lead_key(lead)}:outbox")
            replies = await pipe.execute()
        crossings = [crossing_from_dict(orjson.loads(v)) for vals in replies for v in vals]
        empty = [lead for lead, vals in zip(leads, replies, strict=True) if not vals]
        if empty:
            await self.client.srem(self._outbox_index, *empty)
        return sorted(crossings, key=lambda c: (c.occurred_at_ms, c.lead_id))

    # ------------------------------------------------------------------ cooling sweep
    async def cool_due(
        self, until_ms: int, limit_for: Callable[[LeadState], int | None] | None = None
    ) -> BatchResult:
        """Cool every hot lead whose score decayed below ``cool`` by ``until_ms``: found
        through the ``idx:cool-due`` index (no scan of all leads). ``limit_for(state)``
        may hold a lead back: it returns the time up to which that lead may be cooled now
        (None: not at all, e.g. its partition belongs to another worker); held-back leads
        stay in the index for the next sweep."""
        crossings: list[Crossing] = []
        offset = 0  # due entries left in the index (held back or not cooled) so far
        while True:
            raw = await self.client.zrangebyscore(
                self._cool_due_index, "-inf", until_ms, start=offset, num=SWEEP_CHUNK
            )
            lead_ids = _texts(raw)
            if not lead_ids:
                break
            for _attempt in range(MAX_CAS_ATTEMPTS):
                loaded, _ = await self._load(lead_ids)
                results: dict[str, LeadBatch] = {}
                missing: list[str] = []
                for lead, item in loaded.items():
                    if item.state is None:
                        missing.append(lead)
                        continue
                    to_ms = until_ms if limit_for is None else limit_for(item.state)
                    if to_ms is None:
                        continue
                    step = advance(item.state, self.rules, min(to_ms, until_ms))
                    results[lead] = LeadBatch(step.state, step.crossings, (), 0)
                if missing:
                    await self.client.zrem(self._cool_due_index, *missing)
                conflicts = await self._save(loaded, results)
                crossings.extend(
                    c for lead, r in results.items() if lead not in conflicts for c in r.crossings
                )
                if not conflicts:
                    break
                lead_ids = conflicts
            else:
                raise StoreConflictError(f"leads kept changing under us: {lead_ids[:5]}")
            cooled = {c.lead_id for c in crossings}
            offset += sum(1 for lead in _texts(raw) if lead not in cooled and lead not in missing)
            if len(raw) < SWEEP_CHUNK:
                break
        crossings.sort(key=lambda c: (c.occurred_at_ms, c.lead_id))
        return BatchResult(tuple(crossings))

    # ------------------------------------------------------------------ ranking
    async def top(self, n: int, at_ms: int) -> list[tuple[str, float]]:
        """Exact top ``n`` by score at ``at_ms``, via the threshold algorithm (Fagin) over
        the per-half-life rank indexes: each holds an upper bound of its part of a lead's
        score, so reading them in descending order and scoring candidates exactly stops
        as soon as no unread lead can beat the ``n``-th best."""
        if n <= 0:
            return []
        landmark = self._rank_landmark
        if landmark is None:
            raw = await self.client.hget(self._meta, "landmark")
            if raw is None:
                return []
            landmark = self._rank_landmark = int(raw)
        chunk = max(n, 100)
        offsets = dict.fromkeys(self._half_lives, 0)
        last_bound = dict.fromkeys(self._half_lives, math.inf)
        exhausted: set[int] = set()
        best: list[tuple[float, str]] = []  # min-heap of the n best exact scores
        scored: set[str] = set()
        while len(exhausted) < len(self._half_lives):
            candidates: set[str] = set()
            for h in self._half_lives:
                if h in exhausted:
                    continue
                entries = await self.client.zrevrange(
                    self.rank_key(h), offsets[h], offsets[h] + chunk - 1, withscores=True
                )
                offsets[h] += len(entries)
                if len(entries) < chunk:
                    exhausted.add(h)
                last_bound[h] = float(entries[-1][1]) if entries else 0.0
                candidates.update(_texts(m for m, _ in entries))
            new = sorted(candidates - scored)
            if new:
                loaded, _ = await self._load(new)
                for lead in new:
                    scored.add(lead)
                    state = loaded[lead].state
                    if state is None:
                        continue
                    # score_at, like MemoryStore.top_sync: a lead is not rewound before
                    # its latest event (its score there is still bounded by the index).
                    score = score_at(state, self.rules, at_ms)
                    if len(best) < n:
                        heapq.heappush(best, (score, lead))
                    elif score > best[0][0]:
                        heapq.heapreplace(best, (score, lead))
            threshold = sum(
                0.0 if h in exhausted else decay_to(last_bound[h], landmark, at_ms, h)
                for h in self._half_lives
            )
            if len(best) == n and best[0][0] >= threshold:
                break
        return [(lead, score) for score, lead in sorted(best, key=lambda x: (-x[0], x[1]))]


def _texts(values: Any) -> list[str]:
    """Redis replies (bytes or str) as a list of str."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values or ()]


def _hash_tag(lead_id: str) -> str:
    if "{" in lead_id or "}" in lead_id:
        return "h:" + hashlib.sha1(lead_id.encode(), usedforsecurity=False).hexdigest()
    return lead_id


__all__ = ["CAS_SCRIPT", "Position", "RedisStore", "StoreConflictError"]
