"""The rank index of the live store (``P rank:<n>`` buckets, see
:mod:`streams.live.redis_index`): lead id -> rank score of ``Kernel.rank_bound`` against a
shared landmark (``P meta`` ``landmark``), and the exact top-N read from it
(``leadscore top``)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from scoring.rules import RuleSet
from scoring.state import LeadState
from scoring.state_machine import decay_to, index_values, score_at

from .redis_errors import IndexConflictError
from .redis_index import RANK_STEPS, LeadIndexes, rank_bound_of, rank_score
from .redis_keys import KeySpace

#: Re-base the rank index's landmark after this many of the longest half-lives: keeps
#: the stored bounds below 2**512, far from double overflow.
RANK_REBASE_AFTER_HALF_LIVES = 512.0
#: Buckets ``top`` reads at most per round trip.
TOP_BUCKETS_PER_READ = 64

#: An index's entries to set (lead -> score) and to remove.
Entries = tuple[dict[str, int], list[str]]
#: The landmark, then the rank index's and the cooling index's entries.
IndexEntries = tuple[int, Entries, Entries]
#: Loads leads' states (None: gone).
Load = Callable[[Sequence[str]], Awaitable[Mapping[str, LeadState | None]]]
#: Drops index entries of leads found gone (:meth:`RedisStore._drop_gone`).
DropGone = Callable[[Sequence[str]], Awaitable[None]]
#: Reads leads' stored versions (b"": no state stored), in order.
ReadVersions = Callable[[Sequence[str]], Awaitable[list[bytes]]]
#: Loads leads' states (tombstones for erased or retired leads) and stored versions.
LoadVersioned = Callable[[Sequence[str]], Awaitable[Mapping[str, tuple[LeadState | None, bytes]]]]
#: Rounds of :meth:`RankIndex.settle` at most.
SETTLE_ATTEMPTS = 20


class RankIndex:
    """The rank scores and their landmark. The landmark is cached per process; the index
    write checks it against the store's (a re-base by another worker makes it fail, and
    the scores are computed again), and :meth:`forget` drops the cache."""

    def __init__(self, client: Any, keys: KeySpace, rules: RuleSet, indexes: LeadIndexes) -> None:
        self.client = client
        self.keys = keys
        self.rules = rules
        self.indexes = indexes
        self.max_half_life = max(rules.half_lives_ms())
        self._landmark: int | None = None

    def forget(self) -> None:
        self._landmark = None

    async def write(self, states: Sequence[LeadState], entries: IndexEntries | None = None) -> None:
        """Write the leads' index entries (``entries`` if computed already, else
        :meth:`entries`), again while another worker keeps re-basing the landmark (the
        index script checks it)."""
        if not states:
            return
        for _attempt in range(3):
            landmark, rank, cool_due = entries or await self.entries(states)
            entries = None
            if await self.indexes.write(landmark, rank, cool_due):
                return
            self.forget()  # another worker re-based the landmark: bounds again
        raise IndexConflictError("the rank landmark kept moving under us")

    async def settle(
        self, indexed: Mapping[str, bytes], stored: ReadVersions, load: LoadVersioned
    ) -> None:
        """Make sure index entries written *after* their leads' save (a cluster; one
        Redis after a lost race) are not older than the leads: another writer (a zombie
        after a rebalance, another worker's sweep) may have saved a lead since, and its
        index write landed before ours. ``indexed``: lead -> the version its entries were
        computed from. Reads the versions back (one round trip, nothing decoded) and
        indexes again, from the stored state, each lead that moved on; until none did.
        Every writer does this after its own index write, so the last one to write a
        lead's entries wrote the stored state's (a later save indexes after itself)."""
        for _attempt in range(SETTLE_ATTEMPTS):
            leads = list(indexed)
            if not leads:
                return
            found = await stored(leads)
            moved = [lead for lead, v in zip(leads, found, strict=True) if v != indexed[lead]]
            if not moved:
                return
            current = await load(moved)
            states = [state for state, _ in current.values() if state is not None]
            await self.write(states)
            indexed = {lead: version for lead, (_, version) in current.items()}
        raise IndexConflictError(f"leads kept changing while indexed: {list(indexed)[:5]}")

    async def entries(self, states: Sequence[LeadState]) -> IndexEntries:
        """Each lead's entries, to set or remove, in the rank index (its bound against
        the landmark; none without positive points) and the cooling index (hot: when it
        cools), for the live store's index write; and the landmark."""
        landmark = await self.landmark_for(max(s.clock_ms for s in states))
        due_add: dict[str, int] = {}
        due_remove: list[str] = []
        rank_add: dict[str, int] = {}
        rank_remove: list[str] = []
        for state in states:
            due, bound = index_values(state, self.rules, landmark)
            if due is None:
                due_remove.append(state.lead_id)
            else:
                due_add[state.lead_id] = due
            if bound > 0:
                rank_add[state.lead_id] = rank_score(bound)
            else:
                rank_remove.append(state.lead_id)
        return landmark, (rank_add, rank_remove), (due_add, due_remove)

    async def landmark(self) -> int | None:
        """The store's landmark (None: nothing ranked yet)."""
        raw = await self.client.hget(self.keys.meta, "landmark")
        return None if raw is None else int(raw)

    async def landmark_for(self, clock_ms: int) -> int:
        """The landmark, created on first use and re-based (:meth:`rebase`) when
        ``clock_ms`` has run too far ahead of it."""
        if self._landmark is None:
            await self.client.hsetnx(self.keys.meta, "landmark", clock_ms)
            self._landmark = int(await self.client.hget(self.keys.meta, "landmark"))
        landmark = self._landmark
        if (clock_ms - landmark) > RANK_REBASE_AFTER_HALF_LIVES * self.max_half_life:
            await self.rebase(landmark, clock_ms)
            landmark = self._landmark
        return landmark

    async def rebase(self, old: int, new: int) -> bool:
        """Move the landmark from ``old`` to ``new`` (False: another worker moved it
        first; this process then reads where to). Every bound shrinks by
        ``2 ** ((new - old) / h)``: every score by that many steps, rounded down so that
        it stays an upper bound."""
        by = -math.floor(RANK_STEPS * (new - old) / self.max_half_life)
        done = await self.indexes.rebase(old, new, by)
        if done:
            self._landmark = new
        else:
            self._landmark = int(await self.client.hget(self.keys.meta, "landmark"))
        return done

    async def top(
        self, n: int, at_ms: int, load: Load, drop_gone: DropGone
    ) -> list[tuple[str, float]]:
        """Exact top ``n`` by score at ``at_ms``, via the threshold algorithm: every entry
        bounds its lead's score at any later time from above, and every bucket's summary
        bounds its entries, so reading the buckets in descending summary order, the
        entries of those read in descending order, and scoring candidates exactly stops
        as soon as no unread lead can beat the ``n``-th best. Entries whose lead is gone
        (idle-lead retention) are dropped on the way. A re-base (rare) meanwhile makes it
        read again."""
        if n <= 0:
            return []
        while True:
            landmark = await self.landmark()
            if landmark is None:
                return []
            best = await self._top(n, at_ms, load, drop_gone, landmark)
            if await self.landmark() == landmark:
                return best

    async def _top(
        self, n: int, at_ms: int, load: Load, drop_gone: DropGone, landmark: int
    ) -> list[tuple[str, float]]:
        h = self.max_half_life
        snapshot = await self.indexes.snapshot("rank")
        buckets = snapshot.buckets
        opened = 0
        seen: set[str] = set()
        candidates: list[tuple[float, str]] = []  # max-heap (negated scores) of unscored
        best: list[tuple[float, str]] = []  # min-heap of the n best (score, lead)
        chunk = max(n, 100)
        while True:
            # Unread leads are bounded by the next unopened bucket: open buckets until
            # the best candidate is at least that (or none is left).
            while opened < len(buckets) and (
                not candidates or -candidates[0][0] < buckets[opened][1]
            ):
                group = [b for b, _ in buckets[opened : opened + TOP_BUCKETS_PER_READ]]
                group = group[: max(1, (chunk + 39) // 40)]
                for entries in await self.indexes.read("rank", snapshot, group):
                    for lead, score in entries:
                        if lead not in seen:
                            seen.add(lead)
                            heapq.heappush(candidates, (-score, lead))
                opened += len(group)
            if not candidates:
                break
            leads = [heapq.heappop(candidates)[1] for _ in range(min(chunk, len(candidates)))]
            states = await load(leads)
            gone = [lead for lead in leads if states.get(lead) is None]
            for lead in leads:
                state = states.get(lead)
                if state is None:
                    continue
                # score_at, like MemoryStore.top_sync: a lead is not rewound before
                # its latest event (its score there is still bounded by the index).
                # Ties go to the larger lead id, as there (heapq.nlargest).
                entry = (score_at(state, self.rules, at_ms), lead)
                if len(best) < n:
                    heapq.heappush(best, entry)
                elif entry > best[0]:
                    heapq.heapreplace(best, entry)
            if gone:
                await drop_gone(gone)
            unread = max(
                -candidates[0][0] if candidates else -math.inf,
                buckets[opened][1] if opened < len(buckets) else -math.inf,
            )
            if unread == -math.inf:
                break
            threshold = decay_to(rank_bound_of(unread), landmark, at_ms, h)
            # (strictly: an unread lead at the threshold could tie and win on its id)
            if len(best) == n and best[0][0] > threshold:
                break
        return [(lead, score) for score, lead in sorted(best, reverse=True)]
