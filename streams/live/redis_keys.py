"""The Redis key layout of the live store: every key name is built here, nowhere else.

``P`` = the configured key prefix (default ``leadscore:``); ``{T}`` = the lead's hash tag:
the lead id, or ``h:<sha1>`` when the id itself contains a brace. All keys of one lead
share the tag, so they live in one Redis Cluster slot and one Lua script can update them
together:

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

The ``idx:*`` keys are global (other slots), so the store writes them outside the per-lead
script, with idempotent commands (ZADD/ZREM/SADD set absolute values): if a crash falls in
between, the redelivered events (now duplicates) rewrite the same index entries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LeadKeys:
    """The three keys of one lead (one hash tag, so one Cluster slot)."""

    lead_id: str
    #: hash: ``v`` (version), ``s`` (state JSON)
    state: str
    #: set of applied event ids
    seen: str
    #: hash: crossing id -> crossing JSON
    outbox: str


class KeySpace:
    """All key names under one prefix: per lead (:meth:`lead`) and the global ones."""

    def __init__(self, prefix: str = "leadscore:") -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the Redis key prefix must not contain braces (hash tags)")
        self.prefix = prefix
        #: set of lead ids that may have undelivered outbox entries
        self.outbox_index = f"{prefix}idx:outbox"
        #: zset: hot lead id -> millisecond it cools if nothing happens
        self.cool_due_index = f"{prefix}idx:cool-due"
        #: hash: ``landmark`` of the rank indexes
        self.meta = f"{prefix}meta"

    def lead(self, lead_id: str) -> LeadKeys:
        state = f"{self.prefix}lead:{{{_hash_tag(lead_id)}}}"
        return LeadKeys(lead_id, state, f"{state}:seen", f"{state}:outbox")

    def rank_index(self, half_life_ms: int) -> str:
        """zset: lead id -> forward-decayed positive score of its rules of this half-life."""
        return f"{self.prefix}idx:rank:{half_life_ms}"


def _hash_tag(lead_id: str) -> str:
    if "{" in lead_id or "}" in lead_id:
        return "h:" + hashlib.sha1(lead_id.encode(), usedforsecurity=False).hexdigest()
    return lead_id
