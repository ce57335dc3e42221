"""The identity stage's alias table in Redis (identity merges, :mod:`scoring.identity`):
``P alias:{S}:H`` -> the canonical lead a linked id joined (key layout:
:mod:`streams.live.redis_keys`). Written first-wins (``SET NX``), never changed after;
read in rounds, one per hop of a chain."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from scoring.identity import MAX_HOPS

from .redis_keys import KeySpace
from .redis_nodes import ClusterNodes, StandaloneNodes

#: Ids an erasure reads and deletes the aliases of per round trip.
FORGET_CHUNK = 500

#: KEYS[1] = an alias key; ARGV[1] = the lead it must lead to. Deletes it only then
#: (an id listed under a lead may have been aliased to another: first-wins).
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class AliasTable:
    """Aliases of one key prefix (standalone Redis or a cluster)."""

    def __init__(self, client: Any, keys: KeySpace, nodes: StandaloneNodes | ClusterNodes) -> None:
        self.client = client
        self.keys = keys
        self.nodes = nodes

    async def resolve(self, ids: Iterable[str]) -> dict[str, str]:
        """The aliases of ``ids`` and of the ids they point to (chains), at most
        :data:`~scoring.identity.MAX_HOPS` round trips (one when no id has an alias)."""
        found: dict[str, str] = {}
        asked: set[str] = set()
        todo = set(ids)
        for _ in range(MAX_HOPS):
            todo -= asked
            if not todo:
                break
            order = sorted(todo)
            asked.update(order)
            values = await self.nodes.load([self.keys.alias(lead) for lead in order])
            todo = set()
            for lead, value in zip(order, values, strict=True):
                if value is not None:
                    found[lead] = target = value.decode()
                    todo.add(target)
        return found

    async def write(self, writes: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """Write the aliases in order, each unless the id has one already (first wins),
        up to the first that loses. Returns those written, and the one that lost (id ->
        the alias that won) if any: the caller routes again on what is there now (the
        rest of the writes were planned on what lost)."""
        written: dict[str, str] = {}
        for lead, canonical in writes.items():
            key = self.keys.alias(lead).state
            # (first the way back, for an erasure: a stale entry there is harmless)
            await self.client.sadd(self.keys.aliases_of(canonical), lead)
            current: bytes | None = None
            for _ in range(3):  # (one deleted between the SET and the GET: set it again)
                if await self.client.set(key, canonical, nx=True):
                    break
                current = await self.client.get(key)
                if current is not None:
                    break
            if current is not None and current.decode() != canonical:
                return written, {lead: current.decode()}
            written[lead] = canonical
        return written, {}

    async def repair(self, repairs: Mapping[str, str]) -> None:
        """Delete the aliases that closed a cycle (:func:`scoring.identity.resolve`), each
        only if it still holds the value seen."""
        for lead, value in repairs.items():
            await self._delete_if(self.keys.alias(lead).state, value)

    async def forget(self, lead_id: str) -> int:
        """An erasure: delete every alias that leads to ``lead_id`` (through chains), and
        the sets that list them. Returns how many. Idempotent, crash-safe (an id leaves a
        set only once its alias is gone), in chunks of :data:`FORGET_CHUNK`."""
        deleted = 0
        todo = [lead_id]
        while todo:
            target = todo.pop()
            listed = self.keys.aliases_of(target)
            while members := await self.client.srandmember(listed, FORGET_CHUNK):
                for member in members:
                    alias = member.decode()
                    if await self._delete_if(self.keys.alias(alias).state, target):
                        deleted += 1
                        todo.append(alias)
                await self.client.srem(listed, *members)
        return deleted

    async def _delete_if(self, key: str, value: str) -> bool:
        return bool(await self.client.eval(_DELETE_IF, 1, key, value))

    async def get(self, lead_ids: Iterable[str]) -> dict[str, str]:
        """The direct aliases of ``lead_ids`` that have one (one round trip)."""
        order = list(lead_ids)
        values = await self.nodes.load([self.keys.alias(lead) for lead in order])
        return {lead: v.decode() for lead, v in zip(order, values, strict=True) if v is not None}
