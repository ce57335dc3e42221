"""The transactional outbox in Redis: crossings (and identity merges' ``lead_absorbed``)
written with their lead's state (``P lead:{T}:outbox``, by the save script), dropped once
produced and acknowledged; what a crash left there is relayed at start and on every sweep.
Key layout: :mod:`streams.live.redis_keys`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from scoring.crossings import ABSORBED, ERASED, MERGED, Crossing, crossing_from_dict

from .redis_keys import KeySpace
from .redis_nodes import ClusterNodes, StandaloneNodes

#: Records that end a lead come after its crossings of the same millisecond.
_LAST = {MERGED: 1, ABSORBED: 1, ERASED: 2}


class Outbox:
    """The outboxes of one key prefix (standalone Redis or a cluster)."""

    def __init__(self, client: Any, keys: KeySpace, nodes: StandaloneNodes | ClusterNodes) -> None:
        self.client = client
        self.keys = keys
        self.nodes = nodes

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
        await self._drop_from_index([(self.nodes.outbox_index_of(x), x) for x in empty])

    async def undelivered(self, limit: int = 1000) -> list[Crossing]:
        """Crossings written but not confirmed produced (a crash fell in between), oldest
        first. Leads whose outbox turns out empty are dropped from the outbox index."""
        entries = await self.nodes.outbox_leads(limit)
        if not entries:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for _, lead in entries:
                pipe.hvals(self.keys.lead(lead).outbox)
            replies = await pipe.execute()
        crossings = [crossing_from_dict(orjson.loads(v)) for vals in replies for v in vals]
        await self._drop_from_index(
            [entry for entry, vals in zip(entries, replies, strict=True) if not vals]
        )
        # (at one time: a lead's crossings before its merge or erasure, which end it)
        return sorted(crossings, key=lambda c: (c.occurred_at_ms, c.lead_id, _LAST.get(c.kind, 0)))

    async def _drop_from_index(self, entries: Sequence[tuple[str, str]]) -> None:
        """Remove (index key, lead id) entries: leads whose outbox is empty."""
        by_index: dict[str, list[str]] = {}
        for index, lead in entries:
            by_index.setdefault(index, []).append(lead)
        for index, leads in by_index.items():
            await self.client.srem(index, *leads)
