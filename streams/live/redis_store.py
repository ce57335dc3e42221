"""Redis lead store: the live worker's source of truth.

Same math as the memory store (:func:`scoring.state_machine.apply_lead_events`,
:func:`scoring.state_machine.advance`); this module only loads and saves states, atomically per
lead (the batched compare-and-set script of :mod:`streams.live.redis_scripts`), so that a crash at
any point neither loses nor double-counts an event. Key layout: :mod:`streams.live.redis_keys`;
state bytes: :mod:`streams.live.state_format`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.asyncio import Redis, RedisCluster

from schemas.events import PROFILE_FIELDS
from scoring.crossings import Crossing
from scoring.identity import apply_or_forward
from scoring.rules import RuleSet
from scoring.state import LeadState
from scoring.state_machine import (
    LeadBatch,
    advance,
    group_by_lead,
    is_tombstone,
)
from scoring.store import BatchResult, EventItem

from ..settings import Settings
from .interfaces import StoreRolledBack
from .redis_aliases import AliasTable
from .redis_checks import durability_findings
from .redis_errors import TRANSIENT_ERRORS, StoreConflictError, StoreFormatError
from .redis_index import LeadIndexes
from .redis_keys import KeySpace, slot_tag
from .redis_migrate import STORE_FORMAT, convert_format_1, convert_format_2, stored_format
from .redis_names import give_numbers, read_names
from .redis_nodes import ClusterNodes, StandaloneNodes
from .redis_outbox import Outbox
from .redis_rank import RankIndex
from .redis_scripts import AFTER_PREVIOUS, AND_PREVIOUS, CHECK_ONLY, LeadWrite
from .state_format import (
    VERSION_SLICE,
    Names,
    UnknownNameError,
    decode_state,
    encode_state,
)

log = logging.getLogger("leadscore.store")

#: Leads per sweep round trip.
SWEEP_CHUNK = 500
#: Attempts for a lead whose compare-and-set keeps losing to another writer.
MAX_CAS_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class _Loaded:
    state: LeadState | None
    #: The stored version bytes (b"": not stored): what the compare-and-set expects.
    version: bytes
    #: Identity merges: the lead a retired (linked) lead joined, read with its tombstone.
    alias: str | None = None
    #: Without a state: its tombstone's version. Versions go on above it, never again
    #: through the numbers the erased lead had (index writes are settled by version).
    stone_version: bytes = b""


#: One compare-and-set round: load the given leads, return them and their new results.
_Step = Callable[[list[str]], Awaitable[tuple[dict[str, _Loaded], dict[str, LeadBatch]]]]


class RedisStore:
    """:class:`streams.live.interfaces.DurableStore` on Redis. One instance per worker
    process."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        rules: RuleSet,
        prefix: str = "leadscore:",
        *,
        idle_lead_retention_ms: int = 0,
        unidentified_lead_retention_ms: int = 0,
        identity_merges: bool = False,
    ) -> None:
        # (redis-py's reply annotations are unions of all replies: checked where decoded)
        self.client: Any = client
        self.rules = rules
        cluster = isinstance(client, RedisCluster)
        self.keys = KeySpace(prefix, cluster=cluster)
        #: where lead writes go: one Redis, or each master node of a cluster
        self.nodes = (
            ClusterNodes(client, self.keys) if cluster else StandaloneNodes(client, self.keys)
        )
        #: The save script's TTL (ms) of cold leads, and of those without a profile after
        #: a "/": expire after so long unwritten (0: never).
        self.ttl = f"{idle_lead_retention_ms}/{unidentified_lead_retention_ms}"
        self.names = Names()
        #: Stream -> offset known to be applied (Kafka's committed offset at assignment,
        #: then each saved mark): a stored mark behind it means Redis lost writes.
        self.known_applied: dict[str, int] = {}
        self._ready = False
        self.indexes = LeadIndexes(self.client, self.keys)
        self.rank = RankIndex(self.client, self.keys, rules, self.indexes)
        self.outbox = Outbox(self.client, self.keys, self.nodes)
        #: Whether leads may be retired (linked) and their late events forwarded.
        self.identity_merges = identity_merges
        self.aliases = AliasTable(self.client, self.keys, self.nodes)

    @classmethod
    def connect(cls, settings: Settings, rules: RuleSet) -> RedisStore:
        """A store on a new asyncio client for the settings (URL, password, key prefix,
        retention); :meth:`aclose` closes it. Connects on first use."""
        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        kwargs: dict[str, Any] = {
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 30,
        }
        if password is not None:
            kwargs["password"] = password
        if settings.redis_cluster:
            kwargs.pop("health_check_interval")
            client: Redis | RedisCluster = RedisCluster.from_url(settings.redis_url, **kwargs)
        else:
            client = Redis.from_url(settings.redis_url, **kwargs)
        return cls(
            client,
            rules,
            settings.redis_key_prefix,
            idle_lead_retention_ms=settings.idle_lead_retention or 0,
            unidentified_lead_retention_ms=settings.unidentified_lead_retention or 0,
            identity_merges=settings.merges_identities,
        )

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()

    def is_transient(self, error: Exception) -> bool:
        """Redis unreachable, timing out or loading, or a lead fought over by two writers."""
        return isinstance(error, TRANSIENT_ERRORS)

    # ------------------------------------------------------------------ format, names
    async def prepare(self, progress: Callable[[int], None] | None = None) -> int:
        """Get the store ready before the worker consumes: convert a format-1 store
        (:mod:`.redis_migrate`, calling ``progress(leads so far)``), load and extend the
        name dictionary, build the tombstone keys' slot table. Returns the leads converted."""
        converted = 0
        stored = await stored_format(self.client, self.keys)
        if stored == 1:
            await self.reload_names()
            converted = await convert_format_1(
                self.client, self.keys, self.encode, self.rank.write, progress
            )
        elif stored == 2:
            await convert_format_2(self.client, self.keys, self.indexes)
        await self._ensure_ready()
        slot_tag(0)  # (0.2 s: now, not in the first batch)
        nodes = await self.nodes.each_node()
        for name, node in nodes:
            for level, message in await durability_findings(node):
                log.log(level, "%s%s", f"{name}: " if len(nodes) > 1 else "", message)
        return converted

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        if not self.keys.cluster and (await self.client.info("cluster")).get("cluster_enabled"):
            raise StoreFormatError(
                "the Redis at LEADSCORE_REDIS_URL is a Redis Cluster node: set "
                "LEADSCORE_REDIS_CLUSTER=true (the store then writes each node's leads there)"
            )
        stored = await stored_format(self.client, self.keys)
        if stored is None:
            await self.client.hsetnx(self.keys.meta, "format", STORE_FORMAT)
        elif stored in (1, 2):
            raise StoreFormatError(
                f"the Redis store under {self.keys.prefix!r} is in format {stored} (an "
                "earlier leadscore's): start `leadscore worker` once, it converts it "
                "before consuming"
            )
        elif stored != STORE_FORMAT:
            raise StoreFormatError(
                f"the Redis store under {self.keys.prefix!r} is in format {stored}, newer "
                f"than this leadscore's {STORE_FORMAT}: upgrade leadscore"
            )
        await self.reload_names()
        wanted = [f"rule:{r}" for r in self.rules.rule_ids]
        wanted += [f"field:{f}" for f in PROFILE_FIELDS]
        await self.name([n for n in wanted if n not in self.names.numbers])
        self._ready = True

    async def reload_names(self) -> None:
        """Read the whole name dictionary (another worker may have added names; on a
        cluster, what a rollback of its node lost is put back: :mod:`.redis_names`)."""
        self.names.update(await read_names(self.client, self.keys, self.nodes))

    async def name(self, names: Iterable[str]) -> None:
        """Give numbers to ``names`` (kept, if another worker did already)."""
        missing = sorted(set(names))
        if missing:
            self.names.update(await give_numbers(self.client, self.keys, self.nodes, missing))

    async def encode(self, state: LeadState, version: int) -> bytes:
        """``state`` as stored, naming what it uses first."""
        await self.name(self.names.missing(state))
        return encode_state(state, version, self.names)

    async def decode(self, raw: bytes, lead_id: str) -> LeadState:
        """A stored state; reloads the name dictionary once if the state uses a name
        another worker added."""
        try:
            return decode_state(raw, lead_id, self.names)
        except UnknownNameError:
            await self.reload_names()
            return decode_state(raw, lead_id, self.names)

    def note_applied(self, offsets: Mapping[str, int | None]) -> None:
        """Kafka says these streams were applied up to these offsets (committed offsets
        at assignment; None: the stream was revoked, forget it)."""
        for stream, offset in offsets.items():
            if offset is None:
                self.known_applied.pop(stream, None)
            else:
                self.known_applied[stream] = offset

    async def verify_applied(self) -> dict[str, int]:
        """The streams whose stored mark is behind what is known applied (Redis lost
        writes since), with the stored mark (-1: none); empty when all is well. Between
        batches this is how a rollback is noticed without waiting for the next event."""
        known = dict(self.known_applied)
        if not known:
            return {}
        try:
            # Saving nothing with marks at what is known checks them (and writes none).
            await self.nodes.save([], {s: (o, o) for s, o in known.items()}, 0)
        except StoreRolledBack as exc:
            self._rolled_back(exc)
            return dict(exc.marks)
        return {}

    def _rolled_back(self, error: StoreRolledBack) -> None:
        """Redis lost writes: whatever this process cached of it may be gone too."""
        log.error("%s; re-reading from there", error)
        self._ready = False
        self.names = Names()
        self.rank.forget()
        self.nodes.forget()
        for stream, mark in error.marks.items():
            if mark < 0:
                self.known_applied.pop(stream, None)
            else:
                self.known_applied[stream] = mark

    # ------------------------------------------------------------------ reads
    async def get(self, lead_id: str) -> LeadState | None:
        await self._ensure_ready()
        raw = await self.client.get(self.keys.lead(lead_id).state)
        return None if raw is None else await self.decode(raw, lead_id)

    async def get_many(self, lead_ids: Sequence[str]) -> dict[str, LeadState]:
        """The stored states of the leads that have one, in one round trip."""
        loaded = await self._load(lead_ids)
        return {lead: item.state for lead, item in loaded.items() if item.state is not None}

    async def _load(self, lead_ids: Sequence[str], tombstones: bool = False) -> dict[str, _Loaded]:
        """One round trip: the leads' states and stored versions; with ``tombstones`` (to
        apply events), also each lead's tombstone and alias, read in the same round trip
        and used for a lead without a state: an erased or retired lead's tombstone guards
        its past in its place, and its alias says where its events go. (Both keys are in
        the lead's slot, so a Cluster node reads them with its states; reading them for
        every lead costs Redis a few microseconds, a second round trip for the batches
        with new leads cost more.)"""
        await self._ensure_ready()
        keys = [self.keys.lead(lead) for lead in lead_ids]
        n = len(keys)
        if tombstones:
            keys += [self.keys.tombstone(lead) for lead in lead_ids]
            if self.identity_merges:
                keys += [self.keys.alias(lead) for lead in lead_ids]
        found = await self.nodes.load(keys)
        loaded: dict[str, _Loaded] = {}
        for i, (lead_id, raw) in enumerate(zip(lead_ids, found, strict=False)):
            if raw is not None:
                loaded[lead_id] = _Loaded(await self.decode(raw, lead_id), raw[VERSION_SLICE])
                continue
            stone = found[n + i] if tombstones else None
            alias = found[2 * n + i] if tombstones and self.identity_merges else None
            state = None if stone is None else await self.decode(stone, lead_id)
            joined = None if alias is None else alias.decode()
            loaded[lead_id] = _Loaded(
                state, b"", joined, b"" if stone is None else stone[VERSION_SLICE]
            )
        return loaded

    # ------------------------------------------------------------------ writes
    async def apply_batch(self, items: Sequence[EventItem]) -> BatchResult:
        """Apply a batch: 1 round trip to load (states, tombstones, aliases), 1 to write
        (one script: a CAS per lead, then the indexes; on a cluster, 1 per node and 1 for
        the indexes); more only for leads that lost a CAS race."""
        groups = group_by_lead(items)
        marks: dict[str, int] = {}
        for _, position in items:
            if position is not None:
                marks[position.stream] = max(marks.get(position.stream, 0), position.offset + 1)
        forward: dict[str, list[tuple[EventItem, str]]] = {}
        step = partial(self._apply_step, groups, forward)
        try:
            written = await self._compare_and_set(list(groups), step, marks)
        except StoreRolledBack as exc:
            self._rolled_back(exc)
            raise
        self.known_applied.update(marks)
        return BatchResult(
            tuple(c for r in written.values() for c in r.crossings),
            sum(len(r.applied_event_ids) for r in written.values()),
            sum(r.duplicates for r in written.values()),
            tuple(f for lead in written for f in forward.get(lead, ())),
        )

    async def _apply_step(
        self,
        groups: dict[str, list[EventItem]],
        forward: dict[str, list[tuple[EventItem, str]]],
        leads: list[str],
    ) -> tuple[dict[str, _Loaded], dict[str, LeadBatch]]:
        """Apply each lead's events (those a retired lead forwards: to ``forward``)."""
        loaded = await self._load(leads, tombstones=True)
        results: dict[str, LeadBatch] = {}
        for lead in leads:
            item = loaded[lead]
            results[lead], forward[lead] = apply_or_forward(
                item.state, item.alias, groups[lead], self.rules
            )
        return loaded, results

    async def _compare_and_set(
        self, lead_ids: Sequence[str], step: _Step, marks: dict[str, int] | None = None
    ) -> dict[str, LeadBatch]:
        """Run ``step`` (load leads, compute their new results) on ``lead_ids`` and save
        the results; again for the leads whose compare-and-set lost to another writer, up
        to :data:`MAX_CAS_ATTEMPTS` times. Returns the results saved, in order. The
        "applied up to" ``marks`` go with every round (they only move forward; the
        consumer commits nothing before the batch is done)."""
        saved: dict[str, LeadBatch] = {}
        pending = list(lead_ids)
        for _attempt in range(MAX_CAS_ATTEMPTS):
            loaded, results = await step(pending)
            lost = await self._save(loaded, results, marks or {})
            marks = None  # written (the marks only move forward)
            saved.update((lead, r) for lead, r in results.items() if lead not in lost)
            if not lost:
                return saved
            pending = [lead for lead in results if lead in lost]
        raise StoreConflictError(f"leads kept changing under us: {pending[:5]}")

    async def _save(
        self, loaded: dict[str, _Loaded], results: dict[str, LeadBatch], marks: dict[str, int]
    ) -> set[str]:
        """Write changed leads with the CAS script and refresh the indexes of every lead
        in ``results`` (also unchanged ones: that repairs indexes after a crash); on one
        Redis in the same call, else (a cluster; a lead lost; the landmark moved) after
        it, then :meth:`RankIndex.settle`. Returns the leads that lost a CAS race (their
        indexes are written when they are)."""
        known = self.known_applied
        writes: list[LeadWrite] = []
        versions = {lead: item.version for lead, item in loaded.items()}
        unchanged: list[tuple[str, bytes]] = []  # indexed all the same, if still unchanged
        for lead, r in results.items():
            item, key = loaded[lead], self.keys.lead(lead)
            if not (r.applied_event_ids or r.crossings):
                if r.state is not None:
                    unchanged.append((key.state, item.version))
                continue
            assert r.state is not None
            version = int.from_bytes(item.version or item.stone_version, "little") + 1
            expected = item.version
            if not expected:  # no state: its tombstone (or none) must still be as read
                stone = self.keys.tombstone(lead)
                writes.append(LeadWrite(stone, item.stone_version, CHECK_ONLY, ()))
                expected = AND_PREVIOUS
            if is_tombstone(r.state):  # erased: the lead key goes, its tombstone comes
                tomb = await self.encode(r.state, version)
                writes.append(LeadWrite(key, expected, b"", r.crossings))
                writes.append(LeadWrite(self.keys.tombstone(lead), AFTER_PREVIOUS, tomb, ()))
                versions[lead] = b""
                continue
            state = await self.encode(r.state, version)
            writes.append(LeadWrite(key, expected, state, r.crossings))
            versions[lead] = state[VERSION_SLICE]
        marks_known = {s: (o, known.get(s, -1)) for s, o in marks.items()}
        states = [r.state for r in results.values() if r.state is not None]
        entries = await self.rank.entries(states) if states else None
        index = None if entries is None else self.indexes.arguments(*entries)
        saved = self.nodes.save_and_index(writes, marks_known, self.ttl, index, unchanged)
        lost_list, indexed = await saved
        lost = set(lost_list)
        if not indexed:
            kept = [s for s in states if s.lead_id not in lost]
            await self.rank.write(kept, None if lost else entries)
            indexed_versions = {s.lead_id: versions[s.lead_id] for s in kept}
            await self.rank.settle(indexed_versions, self._stored_versions, self._load_versioned)
        return lost

    async def _drop_gone(self, lead_ids: Sequence[str], *, rank: bool) -> None:
        """Drop the rank or cooling entries of leads read without a state (idle-lead
        retention; an erasure or a merge whose index write did not land), then settle
        them: a lead written again meanwhile (a returning lead) is indexed again."""
        await self.indexes.remove(**{"rank" if rank else "cool_due": lead_ids})
        gone = dict.fromkeys(lead_ids, b"")  # (the version of no state)
        await self.rank.settle(gone, self._stored_versions, self._load_versioned)

    async def _stored_versions(self, lead_ids: Sequence[str]) -> list[bytes]:
        found = await self.nodes.load([self.keys.lead(lead) for lead in lead_ids])
        return [b"" if raw is None else raw[VERSION_SLICE] for raw in found]

    async def _load_versioned(
        self, lead_ids: Sequence[str]
    ) -> dict[str, tuple[LeadState | None, bytes]]:
        loaded = await self._load(lead_ids, tombstones=True)
        return {lead: (item.state, item.version) for lead, item in loaded.items()}

    # ------------------------------------------------------------------ outbox
    async def mark_delivered(self, crossings: Sequence[Crossing]) -> None:
        """:meth:`Outbox.mark_delivered`: drop produced crossings from the outbox."""
        await self.outbox.mark_delivered(crossings)

    async def undelivered(self, limit: int = 1000) -> list[Crossing]:
        """:meth:`Outbox.undelivered`: crossings a crash left in the outbox."""
        return await self.outbox.undelivered(limit)

    # ------------------------------------------------------------------ cooling sweep
    async def cool_due(
        self, until_ms: int, limit_for: Callable[[LeadState], int | None] | None = None
    ) -> BatchResult:
        """Cool every hot lead whose score decayed below ``cool`` by ``until_ms``: found
        through the cooling index (``P cool-due:<n>``, no scan of all leads).
        ``limit_for(state)`` may hold a lead back: it returns the time up to which that
        lead may be cooled now (None: not at all, e.g. its partition belongs to another
        worker); held-back leads stay in the index for the next sweep."""
        crossings: list[Crossing] = []
        bucket = 0  # the index's buckets are read in order, whole, a few at a time
        while bucket >= 0:
            bucket, found = await self.indexes.due(until_ms, bucket, SWEEP_CHUNK)
            if not found:
                continue
            step = partial(self._cool_step, until_ms, limit_for)
            written = await self._compare_and_set([lead for _, lead in found], step)
            crossings.extend(c for r in written.values() for c in r.crossings)
        crossings.sort(key=lambda c: (c.occurred_at_ms, c.lead_id))
        return BatchResult(tuple(crossings))

    async def _cool_step(
        self,
        until_ms: int,
        limit_for: Callable[[LeadState], int | None] | None,
        leads: list[str],
    ) -> tuple[dict[str, _Loaded], dict[str, LeadBatch]]:
        """Advance the leads to ``until_ms`` (or their limit); leads without a state are
        dropped from the index."""
        loaded = await self._load(leads)
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
            await self._drop_gone(gone, rank=False)
        return loaded, results

    # ------------------------------------------------------------------ ranking
    async def top(self, n: int, at_ms: int) -> list[tuple[str, float]]:
        """Exact top ``n`` by score at ``at_ms`` (:meth:`RankIndex.top`)."""
        await self._ensure_ready()
        return await self.rank.top(n, at_ms, self._states, partial(self._drop_gone, rank=True))

    async def _states(self, lead_ids: Sequence[str]) -> dict[str, LeadState | None]:
        return {lead: item.state for lead, item in (await self._load(lead_ids)).items()}
