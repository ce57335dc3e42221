"""What every peer process shares (standard library only: it also runs in the Quix venv).

A peer is started by ``bench/driver.py`` with ``--expected N --status FILE`` and the names
of its topics, group and Redis prefix. It records the wall-clock time of the first message
it consumed and, once ``N`` messages are applied and the crossings they caused are
acknowledged by Kafka, writes ``FILE`` (JSON: first, done, processed, crossings) and exits.
The driver kills a peer that has not written its status in time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def peer_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--input", required=True)
    parser.add_argument("--hot", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--state-dir", default="")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--status", type=Path, required=True)
    return parser.parse_args()


@dataclass
class Progress:
    """First-consumed time, messages processed, crossings produced."""

    expected: int
    status: Path
    first: float = 0.0
    processed: int = 0
    crossings: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def consumed(self) -> None:
        if not self.first:
            self.first = time.time()

    @property
    def complete(self) -> bool:
        return self.processed >= self.expected

    def write(self) -> None:
        data = {
            "first": self.first,
            "done": time.time(),
            "processed": self.processed,
            "crossings": self.crossings,
            **self.extra,
        }
        tmp = self.status.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.status)


def iso_ms(ms: int) -> str:
    """RFC 3339 with milliseconds, as the project writes ``occurred_at``."""
    moment = EPOCH + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
