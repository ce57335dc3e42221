"""Regenerate examples/events.jsonl: a small, realistic event log for the demo.

Stories (default rules): acme-alice turns hot on pricing + demo request; globex-bob turns
hot, unsubscribes (cools at once), then re-heats at a webinar; initech-carol is hot in
October, decays below `cool` (a decay cooling) and re-heats in November; hooli-dave only
browses (never hot); a dozen other leads add noise. Seven bad lines exercise the dead-letter
topic. Deterministic: `python examples/make_events.py` rewrites the same file.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

START = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
rnd = random.Random(7)
events: list[dict[str, object]] = []


def add(lead: str, day: float, type_: str, **fields: object) -> None:
    at = START + timedelta(days=day, minutes=rnd.randrange(0, 480))
    events.append(
        {
            "event_id": f"ex-{len(events) + 1:04d}",
            "type": type_,
            "lead_id": lead,
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            **fields,
        }
    )


def view(lead: str, day: float, path: str) -> None:
    add(lead, day, "page_view", url=f"https://example.com{path}", session_id=f"s-{lead}-{int(day)}")


# acme-alice: a buyer
add(
    "acme-alice",
    0,
    "lead_profile",
    email="alice@acme.example",
    company="Acme",
    company_size="201-1000",
    country="US",
    job_title="Head of Ops",
    seniority="director",
)
for d in (1, 2, 4):
    view("acme-alice", d, "/product")
add("acme-alice", 5, "email_click", url="https://example.com/pricing", campaign_id="fall-launch")
view("acme-alice", 5, "/pricing")
add("acme-alice", 6, "download", asset_id="roi-guide", asset_type="ebook")
add("acme-alice", 7, "form_submit", form_id="demo")

# globex-bob: hot, unsubscribes (cooled by a negative event), re-heats at a webinar
add(
    "globex-bob",
    3,
    "lead_profile",
    email="bob@globex.example",
    company_size="51-200",
    country="GB",
    seniority="vp",
)
view("globex-bob", 3, "/pricing")
add("globex-bob", 4, "email_click", url="https://example.com/case-study", campaign_id="fall-launch")
add("globex-bob", 4, "form_submit", form_id="newsletter")
view("globex-bob", 5, "/pricing")
add("globex-bob", 5, "email_click", url="https://example.com/pricing", campaign_id="fall-launch")
add("globex-bob", 6, "unsubscribe", list_id="newsletter", reason="too many emails")
add("globex-bob", 20, "webinar", webinar_id="w-roi", status="registered")
add("globex-bob", 27, "webinar", webinar_id="w-roi", status="attended")
view("globex-bob", 28, "/pricing")
add("globex-bob", 28, "form_submit", form_id="demo")

# initech-carol: hot early, decays and cools, re-heats in November
for d in (2, 3):
    view("initech-carol", d, "/pricing")
add("initech-carol", 3, "download", asset_id="spec-sheet", asset_type="whitepaper")
add("initech-carol", 4, "form_submit", form_id="contact-sales")
view("initech-carol", 40, "/blog")
add("initech-carol", 45, "email_click", url="https://example.com/pricing", campaign_id="nov")
view("initech-carol", 45, "/pricing")
add("initech-carol", 46, "form_submit", form_id="demo")

# hooli-dave: browses, reads emails, never hot; a student on free mail
add("hooli-dave", 1, "lead_profile", email="dave@gmail.com", job_title="Student", country="BR")
for d in range(2, 40, 4):
    view("hooli-dave", d, rnd.choice(["/blog", "/careers", "/docs"]))
    add("hooli-dave", d + 1, "email_open", campaign_id="weekly")

# noise
for i in range(12):
    lead = f"lead-{i:02d}"
    for _ in range(rnd.randrange(2, 9)):
        day = rnd.uniform(0, 50)
        kind = rnd.random()
        if kind < 0.6:
            view(lead, day, rnd.choice(["/", "/blog", "/product", "/pricing", "/careers"]))
        elif kind < 0.8:
            add(lead, day, "email_open", campaign_id="weekly")
        elif kind < 0.95:
            add(lead, day, "email_click", url="https://example.com/blog", campaign_id="weekly")
        else:
            add(lead, day, "download", asset_id="checklist", asset_type="checklist")

events.sort(key=lambda e: str(e["occurred_at"]))
lines = [json.dumps(e, separators=(",", ":")) for e in events]
bad = [
    '{"event_id":"bad-1","type":"page_view","lead_id":"acme-alice","occurred_at":"2026-10-09T10:00:00","url":"https://example.com/"}',  # naive time
    '{"event_id":"bad-2","type":"page_visit","lead_id":"acme-alice","occurred_at":"2026-10-09T10:00:00Z"}',  # unknown type
    '{"event_id":"bad-3","type":"email_click","lead_id":"globex-bob","occurred_at":"2026-10-09T10:00:00Z","url":"https://example.com/"}',  # no campaign_id
    '{"event_id":"bad-4","type":"page_view","lead_id":"lead-01","occurred_at":"2026-10-09T10:00:00Z","url":42}',  # wrong type
    '{"event_id":"bad-5","type":"page_view","lead_id":"lead-02",',  # truncated JSON
    '{"event_id":"bad-6","type":"download","lead_id":"lead-03","occurred_at":"1970-01-01T00:00:00Z","asset_id":"x"}',  # absurd time
    '{"event_id":"bad-7","type":"page_view","occurred_at":"2026-10-09T10:00:00Z","url":"https://example.com/"}',  # no lead_id
]
for i, line in enumerate(bad):
    lines.insert(20 + i * 15, line)
Path(__file__).with_name("events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
print(f"wrote {len(lines)} lines ({len(bad)} bad)")
