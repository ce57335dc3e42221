"""Redis lead store: the live worker's source of truth.

Same math as the memory store (:func:`scoring.state_machine.apply_lead_events`,
:func:`scoring.state_machine.advance`); this module only loads and saves states, atomically per
lead (the batched compare-and-set script of :mod:`streams.live.redis_scripts`), so that a crash at
any point neither loses nor double-counts an event. Key layout: :mod:`streams.live.redis_keys`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
import redis.exceptions
from redis.asyncio import Redis

from scoring.crossings import Crossing, crossing_from_dict
from scoring.rules import RuleSet
from scoring.state import LeadState
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

from ..settings import Settings
from .redis_keys import KeySpace
from .redis_scripts import LeadWrite, compare_and_set_leads, load_leads

#: Re-base the rank indexes' landmark after this many half-lives (of the shortest rule):
#: keeps the stored forward-decayed values below 2**512, far from double overflow.
RANK_REBASE_AFTER_HALF_LIVES = 512.0
#: Leads per sweep round trip.
SWEEP_CHUNK = 500
#: Attempts for a lead whose compare-and-set keeps losing to another writer.
MAX_CAS_ATTEMPTS = 20


class StoreConflictError(RuntimeError):
    """A lead's compare-and-set failed too many times (two writers fighting over it)."""


#: Transient failures (see :meth:`RedisStore.is_transient`).
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    StoreConflictError,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class _Loaded:
    state: LeadState | None
    version: int


#: One compare-and-set round: load the given leads, return them and their new results.
_Step = Callable[[list[str]], Awaitable[tuple[dict[str, _Loaded], dict[str, LeadBatch]]]]


class RedisStore:
    """:class:`streams.live.interfaces.DurableStore` on Redis. One instance per worker
    process."""

    def __init__(self, client: Redis, rules: RuleSet, prefix: str = "leadscore:") -> None:
        # redis-py's asyncio reply annotations are unions of everything a reply could be;
        # the replies are checked where they are decoded instead.
        self.client: Any = client
        self.rules = rules
        self.keys = KeySpace(prefix)
        self._half_lives = rules.half_lives_ms()
        self._rank_landmark: int | None = None

    @classmethod
    def connect(cls, settings: Settings, rules: RuleSet) -> RedisStore:
        """A store on a new asyncio client for the settings (URL, password, key prefix);
        :meth:`aclose` closes it. Connects on first use."""
        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        kwargs: dict[str, Any] = {
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 30,
        }
        if password is not None:
            kwargs["password"] = password
        return cls(Redis.from_url(settings.redis_url, **kwargs), rules, settings.redis_key_prefix)

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()

    def is_transient(self, error: Exception) -> bool:
        """Redis unreachable, timing out or loading, or a lead fought over by two writers."""
        return isinstance(error, TRANSIENT_ERRORS)

    # ------------------------------------------------------------------ reads
    async def get(self, lead_id: str) -> LeadState | None:
        raw = await self.client.hget(self.keys.lead(lead_id).state, "s")
        return None if raw is None else LeadState.from_dict(orjson.loads(raw))

    async def _load(
        self, lead_ids: Sequence[str], event_ids: dict[str, list[str]] | None = None
    ) -> tuple[dict[str, _Loaded], dict[str, frozenset[str]]]:
        """One round trip (one script call): states (with versions) and which of
        ``event_ids`` each lead has already applied."""
        found = await load_leads(
            self.client,
            [
                (self.keys.lead(lead), () if event_ids is None else event_ids[lead])
                for lead in lead_ids
            ],
        )
        loaded: dict[str, _Loaded] = {}
        seen: dict[str, frozenset[str]] = {}
        for lead_id, lead in zip(lead_ids, found, strict=True):
            raw = lead.state_json
            state = None if raw is None else LeadState.from_dict(orjson.loads(raw))
            loaded[lead_id] = _Loaded(state, lead.version)
            seen[lead_id] = lead.seen
        return loaded, seen

    # ------------------------------------------------------------------ writes
    async def apply_batch(self, items: Sequence[EventItem]) -> BatchResult:
        """Apply a batch: 1 round trip to load, 1 to write (one script, a CAS per lead), 1 for
        the indexes; more only for leads that lost a CAS race."""
        groups = group_by_lead(items)
        written = await self._compare_and_set(list(groups), partial(self._apply_step, groups))
        return BatchResult(
            tuple(c for r in written.values() for c in r.crossings),
            sum(len(r.applied_event_ids) for r in written.values()),
            sum(r.duplicates for r in written.values()),
        )

    async def _apply_step(
        self, groups: dict[str, list[EventItem]], leads: list[str]
    ) -> tuple[dict[str, _Loaded], dict[str, LeadBatch]]:
        event_ids = {lead: [e.event_id for e, _ in groups[lead]] for lead in leads}
        loaded, seen = await self._load(leads, event_ids)
        return loaded, {
            lead: apply_lead_events(loaded[lead].state, groups[lead], self.rules, seen[lead])
            for lead in leads
        }

    async def _compare_and_set(self, lead_ids: Sequence[str], step: _Step) -> dict[str, LeadBatch]:
        """Run ``step`` (load leads, compute their new results) on ``lead_ids`` and save
        the results; again for the leads whose compare-and-set lost to another writer, up
        to :data:`MAX_CAS_ATTEMPTS` times. Returns the results saved, in order."""
        saved: dict[str, LeadBatch] = {}
        pending = list(lead_ids)
        for _attempt in range(MAX_CAS_ATTEMPTS):
            loaded, results = await step(pending)
            lost = await self._save(loaded, results)
            saved.update((lead, r) for lead, r in results.items() if lead not in lost)
            if not lost:
                return saved
            pending = [lead for lead in results if lead in lost]
        raise StoreConflictError(f"leads kept changing under us: {pending[:5]}")

    async def _save(self, loaded: dict[str, _Loaded], results: dict[str, LeadBatch]) -> set[str]:
        """Write changed leads with the CAS script, then refresh the indexes of every lead
        in ``results`` (also unchanged ones: that repairs indexes after a crash). Returns
        the leads that lost a CAS race."""
        writes: list[LeadWrite] = []
        for lead, r in results.items():
            if r.applied_event_ids or r.crossings:
                assert r.state is not None
                keys = self.keys.lead(lead)
                writes.append(
                    LeadWrite(keys, loaded[lead].version, r.state, r.applied_event_ids, r.crossings)
                )
        lost = set(
            await compare_and_set_leads(self.client, writes, outbox_index=self.keys.outbox_index)
        )
        states = [r.state for lead, r in results.items() if lead not in lost]
        await self._update_indexes([s for s in states if s is not None])
        return lost

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
                pipe.zadd(self.keys.cool_due_index, due_add)
            if due_remove:
                pipe.zrem(self.keys.cool_due_index, *due_remove)
            for h in self._half_lives:
                if rank_add[h]:
                    pipe.zadd(self.keys.rank_index(h), rank_add[h])
                if rank_remove[h]:
                    pipe.zrem(self.keys.rank_index(h), *rank_remove[h])
            await pipe.execute()

    async def _rank_landmark_for(self, clock_ms: int) -> int:
        """The rank indexes' landmark, created on first use and re-based (all rank entries
        rewritten once) when ``clock_ms`` has run too far ahead of it."""
        if self._rank_landmark is None:
            await self.client.hsetnx(self.keys.meta, "landmark", clock_ms)
            self._rank_landmark = int(await self.client.hget(self.keys.meta, "landmark"))
        landmark = self._rank_landmark
        if (clock_ms - landmark) > RANK_REBASE_AFTER_HALF_LIVES * self._half_lives[0]:
            await self._rebase_rank(landmark, clock_ms)
            landmark = self._rank_landmark = clock_ms
        return landmark

    async def _rebase_rank(self, old: int, new: int) -> None:
        for h in self._half_lives:
            key = self.keys.rank_index(h)
            cursor = 0
            while True:
                cursor, entries = await self.client.zscan(key, cursor, count=1000)
                if entries:
                    await self.client.zadd(key, {m: decay_to(s, old, new, h) for m, s in entries})
                if cursor == 0:
                    break
        await self.client.hset(self.keys.meta, "landmark", new)

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
                outbox = self.keys.lead(lead).outbox
                pipe.hdel(outbox, *ids)
                pipe.hlen(outbox)
            replies = await pipe.execute()
        empty = [lead for lead, left in zip(by_lead, replies[1::2], strict=True) if left == 0]
        if empty:
            await self.client.srem(self.keys.outbox_index, *empty)

    async def undelivered(self, limit: int = 1000) -> list[Crossing]:
        """Crossings written but not confirmed produced (a crash fell in between), oldest
        first. Leads whose outbox turns out empty are dropped from the outbox index."""
        leads = [
            m.decode() if isinstance(m, bytes) else m
            for m in await self.client.srandmember(self.keys.outbox_index, limit)
        ]
        if not leads:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for lead in leads:
                pipe.hvals(self.keys.lead(lead).outbox)
            replies = await pipe.execute()
        crossings = [crossing_from_dict(orjson.loads(v)) for vals in replies for v in vals]
        empty = [lead for lead, vals in zip(leads, replies, strict=True) if not vals]
        if empty:
            await self.client.srem(self.keys.outbox_index, *empty)
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
                self.keys.cool_due_index, "-inf", until_ms, start=offset, num=SWEEP_CHUNK
            )
            lead_ids = _texts(raw)
            if not lead_ids:
                break
            missing: set[str] = set()
            step = partial(self._cool_step, until_ms, limit_for, missing)
            written = await self._compare_and_set(lead_ids, step)
            crossings.extend(c for r in written.values() for c in r.crossings)
            cooled = {c.lead_id for c in crossings}
            offset += sum(1 for lead in lead_ids if lead not in cooled and lead not in missing)
            if len(raw) < SWEEP_CHUNK:
                break
        crossings.sort(key=lambda c: (c.occurred_at_ms, c.lead_id))
        return BatchResult(tuple(crossings))

    async def _cool_step(
        self,
        until_ms: int,
        limit_for: Callable[[LeadState], int | None] | None,
        missing: set[str],
        leads: list[str],
    ) -> tuple[dict[str, _Loaded], dict[str, LeadBatch]]:
        """Advance the leads to ``until_ms`` (or their limit); leads without a state are
        dropped from the index and added to ``missing``."""
        loaded, _ = await self._load(leads)
        results: dict[str, LeadBatch] = {}
        gone: list[str] = []
        for lead, item in loaded.items():
            if item.state is None:
                gone.append(lead)
                continue
            to_ms = until_ms if limit_for is None else limit_for(item.state)
            if to_ms is None:
                continue
            step = advance(item.state, self.rules, min(to_ms, until_ms))
            results[lead] = LeadBatch(step.state, step.crossings, (), 0)
        if gone:
            await self.client.zrem(self.keys.cool_due_index, *gone)
            missing.update(gone)
        return loaded, results

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
            raw = await self.client.hget(self.keys.meta, "landmark")
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
                    self.keys.rank_index(h), offsets[h], offsets[h] + chunk - 1, withscores=True
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
