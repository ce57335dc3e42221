"""Peer (b): the same scoring in Quix Streams 3.28, state in its RocksDB store (with its
changelog topic, Quix's default durability). Runs in its own venv
(.cache/bench-venvs/quix, made by scripts/bench: Quix pins an older confluent-kafka and
pydantic than the project), where the project is installed with ``--no-deps`` plus the
native core's wheel, so it scores with the project's engine
(``scoring.state_machine.apply_lead_events``) exactly as the worker does: the same
crossings, the same dedupe-window and offset dedupe (kept in the lead's RocksDB state).

It leaves out the cooling sweep on the wall clock and the Redis indexes (``top``,
``score`` read Redis); the state lives in the worker's local RocksDB, not in Redis.
Crossings are produced by Quix's producer and acknowledged at its checkpoint (here: on
stop, after the last message, when Quix flushes and commits).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quixstreams import Application, message_context

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_common import Progress, peer_args

from schemas.validation import Rejected, parse_event
from scoring.rules_file import default_rules_path, load_rules
from scoring.state import LeadState, Position
from scoring.state_machine import apply_lead_events


def main() -> None:
    args = peer_args(__doc__.split("\n\n")[0])
    rules = load_rules(default_rules_path())
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="bench-quix-"))
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=str(state_dir),
        loglevel="WARNING",
        commit_interval=5.0,
    )
    source = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    hot = app.topic(args.hot, key_serializer="str", value_serializer="json")
    progress = Progress(args.expected, args.status)

    def score(value: bytes, key: bytes, _timestamp: int, _headers: Any, state: Any) -> list[Any]:
        progress.consumed()
        records: list[Any] = []
        parsed = parse_event(value, key, require_key=True)
        if not isinstance(parsed, Rejected):
            stored = state.get("s")
            lead = LeadState.from_dict(stored) if stored else None
            context = message_context()
            position = Position(f"{context.topic}:{context.partition}", context.offset)
            batch = apply_lead_events(lead, [(parsed, position)], rules)
            if batch.applied_event_ids and batch.state is not None:
                state.set("s", batch.state.to_dict())  # with its dedupe window
            now = datetime.now(UTC)
            records = [c.to_record(now).model_dump(mode="json") for c in batch.crossings]
            progress.crossings += len(records)
        progress.processed += 1
        if progress.complete:
            app.stop()
        return records

    sdf = app.dataframe(source)
    sdf = sdf.apply(score, stateful=True, metadata=True, expand=True)
    sdf.to_topic(hot, key=lambda record: record["lead_id"])
    app.run()
    progress.write()
    shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
