"""Segment-spec input (schemas.segment): each call type mapped as documented, errors naming
the Segment field, unsupported calls dead-lettered by name, and the example log replayed
with --format segment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from schemas.events import LeadProfile, PageView, Track
from schemas.segment import parse_segment
from schemas.validation import Rejected
from streams.cli import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "segment"


def message(kind: str, **fields: Any) -> bytes:
    base: dict[str, Any] = {
        "type": kind,
        "messageId": "m-1",
        "userId": "u-1",
        "timestamp": "2026-11-20T10:00:00Z",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def replay_segment(log: Path, out: Path, *extra: str) -> None:
    """``leadscore replay LOG --format segment`` with the example's rules, into ``out``."""
    args = ["replay", str(log), "--format", "segment", "--rules", str(EXAMPLE / "rules.yaml")]
    args += extra
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output


def test_page_takes_its_url_from_properties_else_the_page_context() -> None:
    event = parse_segment(
        message(
            "page",
            name="Pricing",
            properties={"path": "/pricing"},
            context={
                "page": {"url": "https://a.example/pricing", "referrer": "https://g.example/"}
            },
        )
    )
    assert isinstance(event, PageView)
    assert (event.url, event.title, event.referrer) == (
        "https://a.example/pricing",
        "Pricing",
        "https://g.example/",
    )
    assert event.properties == {"path": "/pricing"}
    own = parse_segment(
        message("page", properties={"url": "https://a.example/x"}, context={"page": {"url": "y"}})
    )
    assert isinstance(own, PageView) and own.url == "https://a.example/x"
    direct = parse_segment(  # analytics.js sends an empty referrer for a direct visit
        message("page", properties={"url": "https://a.example/", "referrer": "", "title": ""})
    )
    assert isinstance(direct, PageView) and (direct.referrer, direct.title) == (None, None)


def test_track_keeps_its_name_and_flattens_nested_properties() -> None:
    event = parse_segment(
        message(
            "track",
            event="Product Added",
            properties={"price": 99.5, "product": {"sku": "X", "dims": {"w": 3}}, "items": [{}]},
        )
    )
    assert isinstance(event, Track)
    assert event.event == "Product Added"
    assert event.properties == {"price": 99.5, "product.sku": "X", "product.dims.w": 3}


def test_identify_maps_traits_to_the_profile() -> None:
    event = parse_segment(
        message(
            "identify",
            anonymousId="anon-1",
            traits={
                "email": "j@globex.example",
                "title": "CTO",
                "company": {"name": "Globex", "employee_count": 350, "industry": "software"},
                "address": {"country": "DE"},
                "seniority": "c-level",
                "favourite_colour": "green",
            },
        )
    )
    assert isinstance(event, LeadProfile)
    assert event.lead_id == "u-1"  # userId wins over anonymousId
    assert (event.email, event.job_title, event.company, event.company_size) == (
        "j@globex.example",
        "CTO",
        "Globex",
        "201-1000",
    )
    assert (event.industry, event.country, event.seniority) == ("software", "DE", "c-level")
    assert event.properties == {"favourite_colour": "green"}  # a fit rule may test it


def test_group_is_the_leads_account_in_its_profile() -> None:
    event = parse_segment(
        message(
            "group",
            groupId="globex",
            traits={"name": "Globex", "employees": 1200, "plan": "enterprise", "hq": {"c": "DE"}},
        )
    )
    assert isinstance(event, LeadProfile)
    assert (event.company, event.company_size) == ("Globex", "1001-5000")
    assert event.properties == {
        "account_id": "globex",
        "account.name": "Globex",
        "account.employees": 1200,
        "account.plan": "enterprise",
        "account.hq.c": "DE",
    }


def test_anonymous_id_and_original_timestamp_are_the_fallbacks() -> None:
    event = parse_segment(
        message(
            "track",
            userId=None,
            anonymousId="anon-1",
            timestamp=None,
            originalTimestamp="2026-11-20T10:00:00+01:00",
            event="Trial Started",
        )
    )
    assert isinstance(event, Track)
    assert event.lead_id == "anon-1"
    assert event.occurred_at_ms == 1_795_165_200_000  # 09:00 UTC


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (message("track", event="X", messageId=None), "messageId: missing"),
        (message("track", event="X", userId=None), "userId, anonymousId: missing"),
        (message("track", event="X", timestamp="yesterday"), "timestamp: expected RFC 3339"),
        (message("track"), "event: "),
        (message("track", event="download"), "event: 'download' is the name of a leadscore"),
        (message("page"), "properties.url: missing (and no context.page.url)"),
        (message("page", properties={"url": 5}), "properties.url: expected"),
        (message("identify", traits={"email": "x" * 3000}), "traits.email: "),
        (message("alias", previousId="anon-1", userId="anon-1"), "userId: the same as lead_id"),
        (message("alias", userId="u-1"), "previousId: missing"),
        (message("group"), "groupId: missing"),
        (message("group", groupId="g", traits=[1]), "traits: expected an object"),
        (message("screen"), "type: screen is not supported yet"),
        (
            message("launch"),
            "type: expected one of page, track, identify, alias, group, got 'launch'",
        ),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"type": "page\xff"}', "not valid UTF-8: byte 0xff at offset 14"),
        ("{\udcff}", "not valid UTF-8: byte 0xff at offset 1"),
        (b"", "empty message"),
        (b'{"type": "page", "type": "track"}', "type: repeated key"),
    ],
)
def test_a_message_that_breaks_the_spec_names_the_segment_field(
    data: bytes | str, error: str
) -> None:
    result = parse_segment(data)
    assert isinstance(result, Rejected), result
    assert result.error.startswith(error), result.error


def test_the_kafka_key_must_be_the_lead_id() -> None:
    data = message("track", event="X")
    assert not isinstance(parse_segment(data, b"u-1", require_key=True), Rejected)
    wrong = parse_segment(data, b"anon-1", require_key=True)
    assert isinstance(wrong, Rejected) and wrong.kind == "key_mismatch"


def test_the_example_replays_without_identity_merges(tmp_path: Path) -> None:
    replay_segment(EXAMPLE / "events.jsonl", tmp_path / "plain", "--no-merge-identities")
    hot = [json.loads(line) for line in (tmp_path / "plain/hot.jsonl").read_text().splitlines()]
    assert [(r["type"], r["lead_id"], r["trigger_event_id"]) for r in hot] == [
        ("lead_became_hot", "u-1024", "seg-009")
    ]
    bad = json.loads((tmp_path / "plain/summary.json").read_text())["bad_records"]
    assert [b["line"] for b in bad] == [12]  # the alias: identity merges are off
    assert bad[0]["error"].startswith("type: lead_linked: identity merges are off")


def test_the_example_replays_with_format_segment(tmp_path: Path) -> None:
    replay_segment(EXAMPLE / "events.jsonl", tmp_path)
    hot = [json.loads(line) for line in (tmp_path / "hot.jsonl").read_text().splitlines()]
    # The anonymous visit (pricing page, before the identify) counts for u-1024: it turns
    # hot a day earlier than on its own events (seg-009); the alias repeats the link.
    assert [(r["type"], r["lead_id"], r["trigger_event_id"]) for r in hot] == [
        ("lead_merged", "anon-7f3c", "seg-004>anon-7f3c"),
        ("lead_became_hot", "u-1024", "seg-008"),
    ]
    assert hot[0]["merged_into"] == "u-1024"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["bad_records"] == []
    assert summary["counts"]["duplicates"] == 1  # seg-012 re-sends seg-009's messageId


def test_replay_reads_every_record_as_segment_like_the_worker(tmp_path: Path) -> None:
    """A leadscore-format line in a Segment log is dead-lettered live, so replay rejects it
    too (the native reader of leadscore events is not used for other formats)."""
    log = tmp_path / "mixed.jsonl"
    leadscore_line = {
        "event_id": "e1",
        "type": "page_view",
        "lead_id": "u-1",
        "occurred_at": "2026-11-20T10:00:00Z",
        "url": "https://a.example/",
    }
    log.write_bytes(
        message("track", event="Trial Started")
        + b"\n"
        + json.dumps(leadscore_line).encode()
        + b"\n"
    )
    replay_segment(log, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["counts"]["applied"], summary["counts"]["bad"]) == (1, 1)
    assert summary["bad_records"][0]["error"].startswith("type: expected one of page")
