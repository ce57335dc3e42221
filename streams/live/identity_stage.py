"""Identity merges in the live worker: the two steps of :mod:`scoring.identity` with the
worker's identity topic (``LEADSCORE_IDENTITY_TOPIC``, default ``<app_id>-identity``)
between them, as Kafka Streams repartitions (docs/architecture.md, "Identity merges").

* **Step 1** (:class:`IdentityStage`), for the messages of the input and control topics:
  their events are routed to their canonical leads (aliases read from and written first-wins to
  Redis, :mod:`.redis_aliases`) and produced to the identity topic keyed by that lead, in
  the leadscore format; links (``lead_linked``) keyed by the absorbed lead. The input
  offsets are committed only once those records are acknowledged.
* **Step 2** is the worker's usual apply, for the messages of the identity topic: each
  lead there is owned by one worker. A link retires its lead (``lead_merged`` for
  downstream, ``lead_absorbed`` with its state through the outbox to the identity topic);
  ``lead_absorbed`` merges; the events of a retired lead that were routed before its
  alias existed are forwarded (:func:`forwarded_records`).

So the identity topic holds the scoring's whole input, in the order each lead met it: a
replay of it (``leadscore replay kafka:<identity topic>``) is the live run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from pydantic import BaseModel

from schemas.events import IDENTITY_TYPES, LEAD_ABSORBED, Scorable
from schemas.times import ms_to_datetime
from schemas.validation import Rejected, identity_off
from scoring.crossings import ABSORBED, Crossing
from scoring.identity import LinkRecord, Routed, ids_to_resolve, resolve, route
from scoring.store import EventItem

from .interfaces import RawMessage, position_of

#: Rounds of routing again after an alias write lost to another worker's.
MAX_ROUTE_ATTEMPTS = 5

Record = tuple[bytes, bytes]


class Aliases(Protocol):
    """The alias table (:class:`streams.live.redis_aliases.AliasTable`)."""

    async def resolve(self, ids: set[str]) -> dict[str, str]: ...
    async def write(self, writes: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]: ...
    async def repair(self, repairs: Mapping[str, str]) -> None: ...
    async def forget(self, lead_id: str) -> int: ...


@dataclass(slots=True)
class Routing:
    """Step 1's result for a batch: the identity topic's records (links included: how
    many), the erased leads whose aliases go once they are out, the events that could
    not be routed (their message, why)."""

    records: list[Record] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)
    failed: list[tuple[RawMessage, str]] = field(default_factory=list)
    links: int = 0


class AliasConflictError(RuntimeError):
    """Alias writes kept losing (to other workers', or along a chain longer than
    :data:`scoring.identity.MAX_HOPS`): the event is dead-lettered."""


class IdentityStage:
    """Step 1: routes a batch's input events; returns the identity topic's records."""

    def __init__(self, aliases: Aliases) -> None:
        self.aliases = aliases

    async def route_batch(
        self,
        events: Sequence[tuple[Scorable, RawMessage]],
        is_transient: Callable[[Exception], bool],
    ) -> Routing:
        """:meth:`route`, and when that fails for a reason that cannot pass (not
        ``is_transient``), event by event: the ones that still fail are returned with why,
        for the dead-letter topic; their neighbours go on."""
        try:
            return await self.route(events)
        except Exception as exc:
            if is_transient(exc):
                raise
        out = Routing()
        for pair in events:
            try:
                one = await self.route([pair])
            except Exception as exc:
                if is_transient(exc):
                    raise
                out.failed.append((pair[1], f"{pair[0].lead_id!r}: {type(exc).__name__}: {exc}"))
                continue
            out.records += one.records
            out.erased += one.erased
            out.links += one.links
        return out

    async def route(self, events: Sequence[tuple[Scorable, RawMessage]]) -> Routing:
        """The identity topic's records for ``events``, and the erased leads whose aliases
        :meth:`forget` deletes once those records are acknowledged."""
        scorables = [event for event, _ in events]
        known = await self.aliases.resolve(ids_to_resolve(scorables))
        for _ in range(MAX_ROUTE_ATTEMPTS):
            plan = route(scorables, known)
            if plan.repairs:
                await self.aliases.repair(plan.repairs)
                for broken in plan.repairs:
                    known.pop(broken, None)
            written, lost = await self.aliases.write(plan.writes)
            known.update(written)
            if not lost:
                break
            known.update(lost)  # another worker linked it first: route on what won
            known.update(await self.aliases.resolve(set(lost.values())))
        else:
            raise AliasConflictError("alias writes kept losing to other workers")
        message_of = {id(event): message for event, message in events}
        routing = Routing(erased=plan.forget)
        for out in plan.out:
            if isinstance(out, LinkRecord):
                routing.records.append((out.absorbed.encode(), _link_json(out)))
                routing.links += 1
            else:
                record = _event_json(out, message_of[id(out.event)])
                routing.records.append((out.lead_id.encode(), record))
        return routing

    async def forget(self, leads: Sequence[str]) -> None:
        for lead in leads:
            await self.aliases.forget(lead)

    async def targets(self, leads: set[str]) -> dict[str, str]:
        """Where events forwarded to ``leads`` go: each one's canonical lead now (a
        cycle of aliases found on the way is broken, as step 1 breaks it)."""
        known = await self.aliases.resolve(leads)
        out: dict[str, str] = {}
        for lead in leads:
            hops, repairs = resolve(lead, known)
            if repairs:
                await self.aliases.repair(repairs)
                for broken in repairs:
                    known.pop(broken, None)
            out[lead] = hops[-1]
        return out


def _link_json(link: LinkRecord) -> bytes:
    return orjson.dumps(
        {**link.event(), "occurred_at": ms_to_datetime(link.occurred_at_ms).isoformat()}
    )


def _event_json(routed: Routed, message: RawMessage) -> bytes:
    """The event in the leadscore format, for its canonical lead: as it came when it is
    already in that format, else its model's JSON."""
    event = routed.event
    if isinstance(event, BaseModel):
        if event.lead_id != routed.lead_id:
            event = event.model_copy(update={"lead_id": routed.lead_id})
        return event.model_dump_json(exclude_none=True).encode()
    assert message.value is not None
    return (
        _with_lead(message.value, routed.lead_id)
        if event.lead_id != routed.lead_id
        else message.value
    )


def _with_lead(value: bytes, lead_id: str) -> bytes:
    data = orjson.loads(value)
    data["lead_id"] = lead_id
    return orjson.dumps(data)


def identity_check(event: Scorable, topic: str, identity_topic: str | None) -> Rejected | None:
    """Why an identity event read from ``topic`` is refused (None: not one, or welcome):
    without identity merges, any; with them, ``lead_absorbed`` outside the identity topic
    (the worker writes it; a producer must not)."""
    if event.type not in IDENTITY_TYPES:
        return None
    if identity_topic is None:
        return identity_off(event)
    if topic == identity_topic or event.type != LEAD_ABSORBED:
        return None
    return Rejected(
        "invalid_event",
        f"type: {LEAD_ABSORBED} is the worker's own record of its identity topic "
        f"{identity_topic}: producers may not send it",
    )


def absorbed_records(crossings: Sequence[Crossing]) -> list[Record]:
    """The ``lead_absorbed`` records among ``crossings``, for the identity topic."""
    return [
        ((c.merged_into or "").encode(), orjson.dumps(c.absorbed_event()))
        for c in crossings
        if c.kind == ABSORBED
    ]


def forwarded_records(
    forwarded: Sequence[tuple[EventItem, str]], messages: Sequence[RawMessage]
) -> list[Record]:
    """Events of retired leads, for the lead they joined: their identity-topic messages
    re-keyed (the canonical lead's owner deduplicates a repeated one by its id)."""
    by_position = {position_of(m): m for m in messages}
    records: list[Record] = []
    for (_, position), into in forwarded:
        assert position is not None  # (live events have one)
        message = by_position[position]
        assert message.value is not None
        records.append((into.encode(), _with_lead(message.value, into)))
    return records
