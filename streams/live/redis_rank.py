"""The rank index of the live store (``P idx:rank``, see :mod:`streams.live.redis_keys`):
one zset, lead id -> ``Kernel.rank_bound`` against a shared landmark (``P meta``
``landmark``), and the exact top-N read from it (``leadscore top``)."""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from scoring.rules import RuleSet
from scoring.state import LeadState
from scoring.state_machine import decay_to, rank_bound, score_at

from .redis_keys import KeySpace

#: Re-base the rank index's landmark after this many of the longest half-lives: keeps
#: the stored bounds below 2**512, far from double overflow.
RANK_REBASE_AFTER_HALF_LIVES = 512.0

#: Loads leads' states (None: gone).
Load = Callable[[Sequence[str]], Awaitable[Mapping[str, LeadState | None]]]


class RankIndex:
    """``P idx:rank`` and its landmark. The landmark is cached per process; the index
    write checks it against the store's (a re-base by another worker makes it fail, and
    the bounds are computed again), and :meth:`forget` drops the cache."""

    def __init__(self, client: Any, keys: KeySpace, rules: RuleSet) -> None:
        self.client = client
        self.keys = keys
        self.rules = rules
        self.max_half_life = max(rules.half_lives_ms())
        self._landmark: int | None = None

    def forget(self) -> None:
        self._landmark = None

    async def entries(self, states: Sequence[LeadState]) -> tuple[int, dict[str, float], list[str]]:
        """The landmark, and what to ZADD and ZREM against it for ``states`` (a lead
        without positive points leaves the index)."""
        landmark = await self._landmark_for(max(s.clock_ms for s in states))
        add: dict[str, float] = {}
        remove: list[str] = []
        for state in states:
            bound = rank_bound(state, self.rules, landmark)
            if bound > 0:
                add[state.lead_id] = bound
            else:
                remove.append(state.lead_id)
        return landmark, add, remove

    async def _landmark_for(self, clock_ms: int) -> int:
        """The landmark, created on first use and re-based (all entries rewritten once)
        when ``clock_ms`` has run too far ahead of it."""
        if self._landmark is None:
            await self.client.hsetnx(self.keys.meta, "landmark", clock_ms)
            self._landmark = int(await self.client.hget(self.keys.meta, "landmark"))
        landmark = self._landmark
        if (clock_ms - landmark) > RANK_REBASE_AFTER_HALF_LIVES * self.max_half_life:
            await self._rebase(landmark, clock_ms)
            landmark = self._landmark = clock_ms
        return landmark

    async def _rebase(self, old: int, new: int) -> None:
        key, h = self.keys.rank_index, self.max_half_life
        cursor = 0
        while True:
            cursor, entries = await self.client.zscan(key, cursor, count=1000)
            if entries:
                await self.client.zadd(key, {m: decay_to(s, old, new, h) for m, s in entries})
            if cursor == 0:
                break
        await self.client.hset(self.keys.meta, "landmark", new)

    async def top(self, n: int, at_ms: int, load: Load) -> list[tuple[str, float]]:
        """Exact top ``n`` by score at ``at_ms``, via the threshold algorithm: every entry
        bounds its lead's score at any later time from above, so reading the index in
        descending order and scoring candidates exactly stops as soon as no unread lead
        can beat the ``n``-th best. Entries whose lead is gone (idle-lead retention) are
        dropped on the way."""
        if n <= 0:
            return []
        raw = await self.client.hget(self.keys.meta, "landmark")
        if raw is None:
            return []
        landmark = int(raw)
        chunk = max(n, 100)
        offset = 0
        best: list[tuple[float, str]] = []  # min-heap of the n best exact scores
        while True:
            entries = await self.client.zrevrange(
                self.keys.rank_index, offset, offset + chunk - 1, withscores=True
            )
            offset += len(entries)
            leads = texts(m for m, _ in entries)
            states = await load(leads) if leads else {}
            gone = [lead for lead in leads if states.get(lead) is None]
            for lead in leads:
                state = states.get(lead)
                if state is None:
                    continue
                # score_at, like MemoryStore.top_sync: a lead is not rewound before
                # its latest event (its score there is still bounded by the index).
                score = score_at(state, self.rules, at_ms)
                if len(best) < n:
                    heapq.heappush(best, (score, lead))
                elif score > best[0][0]:
                    heapq.heapreplace(best, (score, lead))
            if gone:
                await self.client.zrem(self.keys.rank_index, *gone)
                offset -= len(gone)
            if len(entries) < chunk:
                break
            threshold = decay_to(float(entries[-1][1]), landmark, at_ms, self.max_half_life)
            if len(best) == n and best[0][0] >= threshold:
                break
        return [(lead, score) for score, lead in sorted(best, key=lambda x: (-x[0], x[1]))]


def texts(values: Any) -> list[str]:
    """Redis replies (bytes or str) as a list of str."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values or ()]
