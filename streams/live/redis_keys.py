"""The Redis key layout of the live store: every key name is built here, nowhere else.

``P`` = the configured key prefix (default ``leadscore:``); ``{T}`` = the lead's hash tag:
the lead id, or ``h:<sha1>`` when the id itself contains a brace. Both keys of one lead
share the tag, so they live in one Redis Cluster slot and one Lua script can update them
together. Store format 3 (docs/architecture.md, "The live store"):

======================= ====== =====================================================
key                     type   content
======================= ====== =====================================================
``P lead:{T}``          string the lead's state (:mod:`streams.live.state_format`):
                               scores by rule, last offset per partition, profile,
                               dedupe window, compare-and-set version; with a TTL
                               when idle-lead retention is on and the lead is not hot
``P lead:{T}:outbox``   hash   crossing id -> crossing JSON, written atomically with the
                               state, deleted once produced to Kafka (transactional
                               outbox); absent while nothing is undelivered
``P erased:{S}:H``      string an erased lead's tombstone (``leadscore erase``): the state
                               an erasure leaves (last offset per partition, the
                               erasure's time, the crossing count; nothing personal),
                               read when ``P lead:{T}`` is missing; ``H``: the first 32
                               hex digits of the lead id's SHA-256, ``S``: a tag of the
                               lead's own Cluster slot (written in one script with it)
``P alias:{S}:H``       string identity merges: the lead a linked id joined (its
                               canonical lead id), written first-wins (``SET NX``) by
                               the identity stage; ``S``, ``H`` as for ``erased:``
``P aliases:{T}``       set    identity merges: the ids aliased to the lead (written
                               before the alias), so that erasing it deletes them
``P idx:outbox``        set    lead ids that may have undelivered outbox entries
``P cool-due:<n>``      zset   bucket ``n`` of the cooling index: hot lead id ->
                               millisecond it cools if nothing happens (the cooling sweep
                               reads the due ones, no scan); :mod:`.redis_index`
``P cool-due:min``      zset   bucket -> at most its earliest due ms (which to open)
``P rank:<n>``          zset   bucket ``n`` of the rank index: lead id -> rank score
                               (``redis_index.rank_score`` of ``Kernel.rank_bound``)
                               against ``P meta`` ``landmark``: an upper bound of the
                               lead's score at any later time, for ``leadscore top``
``P rank:max``          zset   bucket -> at least its highest rank score
``P meta``              hash   ``format`` (3), ``landmark`` (ms) of the rank scores,
                               each index's linear hashing: ``rank:level``,
                               ``rank:split``, ``rank:count``, ``cool-due:…``
``P names``             hash   name -> number: the state format's dictionary of rule ids,
                               streams and profile fields; ``#next``: last number given
``P applied``           hash   ``topic:partition`` -> next offset after the last event
                               whose state is stored ("applied up to": what a Redis
                               rollback repair rewinds to)
======================= ====== =====================================================

On Redis Cluster (``LEADSCORE_REDIS_CLUSTER=true``) the lead keys are the same; the global
keys above carry one hash tag, ``P {global}:meta``, ``P {global}:rank:7`` and so on, so
the index script can update them together; and two keys are per master node instead of
global, under a *node tag* ``{nK}``: the first of ``n0, n1, ...`` whose slot that node serves
(:mod:`streams.live.redis_nodes`):

======================= ====== =====================================================
``P applied:{nK}``      hash   the "applied up to" marks, written on every node after
                               each batch's states there, in the same script
``P idx:outbox:{nK}``   set    the node's leads that may have undelivered crossings
``P names:{nK}``        hash   the node's copy of ``P names`` (name -> number), written
                               before any state of the node uses a new number: a
                               rollback of the dictionary's own node is repaired from
                               the copies
``P {global}:nodes``    set    every node tag ever used (the relay and the rollback
                               check read the old ones after a resharding)
======================= ====== =====================================================

The index keys are global (other slots). On one Redis the save script's call writes them
after the leads (``SAVE_LEADS_AND_INDEXES_SCRIPT``, only if every lead's compare-and-set
won); on a cluster, and after a lost compare-and-set, a call of their own follows the
save, with idempotent commands (ZADD/ZREM/SADD set absolute values): if a crash falls in
between, the redelivered events (now duplicates) rewrite the same index entries.

Format 1 (leadscore before the compact format) kept ``P lead:{T}`` as a hash (``v``,
``s``: state JSON), the applied event ids in a set ``P lead:{T}:seen`` and one rank index
per half-life, ``P idx:rank:<ms>``; :meth:`KeySpace.legacy_seen` and
:attr:`KeySpace.legacy_rank_pattern` name them for the one-time conversion. Format 2 kept
each index in one zset, ``P idx:rank`` (raw bounds) and ``P idx:cool-due``
(:attr:`KeySpace.legacy_rank_index`, :attr:`KeySpace.legacy_cool_due_index`), moved into
the buckets once by the same conversion.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS as SLOTS
from redis.crc import key_slot


@dataclass(frozen=True, slots=True)
class LeadKeys:
    """The keys of one lead (one hash tag, so one Cluster slot)."""

    lead_id: str
    #: string: the state (format 2)
    state: str
    #: hash: crossing id -> crossing JSON
    outbox: str


class KeySpace:
    """All key names under one prefix: per lead (:meth:`lead`) and the global ones."""

    def __init__(self, prefix: str = "leadscore:", *, cluster: bool = False) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the Redis key prefix must not contain braces (hash tags)")
        self.prefix = prefix
        self.cluster = cluster
        #: where the global keys start: on a cluster, one hash tag for all of them
        shared = f"{prefix}{{global}}:" if cluster else prefix
        #: set of lead ids that may have undelivered outbox entries (standalone)
        self.outbox_index = f"{shared}idx:outbox"
        #: the cooling index's buckets (+ number; zset: hot lead id -> due ms) and its
        #: summary (zset: bucket -> at most its earliest due ms), :mod:`.redis_index`
        self.cool_due_base = f"{shared}cool-due:"
        self.cool_due_min = f"{shared}cool-due:min"
        #: the rank index's buckets (+ number; zset: lead id -> rank score against
        #: ``meta.landmark``) and its summary (zset: bucket -> at least its highest score)
        self.rank_base = f"{shared}rank:"
        self.rank_max = f"{shared}rank:max"
        #: store format 2's unbucketed indexes (converted by :mod:`.redis_migrate`)
        self.legacy_cool_due_index = f"{shared}idx:cool-due"
        self.legacy_rank_index = f"{shared}idx:rank"
        #: hash: ``format``, ``landmark`` of the rank index
        self.meta = f"{shared}meta"
        #: hash: name -> number (the state format's dictionary)
        self.names = f"{shared}names"
        #: hash: ``topic:partition`` -> next offset after the last stored event (standalone)
        self.applied = f"{shared}applied"
        #: set: every node tag used (cluster)
        self.node_tags = f"{shared}nodes"
        #: SCAN pattern of the lead keys (state strings and outbox hashes)
        self.lead_pattern = f"{prefix}lead:*"
        #: SCAN pattern of format 1's per-half-life rank indexes
        self.legacy_rank_pattern = f"{prefix}idx:rank:*"
        #: lead id -> its keys, and its tombstone's, for the leads of recent batches
        self._leads: dict[str, LeadKeys] = {}
        self._tombstones: dict[str, LeadKeys] = {}

    def lead(self, lead_id: str) -> LeadKeys:
        keys = self._leads.get(lead_id)
        if keys is None:
            if len(self._leads) >= _LEAD_KEYS_CACHED:
                self._leads.clear()
            state = f"{self.prefix}lead:{{{_hash_tag(lead_id)}}}"
            keys = self._leads[lead_id] = LeadKeys(lead_id, state, f"{state}:outbox")
        return keys

    def tombstone(self, lead_id: str) -> LeadKeys:
        """Where an erased lead's tombstone is kept: ``P erased:{S}:<sha256>``, no lead id
        in the name, but in the lead's own Redis Cluster slot (``S``: a short tag that
        hashes to that slot, :func:`slot_tag`), so that the script deleting the lead key
        writes it in the same atomic call. As keys whose ``state`` is that key: it loads
        and saves like a state. Its outbox is never used. (Remembered like :meth:`lead`:
        every batch loads the tombstones of its leads with their states.)"""
        keys = self._tombstones.get(lead_id)
        if keys is None:
            if len(self._tombstones) >= _LEAD_KEYS_CACHED:
                self._tombstones.clear()
            slot = key_slot(_hash_tag(lead_id).encode())
            digest = hashlib.sha256(lead_id.encode()).hexdigest()[:32]
            key = f"{self.prefix}erased:{{{slot_tag(slot)}}}:{digest}"
            keys = self._tombstones[lead_id] = LeadKeys(lead_id, key, f"{key}:outbox")
        return keys

    def alias(self, lead_id: str) -> LeadKeys:
        """Where a linked lead's alias is kept (identity merges): ``P alias:{S}:<sha256>``
        -> the lead it joined; named and placed like :meth:`tombstone` (no lead id in
        the name, the lead's own Cluster slot). Its outbox is never used."""
        key = self.tombstone(lead_id).state.replace(
            f"{self.prefix}erased:", f"{self.prefix}alias:", 1
        )
        return LeadKeys(lead_id, key, f"{key}:outbox")

    def aliases_of(self, lead_id: str) -> str:
        """Set of the ids aliased to ``lead_id`` (identity merges): what an erasure of the
        lead deletes the aliases of. In the lead's slot."""
        return f"{self.prefix}aliases:{{{_hash_tag(lead_id)}}}"

    def node_applied(self, tag: str) -> str:
        """A cluster node's "applied up to" marks (hash, like :attr:`applied`)."""
        return f"{self.prefix}applied:{{{tag}}}"

    def node_names(self, tag: str) -> str:
        """A cluster node's copy of the name dictionary (hash, like :attr:`names`)."""
        return f"{self.prefix}names:{{{tag}}}"

    def node_outbox_index(self, tag: str) -> str:
        """A cluster node's set of leads that may have undelivered crossings."""
        return f"{self.prefix}idx:outbox:{{{tag}}}"

    @staticmethod
    def legacy_seen(state_key: str) -> str:
        """Format 1's set of applied event ids beside a lead's state key."""
        return f"{state_key}:seen"


#: Lead key sets :meth:`KeySpace.lead` remembers before it starts over.
_LEAD_KEYS_CACHED = 50_000


@functools.cache
def _slot_tags() -> dict[int, str]:
    """A short tag for each of the 16,384 Redis Cluster slots (the first hex number that
    hashes to it; at most 5 digits). Built once, in about 0.25 s."""
    tags: dict[int, str] = {}
    n = 0
    while len(tags) < SLOTS:
        tag = f"{n:x}"
        tags.setdefault(key_slot(tag.encode()), tag)
        n += 1
    return tags


def slot_tag(slot: int) -> str:
    """A hash tag whose keys live in Redis Cluster slot ``slot``."""
    return _slot_tags()[slot]


def _hash_tag(lead_id: str) -> str:
    if "{" in lead_id or "}" in lead_id:
        return "h:" + hashlib.sha1(lead_id.encode(), usedforsecurity=False).hexdigest()
    return lead_id


def text(value: Any) -> str:
    """A Redis reply (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def texts(values: Any) -> list[str]:
    """Redis replies (bytes or str) as a list of str."""
    return [text(v) for v in values or ()]
