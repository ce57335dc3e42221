"""The chaos suite's one table: each scenario adds its row; ``conftest.py`` prints them
all at the end of the run (also when the suite runs alone: ``scripts/test tests/chaos``)."""

from __future__ import annotations

from dataclasses import dataclass


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
