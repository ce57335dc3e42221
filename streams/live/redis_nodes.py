"""Where the live store's lead writes go: one standalone Redis, or the master nodes of a
Redis Cluster. Both give :class:`streams.live.redis_store.RedisStore` the same few calls
(load states, save a batch with its "applied up to" marks, the outbox index), so the store
itself is the same on both.

* :class:`StandaloneNodes`: one round trip per step, one script for the whole batch
  (:data:`~streams.live.redis_scripts.SAVE_LEADS_SCRIPT`).
* :class:`ClusterNodes`: the same per master node, all nodes at once. A script may only
  touch keys of the node it runs on, so leads are grouped by node and each node gets one
  :data:`~streams.live.redis_scripts.SAVE_NODE_LEADS_SCRIPT` call with its leads *and* the
  batch's marks, every batch, leads or not. A node writes in order (its AOF and its
  replicas keep that order), so a node that rolls back loses a suffix of its writes: if
  its marks survived, the states written with them did too, and a node whose marks are
  behind what was applied is one that lost writes. Each node's marks and outbox index
  live under its *node tag*, ``n<K>`` for the first ``K`` whose slot that node serves;
  every tag used is kept in ``P {global}:nodes``, so that after a resharding moves a
  node's tag elsewhere, its old marks are merged into the new ones and its old outbox
  index is still relayed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import redis.exceptions

from .interfaces import StoreRolledBack
from .redis_keys import KeySpace, LeadKeys, text, texts
from .redis_scripts import (
    LeadWrite,
    NodeMarks,
    compare_and_set_leads,
    compare_and_set_node_leads,
    load_node_states,
    load_states,
)

#: What one node's outbox index holds: (index key, lead id).
OutboxEntry = tuple[str, str]


class TopologyChangedError(RuntimeError):
    """A cluster node no longer serves a key we sent it (a resharding or a failover is
    under way): the slot map is refreshed, and the batch is tried again (transient)."""


#: Replies of a cluster node that mean "not mine (any more)".
_MOVED = ("non local key", "slot", "MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


class StandaloneNodes:
    """One Redis: every step one command or script on it."""

    def __init__(self, client: Any, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys

    def forget(self) -> None:
        """Nothing cached (see :meth:`ClusterNodes.forget`)."""

    async def load(self, keys: Sequence[LeadKeys]) -> list[bytes | None]:
        return await load_states(self.client, keys)

    async def save(
        self, writes: Sequence[LeadWrite], marks: Mapping[str, tuple[int, int]], ttl_ms: int | str
    ) -> list[str]:
        return (await self.save_and_index(writes, marks, ttl_ms, None))[0]

    async def save_and_index(
        self,
        writes: Sequence[LeadWrite],
        marks: Mapping[str, tuple[int, int]],
        ttl_ms: int | str,
        index: tuple[Sequence[str], Sequence[Any]] | None,
        unchanged: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[list[str], bool]:
        """:meth:`save`, and the index write ``index`` in the same call if every lead
        was written and the ``unchanged`` leads (state key, version read) were not
        (one Redis holds the indexes too): the leads that lost, and whether the indexes
        were written."""
        return await compare_and_set_leads(
            self.client,
            writes,
            outbox_index=self.keys.outbox_index,
            applied_key=self.keys.applied,
            meta_key=self.keys.meta,
            applied_marks=marks,
            idle_ttl_ms=ttl_ms,
            index=index,
            unchanged=unchanged,
        )

    async def outbox_leads(self, limit: int) -> list[OutboxEntry]:
        index = self.keys.outbox_index
        return [(index, lead) for lead in texts(await self.client.srandmember(index, limit))]

    def outbox_index_of(self, lead_id: str) -> str:
        return self.keys.outbox_index

    async def name_copies(self) -> list[dict[str, int]]:
        """The nodes' copies of the name dictionary (one Redis: none, the dictionary
        rolls back with the states)."""
        return []

    async def copy_names(self, numbers: Mapping[str, int]) -> None:
        """Keep ``numbers`` on every node before states use them (one Redis: no need)."""

    async def each_node(self) -> list[tuple[str, Any]]:
        """(name, client) of each node, for per-node checks."""
        return [("redis", self.client)]


class ClusterNodes:
    """The master nodes of a Redis Cluster (``client``: a ``redis.asyncio.RedisCluster``)."""

    def __init__(self, client: Any, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys
        #: node tags this process saw registered (their marks keys were made first)
        self._registered: set[str] = set()
        #: every node tag ever used (``P {global}:nodes``), read once, then kept up to date
        self._all_tags: set[str] | None = None

    def forget(self) -> None:
        """After a rollback: re-read the registered tags (the registry may have lost some)."""
        self._registered.clear()
        self._all_tags = None

    # ------------------------------------------------------------------ topology
    async def _ready(self) -> None:
        """Learn the slot map if the client has not yet (it does so on its first command)."""
        await self.client.initialize()

    def _primaries(self) -> list[Any]:
        """The masters that serve slots (a master just added, before any slot moved to
        it, holds no keys of ours and gets no script: it could have no tag; redis-py
        lists only masters with slots today, this keeps it so)."""
        serving = {nodes[0].name for nodes in self.client.nodes_manager.slots_cache.values()}
        return [node for node in self.client.get_primaries() if node.name in serving]

    def _node_of(self, key: str) -> Any:
        return self.client.get_node_from_key(key)

    def _tags(self) -> dict[str, str]:
        """Node name -> its tag: the first ``n<K>`` whose slot it serves."""
        wanted = {node.name for node in self._primaries()}
        tags: dict[str, str] = {}
        for k in itertools.count():
            tag = f"n{k}"
            node = self._node_of(tag)
            if node.name in wanted and node.name not in tags:
                tags[node.name] = tag
                if len(tags) == len(wanted):
                    return tags
            if k > 1_000_000:
                raise TopologyChangedError("no tag found for every master node")
        raise AssertionError("unreachable")

    async def _marks_of(self, node: Any, tag: str) -> NodeMarks:
        if tag not in self._registered:
            # A tag is registered only once its marks key exists: from then on, a missing
            # marks key is a node that lost it (the script's rollback check).
            if not await self.client.sismember(self.keys.node_tags, tag):
                await self.client.hsetnx(self.keys.node_applied(tag), "#created", 1)
                await self.client.sadd(self.keys.node_tags, tag)
            self._registered.add(tag)
            self._all_tags = None
        if self._all_tags is None:
            self._all_tags = set(texts(await self.client.smembers(self.keys.node_tags)))
        older = sorted(
            self.keys.node_applied(t)
            for t in self._all_tags
            if t != tag and self._node_of(t).name == node.name
        )
        return NodeMarks(self.keys.node_outbox_index(tag), self.keys.node_applied(tag), older)

    async def _run(self, node: Any, body: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script on ``node`` (EVALSHA, loading it there first if needed)."""
        sha = _sha1(body)
        try:
            try:
                return await self.client.execute_command(
                    "EVALSHA", sha, len(keys), *keys, *args, target_nodes=node
                )
            except redis.exceptions.NoScriptError:
                await self.client.execute_command("SCRIPT LOAD", body, target_nodes=node)
                return await self.client.execute_command(
                    "EVALSHA", sha, len(keys), *keys, *args, target_nodes=node
                )
        except redis.exceptions.ResponseError as exc:
            if any(word in str(exc) for word in _MOVED):
                await self.client.nodes_manager.initialize()
                raise TopologyChangedError(f"{node.name}: {exc}") from exc
            raise

    def _by_node(self, keys: Sequence[str]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(self._node_of(key).name, []).append(i)
        return groups

    # ------------------------------------------------------------------ steps
    async def load(self, keys: Sequence[LeadKeys]) -> list[bytes | None]:
        if not keys:
            return []
        await self._ready()
        nodes = {node.name: node for node in self._primaries()}
        tags = self._tags()
        groups = self._by_node([k.state for k in keys])
        replies = await asyncio.gather(
            *(
                load_node_states(
                    functools.partial(self._run, nodes[name]),
                    self.keys.node_applied(tags[name]),
                    [keys[i] for i in indexes],
                )
                for name, indexes in groups.items()
            )
        )
        found: list[bytes | None] = [None] * len(keys)
        for indexes, values in zip(groups.values(), replies, strict=True):
            for i, value in zip(indexes, values, strict=True):
                found[i] = value
        return found

    async def save(
        self, writes: Sequence[LeadWrite], marks: Mapping[str, tuple[int, int]], ttl_ms: int | str
    ) -> list[str]:
        """Every master node's leads and the marks, one script per node, all at once.
        Nodes that found their marks behind write nothing and are reported together
        (:class:`StoreRolledBack`, the lowest mark per stream); the others are written."""
        if not writes and not marks:
            return []
        await self._ready()
        tags = self._tags()
        by_node = self._by_node([w.keys.state for w in writes])
        nodes = self._primaries()
        node_marks = [await self._marks_of(node, tags[node.name]) for node in nodes]

        async def save_on(node: Any, marks_keys: NodeMarks) -> list[str]:
            return await compare_and_set_node_leads(
                functools.partial(self._run, node),
                [writes[i] for i in by_node.get(node.name, ())],
                marks_keys,
                applied_marks=marks,
                idle_ttl_ms=ttl_ms,
            )

        results = await asyncio.gather(
            *(save_on(n, m) for n, m in zip(nodes, node_marks, strict=True)),
            return_exceptions=True,
        )
        behind: dict[str, int] = {}
        lost: list[str] = []
        for result in results:
            if isinstance(result, StoreRolledBack):
                for stream, mark in result.marks.items():
                    behind[stream] = min(mark, behind.get(stream, mark))
            elif isinstance(result, BaseException):
                raise result
            else:
                lost += result
        if behind:
            raise StoreRolledBack(behind)
        return lost

    async def save_and_index(
        self,
        writes: Sequence[LeadWrite],
        marks: Mapping[str, tuple[int, int]],
        ttl_ms: int | str,
        index: tuple[Sequence[str], Sequence[Any]] | None,
        unchanged: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[list[str], bool]:
        """:meth:`save`; never the index write (the indexes share one hash tag, on a node
        of their own, and a script runs on one node): False, the caller writes them."""
        return await self.save(writes, marks, ttl_ms), False

    async def outbox_leads(self, limit: int) -> list[OutboxEntry]:
        await self._ready()
        tags = texts(await self.client.smembers(self.keys.node_tags))
        entries: list[OutboxEntry] = []
        for tag in sorted(tags):
            index = self.keys.node_outbox_index(tag)
            members = await self.client.srandmember(index, limit - len(entries))
            entries += [(index, lead) for lead in texts(members)]
            if len(entries) >= limit:
                break
        return entries

    def outbox_index_of(self, lead_id: str) -> str:
        node = self._node_of(self.keys.lead(lead_id).state)
        return self.keys.node_outbox_index(self._tags()[node.name])

    async def name_copies(self) -> list[dict[str, int]]:
        """Every registered node tag's copy of the name dictionary."""
        await self._ready()
        copies = []
        for tag in sorted(texts(await self.client.smembers(self.keys.node_tags))):
            raw = await self.client.hgetall(self.keys.node_names(tag))
            copies.append({text(k): int(v) for k, v in raw.items()})
        return copies

    async def copy_names(self, numbers: Mapping[str, int]) -> None:
        """Write ``numbers`` into every master's copy, before any state there uses them:
        a node that rolls back loses copies and the states that used them together."""
        if not numbers:
            return
        await self._ready()
        tags = self._tags()
        for node in self._primaries():
            await self._marks_of(node, tags[node.name])  # registers the tag
            await self.client.hset(self.keys.node_names(tags[node.name]), mapping=numbers)

    async def each_node(self) -> list[tuple[str, Any]]:
        await self._ready()
        return [(node.name, _OnNode(self.client, node)) for node in self._primaries()]


class _OnNode:
    """The few commands the start-up checks send, aimed at one cluster node."""

    def __init__(self, client: Any, node: Any) -> None:
        self.client = client
        self.node = node

    async def config_get(self, name: str) -> Any:
        return await self.client.config_get(name, target_nodes=self.node)


@functools.cache
def _sha1(body: str) -> str:
    return hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()
