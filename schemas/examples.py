"""Realistic examples of every input event and output record, as JSON-able dicts.

Shared by the docs, the generated JSON Schemas (their ``examples``) and the tests, so all
three show the same, valid data:

* :data:`EXAMPLES`: one input event per ``type``, in the order of
  :data:`schemas.events.EVENT_MODELS` (``json.dumps`` one to get a Kafka message value);
* :data:`OUTPUT_EXAMPLES`: one ``lead_became_hot``, ``lead_cooled`` and ``dead_letter``.

They are module-level constants: ``copy.deepcopy`` one before modifying it.
"""

from __future__ import annotations

from typing import Any

#: All examples belong to this one lead (a newsletter reader who ends up requesting a demo).
EXAMPLE_LEAD_ID = "lead-7f3c9a"

EXAMPLES: dict[str, dict[str, Any]] = {
    "page_view": {
        "event_id": "evt-01JD8ZQ4K5X1",
        "type": "page_view",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-23T09:58:12.345Z",
        "url": "https://www.example.com/pricing",
        "title": "Pricing - Example Inc.",
        "referrer": "https://www.google.com/",
        "session_id": "sess-4b1e",
        "properties": {"utm_source": "google", "utm_medium": "cpc"},
    },
    "email_open": {
        "event_id": "evt-01JD8ZR0T2M7",
        "type": "email_open",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-23T10:00:00+01:00",
        "campaign_id": "nov-2026-newsletter",
        "email_id": "eml-883",
    },
    "email_click": {
        "event_id": "evt-01JD8ZR9C0Q4",
        "type": "email_click",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-23T09:01:30Z",
        "url": "https://www.example.com/blog/scoring-leads-in-real-time",
        "campaign_id": "nov-2026-newsletter",
        "email_id": "eml-883",
    },
    "download": {
        "event_id": "evt-01JD8ZSB7H2N",
        "type": "download",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-23T09:05:00Z",
        "asset_id": "wp-lead-scoring-2026",
        "asset_type": "whitepaper",
        "url": "https://www.example.com/resources/lead-scoring-whitepaper.pdf",
    },
    "form_submit": {
        "event_id": "evt-01JD8ZT3W9F8",
        "type": "form_submit",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-23T09:12:44Z",
        "form_id": "demo-request",
        "url": "https://www.example.com/demo",
        "properties": {"plan": "enterprise", "seats": 250, "interests": ["api", "sso"]},
    },
    "webinar": {
        "event_id": "evt-01JD8ZV1A6K3",
        "type": "webinar",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-23T15:00:00Z",
        "webinar_id": "web-2026-11-scoring",
        "status": "attended",
    },
    "unsubscribe": {
        "event_id": "evt-01JD8ZW5N1P0",
        "type": "unsubscribe",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-24T08:30:00Z",
        "list_id": "newsletter",
        "reason": "too many emails",
    },
    "lead_profile": {
        "event_id": "evt-01JD8ZX2D4R6",
        "type": "lead_profile",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-23T09:12:45Z",
        "email": "Jane.Doe@Acme-Robotics.example",
        "company": "Acme Robotics GmbH",
        "company_size": "201-500",
        "industry": "manufacturing",
        "country": "DE",
        "job_title": "Head of Operations",
        "seniority": "director",
    },
    "track": {
        "event_id": "evt-01JD8ZY7F3C2",
        "type": "track",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-23T10:21:09Z",
        "event": "Product Added",
        "properties": {"product_id": "robot-arm-x2", "price": 1499.0, "currency": "EUR"},
    },
    "score_adjusted": {
        "event_id": "adj-01JD90A2B7K4",
        "type": "score_adjusted",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-24T11:02:00Z",
        "points": 25,
        "reason": "met at the Hamburg trade fair, asked for a quote",
        "author": "maria.k@example.com",
    },
    "score_reset": {
        "event_id": "rst-01JD90C4D1M8",
        "type": "score_reset",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-25T09:00:00Z",
        "reason": "deal closed; start over for upsell",
        "author": "crm-sync",
    },
    "lead_erased": {
        "event_id": "era-01JD90F8H3Q2",
        "type": "lead_erased",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-26T14:30:00Z",
        "reason": "erasure request #4711",
        "author": "privacy@example.com",
    },
    "lead_linked": {
        "event_id": "ali-01JD8ZR2M7B4",
        "type": "lead_linked",
        "lead_id": "anon-5d2e41c0",
        "occurred_at": "2026-11-23T10:04:51Z",
        "canonical_id": EXAMPLE_LEAD_ID,
    },
    "lead_absorbed": {
        "event_id": "0b1f6c52-52a4-5b8e-9e0c-7f1d2a3b4c5d",
        "type": "lead_absorbed",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-23T10:04:51Z",
        "absorbed_id": "anon-5d2e41c0",
        "link_event_id": "ali-01JD8ZR2M7B4",
        "state": {
            "lead_id": "anon-5d2e41c0",
            "clock_ms": 1795428291000,
            "landmark_ms": 1795428000000,
            "sums": {"pricing-page": 10.0},
            "hot": False,
            "crossings": 0,
            "profile": {},
            "positions": {},
            "events_applied": 3,
            "recent_ids": "",
            "floor_ms": None,
        },
    },
}

#: One example of each output record, keyed by its ``type``, as leadscore writes it.
OUTPUT_EXAMPLES: dict[str, dict[str, Any]] = {
    "lead_became_hot": {
        "type": "lead_became_hot",
        "event_id": "hot-5d0c2b8e9a41f7c3",
        "lead_id": EXAMPLE_LEAD_ID,
        "score": 112.5,
        "threshold": 100.0,
        "occurred_at": "2026-11-23T09:12:44Z",
        "trigger_event_id": "evt-01JD8ZT3W9F8",
        "reasons": [
            {"rule_id": "demo-request", "points": 60.0, "detail": "form demo-request"},
            {"rule_id": "pricing-page", "points": 27.5, "detail": None},
            {"rule_id": "fit-grade", "points": 25.0, "detail": "grade A"},
        ],
        "fit_grade": "A",
        "rules_version": "2026-11-01",
        "emitted_at": "2026-11-23T09:12:44.871Z",
    },
    "lead_cooled": {
        "type": "lead_cooled",
        "event_id": "cool-91e4a07d2c6b58f0",
        "lead_id": EXAMPLE_LEAD_ID,
        "score": 49.8,
        "threshold": 50.0,
        "occurred_at": "2026-12-21T06:00:00Z",
        "trigger_event_id": None,
        "reasons": [
            {"rule_id": "demo-request", "points": 24.9, "detail": "form demo-request"},
            {"rule_id": "fit-grade", "points": 24.9, "detail": "grade A"},
        ],
        "fit_grade": "A",
        "rules_version": "2026-11-01",
        "emitted_at": "2026-12-21T06:00:03.120Z",
    },
    "lead_erased": {
        "type": "lead_erased",
        "event_id": "0b6f2c1e-4a57-5d2b-9c8e-3f1a7d6e2b90",
        "lead_id": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-26T14:30:00Z",
        "trigger_event_id": "era-01JD90F8H3Q2",
        "rules_version": "2026-11-01",
        "emitted_at": "2026-11-26T14:30:00.412Z",
    },
    "lead_merged": {
        "type": "lead_merged",
        "event_id": "6c1d9e2a-0f3b-5a7c-8d4e-1b2a3c4d5e6f",
        "lead_id": "anon-5b2e91",
        "merged_into": EXAMPLE_LEAD_ID,
        "occurred_at": "2026-11-23T09:12:44Z",
        "trigger_event_id": "seg-identify-77",
        "rules_version": "2026-11-01",
        "emitted_at": "2026-11-23T09:12:45.020Z",
    },
    "dead_letter": {
        "type": "dead_letter",
        "error_kind": "invalid_event",
        "error": "occurred_at: timestamp has no timezone offset (naive); "
        "use RFC 3339 like 2026-11-23T10:00:00Z",
        "source_topic": "lead-events",
        "source_partition": 3,
        "source_offset": 1048576,
        "key": EXAMPLE_LEAD_ID,
        "key_bytes": 11,
        "key_sha256": "baeb5571a9c63aba1d44ce9fab07544c9989f11b69f3e9d184644ddd9c446de7",
        "payload_text": '{"event_id":"evt-01JD8ZY7G3S1","type":"email_open",'
        '"lead_id":"lead-7f3c9a","occurred_at":"2026-11-23T10:00:00"}',
        "payload_base64": None,
        "payload_bytes": 111,
        "payload_truncated": False,
        "payload_sha256": "140dabad975aaf23c99bd1c7ffa246df92572cf382abac009a6f5783d8d0bb1a",
        "seen_at": "2026-11-23T10:00:00.412Z",
    },
}
