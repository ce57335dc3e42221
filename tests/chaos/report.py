"""The chaos suite's one table: each scenario adds its row; ``conftest.py`` prints them
all at the end of the run (also when the suite runs alone: ``scripts/test tests/chaos``)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scoring.rules import RuleSet
from tests.integration.worker_harness import (
    WorkerStack,
    now_ms,
    record_payload,
    replay,
    wait_for_replayed_states,
)


@dataclass(frozen=True)
class Row:
    scenario: str
    events: int
    #: kills / restarts / pauses
    faults: str
    lost: int
    doubled: int
    #: hot/cooled records expected / seen (distinct ids) / physical duplicates
    hot: str
    seconds: float


ROWS: list[Row] = []

HEADER = (
    "| scenario | events | kills / restarts / pauses | lost | double-applied "
    "| hot expected / seen / duplicate ids | recovery s |"
)


def add_row(row: Row) -> None:
    ROWS.append(row)
    print(f"\n{HEADER}\n{format_row(row)}")


def format_row(row: Row) -> str:
    return (
        f"| {row.scenario} | {row.events:,} | {row.faults} | {row.lost} | {row.doubled} "
        f"| {row.hot} | {row.seconds:.1f} |"
    )


def check_against_replay(
    stack: WorkerStack,
    redis_url: str,
    rules: RuleSet,
    events: Sequence[Mapping[str, Any]],
    *,
    scenario: str,
    faults: str,
    started: float,
    timeout: float = 90.0,
) -> None:
    """What every scenario asserts once its fault is over, after adding its row: the
    stored states equal an offline replay of ``events`` (nothing lost, nothing applied
    twice), and every crossing is out with its deterministic id (those of lost writes
    may come twice, produced before the fault and again after it, never with another id)."""
    store, crossings = replay(events, rules, until_ms=now_ms())
    end = wait_for_replayed_states(redis_url, stack.key_prefix, rules, store, timeout)
    recovery_s = time.monotonic() - started
    ids = [record_payload(r)["event_id"] for r in stack.read_hot()]
    add_row(
        Row(
            scenario,
            len(events),
            faults,
            end.lost,
            end.doubled,
            f"{len(crossings)} / {len(set(ids))} / {len(ids) - len(set(ids))}",
            recovery_s,
        )
    )
    assert (end.lost, end.doubled) == (0, 0)
    assert {lead: s.sums for lead, s in end.states.items()} == {
        lead: s.sums for lead, s in store.states.items()
    }
    assert set(ids) == {c.event_id for c in crossings}
