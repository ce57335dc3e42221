"""Output records: what leadscore publishes.

* ``lead_became_hot`` / ``lead_cooled`` on the hot-lead topic (key = lead_id). Their
  ``event_id`` is deterministic: the same crossing (lead, kind, time, crossing number,
  rules version) always gets the same id, so a consumer can de-duplicate on it and a
  replay produces the same ids as the live worker.
* dead-letter records on the dead-letter topic, one per rejected input message (built by
  :func:`schemas.validation.dead_letter`).

The JSON Schemas of these records (``schemas/json/``) mark every field as required, defaulted
ones included: leadscore always writes them all, so consumers can rely on them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Every output record's pydantic configuration: strict, immutable, no unknown field, and
#: schemas that describe what we write (we always write every field).
OUTPUT_CONFIG = ConfigDict(
    strict=True,
    frozen=True,
    extra="forbid",
    json_schema_serialization_defaults_required=True,
)


class Reason(BaseModel):
    """One rule's part in a score, as decayed points at the moment of the crossing."""

    model_config = OUTPUT_CONFIG

    rule_id: str = Field(description="Rule id from the rules file (or `fit-grade`).")
    points: float = Field(description="Current (decayed, capped) points of this rule.")
    detail: str | None = Field(default=None, description="Human-readable note, if any.")


class _ScoreCrossing(BaseModel):
    model_config = OUTPUT_CONFIG

    event_id: str = Field(description="Deterministic id of this crossing.")
    lead_id: str = Field(description="The lead whose score crossed; also the Kafka key.")
    score: float = Field(description="The lead's score at `occurred_at`.")
    threshold: float = Field(description="The threshold that was crossed (hot or cool).")
    occurred_at: AwareDatetime = Field(description="The lead's event-time clock at the crossing.")
    trigger_event_id: str | None = Field(
        description="Input event that caused the crossing; null when a lead cooled by decay "
        "alone (detected by the cooling sweep or at a replay's end)."
    )
    reasons: list[Reason] = Field(description="Top contributing rules, largest first.")
    fit_grade: str | None = Field(description="Fit grade (A-D) at the crossing, if profiled.")
    rules_version: str = Field(description="`version` of the rules file that scored it.")
    emitted_at: AwareDatetime = Field(description="Wall-clock time the record was produced.")


class LeadBecameHot(_ScoreCrossing):
    """A lead's score reached the hot threshold: hand it to sales now."""

    type: Literal["lead_became_hot"] = Field(
        default="lead_became_hot", description="Record type (discriminator)."
    )


class LeadCooled(_ScoreCrossing):
    """A hot lead's score fell below the cool threshold (by decay or a negative action)."""

    type: Literal["lead_cooled"] = Field(
        default="lead_cooled", description="Record type (discriminator)."
    )


class _LeadNotice(BaseModel):
    """What happened to a lead that is no threshold crossing (no score, no reasons)."""

    model_config = OUTPUT_CONFIG

    event_id: str = Field(description="Deterministic id of this record.")
    lead_id: str = Field(description="The lead it is about; also the Kafka key.")
    occurred_at: AwareDatetime = Field(description="When it took effect (event time).")
    trigger_event_id: str = Field(description="The event that did it.")
    rules_version: str = Field(description="`version` of the rules file in force.")
    emitted_at: AwareDatetime = Field(description="Wall-clock time the record was produced.")


class LeadErased(_LeadNotice):
    """A lead was erased (``leadscore erase``, GDPR art. 17): forget every copy of it.
    Its score, profile and event ids are gone from leadscore's store; new events for the
    id start a fresh lead. ``trigger_event_id``: the ``lead_erased`` control event."""

    type: Literal["lead_erased"] = Field(
        default="lead_erased", description="Record type (discriminator)."
    )


class LeadMerged(_LeadNotice):
    """An anonymous lead was linked to a known one (Segment ``alias``, or ``identify``
    with both ids) and its history merged into it: drop this id (``lead_id``), the known
    lead carries on (``merged_into``). ``trigger_event_id``: the linking event."""

    type: Literal["lead_merged"] = Field(
        default="lead_merged", description="Record type (discriminator)."
    )
    merged_into: str = Field(description="The lead that absorbed it.")


HotLeadEvent = LeadBecameHot | LeadCooled | LeadErased | LeadMerged


#: Why a message was rejected (``DeadLetter.error_kind``).
ErrorKind = Literal[
    "invalid_json",
    "invalid_utf8",
    "invalid_event",
    "missing_key",
    "key_mismatch",
    "oversized",
    # A valid event the worker could not apply (isolated per lead so that its neighbours
    # are applied): a bug or corrupt stored state, never a transient outage.
    "processing_error",
]


class DeadLetter(BaseModel):
    """An input message the worker could not apply, with the reason."""

    model_config = OUTPUT_CONFIG

    type: Literal["dead_letter"] = Field(
        default="dead_letter", description="Record type (discriminator)."
    )
    error_kind: ErrorKind = Field(description="Machine-readable category of the failure.")
    error: str = Field(description="What is wrong, naming the field (e.g. `occurred_at: ...`).")
    source_topic: str = Field(description="Topic the rejected message was read from.")
    source_partition: int = Field(description="Partition of the rejected message.")
    source_offset: int = Field(description="Offset of the rejected message.")
    key: str | None = Field(
        description="Message key as text; `base64:` + base64 when not UTF-8; null if none. "
        "Only its first DEAD_LETTER_KEY_MAX bytes when longer (see key_bytes, key_sha256)."
    )
    key_bytes: int = Field(description="Size of the original key in bytes (0 if none).")
    key_sha256: str | None = Field(
        description="SHA-256 (hex) of the whole original key; the dead letter's own Kafka key "
        "is `sha256:` + this when the original is longer than DEAD_LETTER_KEY_MAX."
    )
    payload_text: str | None = Field(description="Original bytes as text, when valid UTF-8.")
    payload_base64: str | None = Field(description="Original bytes, base64, when not UTF-8.")
    payload_bytes: int = Field(description="Size of the original payload in bytes.")
    payload_truncated: bool = Field(
        description="True when only the first DEAD_LETTER_PAYLOAD_MAX bytes are kept (so that "
        "a dead letter always fits in a Kafka message); see payload_sha256."
    )
    payload_sha256: str | None = Field(
        description="SHA-256 (hex) of the whole original payload, to match it elsewhere."
    )
    seen_at: AwareDatetime = Field(description="Wall-clock time the worker rejected it.")
