"""The benchmark driver behind ``scripts/bench``: the worker against its floors and its peers,
on the same generated events, in the same run. Writes a results JSON (and two PNGs next to
it) and prints a table. See bench/README.md for what each figure means.

    scripts/bench --quick                       # < 15 min on 2 cores
    scripts/bench --json bench/results/full.json --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_lib  # noqa: E402
import redis  # noqa: E402
import redis.asyncio  # noqa: E402
from bench_lib import (  # noqa: E402
    REPO_ROOT,
    DesignRun,
    HotKey,
    Resources,
    compare_hot,
    hot_file_set,
    hot_set,
    loopback_only,
    redis_store_floor,
    run_peer,
    run_worker,
)
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: E402
from measures import LatencyPlan, latency, memory, replay_throughput  # noqa: E402

from schemas.validation import Rejected, parse_event  # noqa: E402
from scoring.rules import RuleSet  # noqa: E402
from scoring.rules_file import default_rules_path, load_rules  # noqa: E402
from streams.live.interfaces import RawMessage, position_of  # noqa: E402
from tests.integration.worker_harness import FUTURE_MS, WorkerConfig, encode, produce  # noqa: E402
from tests.strategies import DAY_MS, generate_event_log  # noqa: E402

PEERS = ("peer_faust_naive", "peer_quix", "peer_handrolled")
DESIGNS = ("worker", *PEERS)
LEAVES_OUT = {
    "worker": "-",
    "peer_faust_naive": "outbox, cooling sweep, indexes (top/score); per-event GET/SET",
    "peer_quix": "Redis (state in local RocksDB + changelog), cooling sweep, indexes",
    "peer_handrolled": (
        "exact cooling time between events, fit/min_grade, reasons and crossing ids, "
        "offset dedupe, outbox, Redis Cluster"
    ),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (< 15 min)")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "bench/results/bench.json")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (>= 3)")
    parser.add_argument("--events", type=int, help="bench events (default 100k quick, 300k)")
    parser.add_argument("--replay-events", type=int, help="replay log size (default 1M)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--only", default=",".join(DESIGNS), help="designs to race")
    parser.add_argument("--skip", default="", help="latency,memory,replay,plots")
    parser.add_argument("--quix-python", default=sys.executable)
    parser.add_argument("--plot-python", default="")
    parser.add_argument("--setup-seconds-dir", type=Path)
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a LEADSCORE_* setting for the worker (race and latency runs), e.g. "
        "LEADSCORE_BATCH_LINGER=0.005; repeatable; recorded in the results",
    )
    return parser.parse_args()


# ------------------------------------------------------------------------------ floors


def floor_consume(
    bootstrap: str, topic: str, partitions: int, expected: int
) -> tuple[list[Any], float]:
    """confluent-kafka batch consume (``consume(10000)``) of the whole topic with warm
    connections: a first message is fetched, the partitions are re-assigned at the
    beginning, and the clock runs from there to the last message (from the first message
    instead, librdkafka's pre-fetch would make it millions/s; from the consumer's creation,
    the connect and group-less assign dominate short runs). Returns (messages, seconds)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-floor",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
            # the warm-up's fetch waits at the log end; do not let it hold the re-assign
            "fetch.wait.max.ms": 10,
        }
    )
    where = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
    out: list[Any] = []
    deadline = time.monotonic() + 300
    try:
        consumer.assign(where)
        while not consumer.consume(num_messages=1, timeout=1.0) and time.monotonic() < deadline:
            pass
        consumer.unassign()
        started = time.perf_counter()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        while len(out) < expected and time.monotonic() < deadline:
            want = min(10_000, expected - len(out))
            batch = consumer.consume(num_messages=want, timeout=0.1)
            out.extend(m for m in batch if not m.error())
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    return out, seconds


# ------------------------------------------------------------------------------ one round


class Race:
    """Runs each design once on the bench topic with fresh names; checks its hot events."""

    def __init__(
        self, args: argparse.Namespace, res: Resources, source: str, expected: int, tmp: Path
    ) -> None:
        self.args = args
        self.res = res
        self.source = source
        self.expected = expected
        self.tmp = tmp
        self.timeout = 120 + expected / 300  # a stuck design is killed, reported as failed

    def run(self, design: str, round_no: int, reference: set[HotKey]) -> DesignRun:
        tag = f"r{round_no}-{design.replace('_', '-')}"
        hot = self.res.topic(f"{tag}-hot", 2)
        group, prefix = self.res.group(tag), self.res.prefix(tag)
        log = self.tmp / f"{tag}.log"
        if design == "worker":
            dlq = self.res.topic(f"{tag}-dlq", 1)
            config = WorkerConfig(
                bootstrap=self.res.bootstrap,
                redis_url=self.res.redis_url,
                app_id=group,
                input_topics=(self.source,),
                hot_topic=hot,
                dlq_topic=dlq,
                key_prefix=prefix,
                partitions=self.args.partitions,
                sweep_interval=5.0,
                extra_env=worker_env(self.args),
            )
            result = run_worker(config, self.expected, log, self.timeout)
        else:
            python = self.args.quix_python if design == "peer_quix" else sys.executable
            script = {
                "peer_faust_naive": "peer_faust.py",
                "peer_quix": "peer_quix.py",
                "peer_handrolled": "peer_handrolled.py",
            }[design]
            command = [
                python,
                str(BENCH / script),
                *("--bootstrap", self.res.bootstrap, "--redis-url", self.res.redis_url),
                *("--input", self.source, "--hot", hot, "--group", group, "--prefix", prefix),
                *("--state-dir", str(self.tmp / f"{tag}-state")),
                *("--partitions", str(self.args.partitions), "--expected", str(self.expected)),
                *("--status", str(self.tmp / f"{tag}.status.json")),
            ]
            result = run_peer(design, command, self.tmp / f"{tag}.status.json", log, self.timeout)
        if result.ok:
            result.extra["hot_check"] = compare_hot(hot_set(self.res.bootstrap, hot), reference)
        self.res.drop_prefix(prefix)
        print(f"  round {round_no} {design}: {_describe(result)}", flush=True)
        return result


def _describe(run: DesignRun) -> str:
    if not run.ok:
        return f"FAILED ({run.error[:300]})"
    check = run.extra.get("hot_check", {})
    return (
        f"{run.events} in {run.seconds:.2f}s = {run.rate:,.0f}/s, CPU "
        f"{run.cpu_seconds / max(run.events, 1) * 1e6:.0f} us/event (+ Redis "
        f"{run.redis_cpu_seconds / max(run.events, 1) * 1e6:.0f}), start-up "
        f"{run.startup:.1f}s, hot {check.get('got')}/{check.get('expected')} "
        f"(missing {check.get('missing')}, extra {check.get('extra')})"
    )


# ------------------------------------------------------------------------------ main


def main() -> None:
    args = parse_args()
    if args.runs < 3:
        raise SystemExit("--runs must be at least 3 (medians over interleaved runs)")
    wall = time.perf_counter()
    bootstrap = os.environ.get("LEADSCORE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    redis_url = os.environ.get("LEADSCORE_REDIS_URL", "redis://127.0.0.1:16379/0")
    loopback_only(bootstrap, redis_url)
    events_n = args.events or (100_000 if args.quick else 300_000)
    replay_n = args.replay_events or 1_000_000
    designs = [d for d in DESIGNS if d in args.only.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    rules = load_rules(default_rules_path())
    res = Resources(bootstrap, redis_url)
    results: dict[str, Any] = {
        "machine": machine(redis_url),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": events_n,
        "command": "scripts/bench " + " ".join(sys.argv[1:]),
        "worker_env": worker_env(args),
    }
    print(f"bench {res.name}: {events_n:,} events, {args.runs} rounds; {results['machine']}")
    with tempfile.TemporaryDirectory(prefix=f"{res.name}-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            race(args, res, rules, tmp, events_n, designs, results)
            extras(args, res, rules, tmp, replay_n, skip, results)
        finally:
            res.close()
    results["machine"]["load_avg_at_end"] = list(os.getloadavg())
    results["wall_seconds"] = round(time.perf_counter() - wall, 1)
    results["setup_seconds"] = setup_seconds(args.setup_seconds_dir)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    if "plots" not in skip and args.plot_python:
        subprocess.run(
            [args.plot_python, str(BENCH / "plots.py"), str(args.json)], check=False, timeout=120
        )
    from report import print_table

    print_table(results)
    print(f"\nresults: {args.json} ({results['wall_seconds']:.0f}s)")


def worker_env(args: argparse.Namespace) -> dict[str, str]:
    """``--worker-env NAME=VALUE`` settings, for the worker's environment."""
    pairs = (item.partition("=") for item in args.worker_env)
    return {name: value for name, sep, value in pairs if sep and name.startswith("LEADSCORE_")}


def race(
    args: argparse.Namespace,
    res: Resources,
    rules: RuleSet,
    tmp: Path,
    events_n: int,
    designs: list[str],
    results: dict[str, Any],
) -> None:
    events = generate_event_log(
        7,
        events_n,
        max(1, events_n // 20),
        start_ms=FUTURE_MS,
        span_ms=45 * DAY_MS,
        buying_fraction=0.15,
        lead_prefix="bench-",
    )
    records = [encode(e) for e in events]
    log = tmp / "events.jsonl"
    log.write_bytes(b"".join((value or b"") + b"\n" for _, value in records))
    source = res.topic("events", args.partitions)
    produce(bootstrap=res.bootstrap, topic=source, records=records)
    reference = reference_hot(log, max(e["occurred_at"] for e in events), tmp)
    results["reference_hot_events"] = len(reference)
    print(f"  produced {len(records):,}; replay reference: {len(reference)} hot events")
    runs: dict[str, list[DesignRun]] = {d: [] for d in designs}
    floors: dict[str, list[float]] = {"floor_consume": [], "floor_store": []}
    race_ = Race(args, res, source, len(records), tmp)
    for round_no in range(args.runs):
        messages, seconds = floor_consume(res.bootstrap, source, args.partitions, len(records))
        floors["floor_consume"].append(len(messages) / seconds)
        floors["floor_store"].append(store_floor(res, rules, messages, round_no))
        print(
            f"  round {round_no} floors: consume {floors['floor_consume'][-1]:,.0f}/s, "
            f"store {floors['floor_store'][-1]:,.0f}/s",
            flush=True,
        )
        for design in designs:
            runs[design].append(race_.run(design, round_no, reference))
    summarise(results, runs, floors)


def store_floor(res: Resources, rules: RuleSet, messages: list[Any], round_no: int) -> float:
    items = []
    for m in messages:
        raw = RawMessage(m.topic(), m.partition(), m.offset(), m.key(), m.value())
        parsed = parse_event(raw.value, raw.key, require_key=True)
        assert not isinstance(parsed, Rejected), parsed
        items.append((parsed, position_of(raw)))
    prefix = res.prefix(f"r{round_no}-floor")
    seconds = asyncio.run(redis_store_floor(res.redis_url, rules, prefix, items))
    res.drop_prefix(prefix)
    return len(items) / seconds


def reference_hot(log: Path, end: str, tmp: Path) -> set[HotKey]:
    """``leadscore replay --at <end>`` on the bench log: the hot events every design owes."""
    out = tmp / "replay-ref"
    subprocess.run(
        [
            str(Path(sys.executable).with_name("leadscore")),
            *("replay", str(log), "--rules", str(default_rules_path())),
            *("--out", str(out), "--at", end, "--no-progress"),
        ],
        check=True,
        timeout=600,
        capture_output=True,
    )
    return hot_file_set(out / "hot.jsonl")


def summarise(
    results: dict[str, Any], runs: dict[str, list[DesignRun]], floors: dict[str, list[float]]
) -> None:
    throughput: dict[str, float | None] = {k: statistics.median(v) for k, v in floors.items()}
    per_run: dict[str, Any] = {k: [round(x) for x in v] for k, v in floors.items()}
    for design, design_runs in runs.items():
        rates = [r.rate for r in design_runs if r.ok]
        throughput[design] = statistics.median(rates) if rates else None
        per_run[design] = [round(r.rate) if r.ok else None for r in design_runs]
    results["throughput"] = {
        k: throughput.get(k)
        for k in ("floor_consume", "floor_store", "worker", *PEERS, "replay")
        if k in throughput or k == "replay"
    }
    results["throughput_runs"] = per_run
    worker_runs = runs.get("worker", [])
    cpu = [r.cpu_seconds / r.events * 1e6 for r in worker_runs if r.ok]
    results["worker_cpu_us_per_event"] = statistics.median(cpu) if cpu else None
    results["ratios"] = ratios(runs, floors)
    results["design_runs"] = {
        d: [
            {
                "ok": r.ok,
                "events_per_s": round(r.rate),
                "seconds": round(r.seconds, 3),
                "cpu_us_per_event": round(r.cpu_seconds / max(r.events, 1) * 1e6, 1),
                "redis_cpu_us_per_event": round(r.redis_cpu_seconds / max(r.events, 1) * 1e6, 1),
                "startup_s": round(r.startup, 2),
                "error": r.error,
                **r.extra,
            }
            for r in rs
        ]
        for d, rs in runs.items()
    }
    results["leaves_out"] = LEAVES_OUT


def ratios(runs: dict[str, list[DesignRun]], floors: dict[str, list[float]]) -> dict[str, Any]:
    """Medians of per-run ratios worker / X (X = a floor or a peer of the same round)."""
    worker = runs.get("worker", [])
    out: dict[str, Any] = {}
    others: dict[str, Callable[[int], float | None]] = {
        "floor_consume": lambda i: floors["floor_consume"][i],
        "floor_store": lambda i: floors["floor_store"][i],
    }
    for peer in PEERS:
        if peer in runs:
            others[peer] = lambda i, p=peer: runs[p][i].rate or None  # type: ignore[misc]
    for name, other in others.items():
        values = [w.rate / o for i, w in enumerate(worker) if w.ok and (o := other(i)) is not None]
        out[f"worker_over_{name}"] = round(statistics.median(values), 3) if values else None
    return out


def extras(
    args: argparse.Namespace,
    res: Resources,
    rules: RuleSet,
    tmp: Path,
    replay_n: int,
    skip: set[str],
    results: dict[str, Any],
) -> None:
    """Latency, Redis memory, replay; a part that fails is recorded in ``errors``, and the
    others still run."""

    def run_latency() -> None:
        seconds = (10.0, 6.0, 3.0) if args.quick else (30.0, 20.0, 10.0)
        plans = [LatencyPlan(r, s) for r, s in zip((1000, 5000, 20000), seconds, strict=True)]
        results["latency_ms"] = latency(res, plans, args.partitions, tmp, worker_env(args))

    def run_memory() -> None:
        # 100 leads at 1,000 events even with --quick: the store-wide keys (name dictionary,
        # meta, index summaries, ~1.7 KB) spread over 20 leads added ~85 bytes to each.
        mem = memory(res, rules, {20: 1000, 1000: 100} if args.quick else {20: 10_000, 1000: 100})
        results["redis_bytes_per_lead"] = {k: v["bytes_per_lead"] for k, v in mem.items()}
        results["dedupe_bytes_per_event"] = mem["1000"]["dedupe_bytes_per_event"]
        results["redis_memory"] = mem

    def run_replay() -> None:
        rep = replay_throughput(replay_n, 50_000)
        results.setdefault("throughput", {})["replay"] = rep["rate"]
        results["replay"] = rep
        print(f"  replay: {rep}", flush=True)

    parts = {"latency": run_latency, "memory": run_memory, "replay": run_replay}
    for name, part in parts.items():
        if name in skip:
            continue
        try:
            part()
        except Exception as exc:
            print(f"  {name}: FAILED: {exc!r}"[:2000], flush=True)
            results.setdefault("errors", {})[name] = repr(exc)[:2000]


def machine(redis_url: str) -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("server")
        redis_version = str(info["redis_version"])
        bench_lib.REDIS_PID[0] = int(info["process_id"])
    finally:
        client.close()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "kafka": os.environ.get("LEADSCORE_KAFKA_VERSION", "?"),
        "redis": redis_version,
        "load_avg_at_start": list(os.getloadavg()),
    }


def setup_seconds(folder: Path | None) -> dict[str, int]:
    if folder is None:
        return {}
    # <venv>.setup-seconds: first-time creation; <venv>.update-seconds: the last re-install
    return {p.name.removesuffix("-seconds"): int(p.read_text()) for p in folder.glob("*-seconds")}


if __name__ == "__main__":
    main()
