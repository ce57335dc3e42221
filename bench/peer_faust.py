"""Peer (a): the naive faust-streaming agent. Per event: ``await`` a Redis GET of the lead's
JSON state, score with the project's engine (``scoring.state_machine.apply_lead_events``),
``await`` a SET, and for each crossing an acked produce. No batching, no Lua, no outbox,
no indexes: what a first Faust version of the worker would look like.

It produces the same crossings as the worker (same engine, same dedupe-window and offset
dedupe, kept in the one JSON value); it leaves out the outbox (a crash between SET and
produce loses the crossing), the cooling sweep and its indexes (cooling, ranks).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import orjson
import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_common import Progress, peer_args

from schemas.validation import Rejected, parse_event
from scoring.rules_file import default_rules_path, load_rules
from scoring.state import LeadState, Position
from scoring.state_machine import apply_lead_events


def build(args: Any) -> faust.App:
    rules = load_rules(default_rules_path())
    datadir = Path(args.state_dir or tempfile.mkdtemp(prefix="bench-faust-"))
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        autodiscover=False,
        store="memory://",
        datadir=str(datadir),
        topic_partitions=args.partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
    )
    source = app.topic(args.input, key_serializer="raw", value_serializer="raw")
    hot = app.topic(args.hot, key_serializer="raw", value_serializer="raw")
    client = redis.asyncio.Redis.from_url(args.redis_url)
    progress = Progress(args.expected, args.status)

    @app.agent(source)
    async def score(stream: Any) -> None:
        async for event in stream.events():
            progress.consumed()
            message = event.message
            parsed = parse_event(message.value, message.key, require_key=True)
            if not isinstance(parsed, Rejected):
                key = f"{args.prefix}{parsed.lead_id}"
                raw = await client.get(key)
                state = LeadState.from_dict(orjson.loads(raw)) if raw else None
                position = Position(f"{message.topic}:{message.partition}", message.offset)
                batch = apply_lead_events(state, [(parsed, position)], rules)
                if batch.applied_event_ids and batch.state is not None:
                    # the state carries its dedupe window (recent_ids)
                    await client.set(key, orjson.dumps(batch.state.to_dict()))
                for crossing in batch.crossings:
                    record = crossing.to_record(datetime.now(UTC)).model_dump_json().encode()
                    sent = await hot.send(key=parsed.lead_id.encode(), value=record)
                    await sent  # acknowledged
                    progress.crossings += 1
            progress.processed += 1
            if progress.complete:
                progress.write()
                shutil.rmtree(datadir, ignore_errors=True)

    return app


def main() -> None:
    args = peer_args(__doc__.split("\n\n")[0])
    app = build(args)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
