"""Input events: what web tracking sends to Kafka (JSON, message key = lead_id).

Every event shares an envelope (``event_id``, ``type``, ``lead_id``, ``occurred_at``,
``properties``) and is discriminated on ``type``. Models are strict and frozen: a producer
that sends ``"points": "10"`` instead of ``10`` gets a dead letter naming the field, never
a silent coercion.

Event time has millisecond precision: finer digits are kept in the model but scoring works
on :attr:`BaseEvent.occurred_at_ms`.

Numbers in ``properties`` must be finite: ``NaN``/``Infinity`` (not JSON, but accepted by
lenient parsers) and overflowing literals such as ``1e400`` are rejected, because rules
compare property values for equality and NaN never equals anything.

To turn raw Kafka bytes into an event (or a dead letter), use
:func:`schemas.validation.parse_event` rather than :data:`EVENT_ADAPTER` directly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)

from .times import datetime_to_ms, parse_rfc3339

#: Earliest and latest accepted event times. Anything outside is a producer bug (a unit
#: mix-up such as seconds sent as milliseconds), not a real lead action.
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME = datetime(2100, 1, 1, tzinfo=UTC)

EventId = Annotated[str, Field(min_length=1, max_length=128)]
LeadId = Annotated[str, Field(min_length=1, max_length=256)]
ShortText = Annotated[str, Field(max_length=2048)]
Url = Annotated[str, Field(min_length=1, max_length=4096)]

#: A JSON scalar, as allowed in ``properties`` values (rules compare them for equality).
PropertyValue = str | int | float | bool | None


class BaseEvent(BaseModel):
    """Envelope shared by all input events."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    event_id: EventId = Field(description="Producer-assigned unique id; repeats are ignored.")
    lead_id: LeadId = Field(description="The lead this action belongs to; also the Kafka key.")
    occurred_at: AwareDatetime = Field(
        description="When the action happened: RFC 3339 with an offset or Z (naive rejected), "
        "between 2000-01-01 and 2100-01-01."
    )
    properties: dict[str, PropertyValue | list[PropertyValue]] = Field(
        default_factory=dict,
        description="Free-form attributes; rules can match them as `properties.NAME`.",
    )

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _rfc3339_text(cls, value: object) -> object:
        # Parsed here, not by pydantic: pydantic also reads "1791000000" as Unix time, and
        # the contract is RFC 3339 text. (A naive result is rejected by AwareDatetime.)
        if not isinstance(value, str):
            return value
        return parse_rfc3339(value)

    @field_validator("occurred_at")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        if not EARLIEST_EVENT_TIME <= value < LATEST_EVENT_TIME:
            raise ValueError(
                f"timestamp {value.isoformat()} is outside the accepted range "
                f"{EARLIEST_EVENT_TIME.date()}..{LATEST_EVENT_TIME.date()}"
            )
        return value

    @cached_property
    def occurred_at_ms(self) -> int:
        """Event time in whole milliseconds since the Unix epoch (sub-ms digits truncated)."""
        return datetime_to_ms(self.occurred_at)

    def field_value(self, name: str) -> Any:
        """The value a rule condition named ``name`` reads (``properties.x`` or a field)."""
        if name.startswith("properties."):
            return self.properties.get(name[len("properties.") :])
        return getattr(self, name, None)


class PageView(BaseEvent):
    """The lead viewed a page of the website."""

    type: Literal["page_view"]
    url: Url = Field(description="Full URL of the page viewed.")
    title: ShortText | None = Field(default=None, description="Page title, if known.")
    referrer: Url | None = Field(default=None, description="Referring URL, if any.")
    session_id: ShortText | None = Field(default=None, description="Tracker session id.")


class EmailOpen(BaseEvent):
    """The lead opened a marketing email (tracking pixel loaded)."""

    type: Literal["email_open"]
    campaign_id: ShortText | None = Field(default=None, description="Campaign of the email.")
    email_id: ShortText | None = Field(default=None, description="The email sent.")


class EmailClick(BaseEvent):
    """The lead clicked a link in a marketing email."""

    type: Literal["email_click"]
    url: Url = Field(description="Target URL of the clicked link.")
    campaign_id: ShortText = Field(description="Campaign of the email.")
    email_id: ShortText | None = Field(default=None, description="The email sent.")


class Download(BaseEvent):
    """The lead downloaded an asset (white paper, e-book, price list...)."""

    type: Literal["download"]
    asset_id: ShortText = Field(description="Id of the downloaded asset.")
    asset_type: ShortText | None = Field(
        default=None, description="Kind of asset, e.g. `whitepaper`, `pricing`."
    )
    url: Url | None = Field(default=None, description="URL the asset was downloaded from.")


class FormSubmit(BaseEvent):
    """The lead submitted a form (contact, demo request, trial sign-up...)."""

    type: Literal["form_submit"]
    form_id: ShortText = Field(description="Id of the submitted form.")
    url: Url | None = Field(default=None, description="Page the form was on.")


class Webinar(BaseEvent):
    """The lead registered for, or attended, a webinar."""

    type: Literal["webinar"]
    webinar_id: ShortText = Field(description="Id of the webinar.")
    status: Literal["registered", "attended"] = Field(description="What the lead did.")


class Unsubscribe(BaseEvent):
    """The lead unsubscribed from a mailing list (usually scores negative points)."""

    type: Literal["unsubscribe"]
    list_id: ShortText | None = Field(default=None, description="List left; null for all.")
    reason: ShortText | None = Field(default=None, description="Reason given, if any.")


class Track(BaseEvent):
    """Any other action, named as the tracking sends it ("Product Added", "Trial
    Started"): a rule names it in ``event:`` and tests its ``properties``."""

    type: Literal["track"]
    event: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The action's name, exactly as sent (case and spaces count); not one "
        "of the built-in types."
    )

    @field_validator("event")
    @classmethod
    def _not_built_in(cls, value: str) -> str:
        if value in BUILT_IN_TYPES:
            raise ValueError(f"{value!r} is a built-in type: send it as type {value}")
        if value in RESERVED_NAMES:
            raise ValueError(f"{value!r} is a reserved event type: rename the track event")
        return value


class LeadProfile(BaseEvent):
    """Fit attributes of a lead (firmographics). Later values replace earlier ones."""

    type: Literal["lead_profile"]
    email: ShortText | None = Field(
        default=None, description="Email address; free-mail rules use its domain."
    )
    company: ShortText | None = Field(default=None, description="Company name.")
    company_size: ShortText | None = Field(
        default=None, description="Size band as the CRM spells it, e.g. `51-200`."
    )
    industry: ShortText | None = Field(default=None, description="Industry, e.g. `software`.")
    country: ShortText | None = Field(
        default=None, description="Country, e.g. ISO 3166-1 alpha-2 `DE`."
    )
    job_title: ShortText | None = Field(default=None, description="Job title, free text.")
    seniority: ShortText | None = Field(
        default=None, description="Seniority band, e.g. `director`, `c-level`."
    )
    anonymous_id: LeadId | None = Field(
        default=None,
        description="An anonymous id this lead used before being known (Segment `identify` "
        "with both `userId` and `anonymousId`): with identity merges on, that id's history "
        "joins this lead, unless the id already belongs to another lead.",
    )

    @property
    def email_domain(self) -> str | None:
        """Lower-cased domain of ``email`` (for free-mail rules), or None."""
        if not self.email or "@" not in self.email:
            return None
        return self.email.rsplit("@", 1)[1].strip().lower() or None


#: The control event types: read from the control topic only (``LEADSCORE_CONTROL_TOPIC``),
#: so that ACLs can keep tracking producers from sending them.
SCORE_ADJUSTED = "score_adjusted"
SCORE_RESET = "score_reset"
LEAD_ERASED = "lead_erased"
CONTROL_TYPES: frozenset[str] = frozenset({SCORE_ADJUSTED, SCORE_RESET, LEAD_ERASED})
#: The identity events (:mod:`scoring.identity`): ``lead_linked`` says two ids are one
#: person (a Segment ``alias``, or derived from an ``identify`` with both ids);
#: ``lead_absorbed`` carries a linked lead's state to its canonical lead, on the worker's
#: identity topic only. No rule or track event may take their names.
LEAD_LINKED = "lead_linked"
LEAD_ABSORBED = "lead_absorbed"
IDENTITY_TYPES: frozenset[str] = frozenset({LEAD_LINKED, LEAD_ABSORBED})
#: Names neither a track event nor a rule's ``event:`` may use.
RESERVED_NAMES: frozenset[str] = CONTROL_TYPES | IDENTITY_TYPES
#: The largest adjustment one ``score_adjusted`` may make, up or down.
MAX_ADJUSTMENT = 1_000_000.0
Reason = Annotated[str, Field(min_length=1, max_length=500)]
Author = Annotated[str, Field(min_length=1, max_length=200)]


class ScoreAdjusted(BaseEvent):
    """Points added (or, negative, removed) by hand: they count from ``occurred_at`` and
    fade with the rules file's ``adjustments.half_life``. A control event."""

    type: Literal["score_adjusted"]
    points: float = Field(
        description="Points to add (negative: to remove); not 0, at most 1,000,000 either way."
    )
    reason: Reason = Field(description="Why, for the audit trail (shown in explanations).")
    author: Author = Field(description="Who: a person or a system.")

    @field_validator("points")
    @classmethod
    def _sensible_points(cls, value: float) -> float:
        if value == 0 or abs(value) > MAX_ADJUSTMENT:
            raise ValueError(f"must be non-zero and at most {MAX_ADJUSTMENT:,.0f} either way")
        return value


class ScoreReset(BaseEvent):
    """The lead's behaviour score is zero as of ``occurred_at``; events dated at or before
    it never count, even if they arrive later. The profile (fit) stays. A control event."""

    type: Literal["score_reset"]
    reason: Reason = Field(description="Why, for the audit trail.")
    author: Author = Field(description="Who: a person or a system.")


class LeadErasedEvent(BaseEvent):
    """Erase the lead (GDPR art. 17) as of ``occurred_at``: its score, profile and event
    ids are deleted from the store, a ``lead_erased`` record tells downstream copies to
    forget it, and events dated at or before it never count again; later events for the id
    start a fresh lead. A control event."""

    type: Literal["lead_erased"]
    reason: Reason = Field(description="Why (e.g. the request's ticket number).")
    author: Author = Field(description="Who: a person or a system.")


class LeadLinked(BaseEvent):
    """``lead_id`` and ``canonical_id`` are one person, who goes on as ``canonical_id``:
    ``lead_id``'s history (an anonymous visitor's) joins it, and its later events count
    for it. Explicit (a Segment ``alias``: ``previousId`` -> ``userId``): it joins two
    known leads too. Needs identity merges on (``LEADSCORE_IDENTITY_MERGES``)."""

    type: Literal["lead_linked"]
    canonical_id: LeadId = Field(description="The lead that goes on (Segment: `userId`).")

    @field_validator("canonical_id")
    @classmethod
    def _another_lead(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("lead_id"):
            raise ValueError("the same as lead_id: a lead is linked to another one")
        return value


class LeadAbsorbed(BaseEvent):
    """Internal: the state of lead ``absorbed_id`` as it was linked into ``lead_id``,
    written by the worker to its identity topic (never sent by producers, refused on
    every other topic). The canonical lead's partition owner merges it
    (:func:`scoring.merge.merge_leads`)."""

    type: Literal["lead_absorbed"]
    absorbed_id: LeadId = Field(description="The lead that was linked into `lead_id`.")
    link_event_id: EventId = Field(description="The `lead_linked` event that linked them.")
    state: dict[str, Any] = Field(description="The absorbed lead's state (`LeadState.to_dict`).")


#: Fit attributes a ``lead_profile`` event can carry (``email_domain`` is derived).
PROFILE_FIELDS: tuple[str, ...] = (
    "email",
    "email_domain",
    "company",
    "company_size",
    "industry",
    "country",
    "job_title",
    "seniority",
)

LeadEvent = Annotated[
    PageView
    | EmailOpen
    | EmailClick
    | Download
    | FormSubmit
    | Webinar
    | Unsubscribe
    | LeadProfile
    | Track
    | ScoreAdjusted
    | ScoreReset
    | LeadErasedEvent
    | LeadLinked
    | LeadAbsorbed,
    Field(discriminator="type"),
]

EVENT_MODELS: dict[str, type[BaseEvent]] = {
    "page_view": PageView,
    "email_open": EmailOpen,
    "email_click": EmailClick,
    "download": Download,
    "form_submit": FormSubmit,
    "webinar": Webinar,
    "unsubscribe": Unsubscribe,
    "lead_profile": LeadProfile,
    "track": Track,
    SCORE_ADJUSTED: ScoreAdjusted,
    SCORE_RESET: ScoreReset,
    LEAD_ERASED: LeadErasedEvent,
    LEAD_LINKED: LeadLinked,
    LEAD_ABSORBED: LeadAbsorbed,
}

#: The built-in tracking event types besides ``track`` (a ``track`` event may not take
#: their names, nor those of the control types).
BUILT_IN_TYPES: tuple[str, ...] = tuple(
    t for t in EVENT_MODELS if t != "track" and t not in RESERVED_NAMES
)


class Scorable(Protocol):
    """What scoring reads of an event: a pydantic event model, or a
    :class:`schemas.validation.FastEvent` from the native decoder."""

    @property
    def event_id(self) -> str: ...
    @property
    def lead_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def occurred_at_ms(self) -> int: ...
    def field_value(self, name: str) -> Any: ...


def rule_event_of(event: Scorable) -> str:
    """What a rule's ``event:`` names for ``event``: its type, or for a ``track`` event
    its name."""
    if event.type == "track":
        return str(event.field_value("event"))
    return event.type


#: Validates one event from JSON bytes/str (the hot path) or from a dict.
EVENT_ADAPTER: TypeAdapter[LeadEvent] = TypeAdapter(LeadEvent)


def event_fields(event_type: str) -> frozenset[str]:
    """Names a rule may test for events of ``event_type`` (fields, derived fields)."""
    model = EVENT_MODELS[event_type]
    # occurred_at is when, not what: a rule condition on it could never be written right
    # (time is decay's job), so it is not testable.
    names = set(model.model_fields) - {"type", "properties", "occurred_at"}
    if model is LeadProfile:
        names.add("email_domain")
    return frozenset(names)
