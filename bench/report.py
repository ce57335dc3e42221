"""The table ``scripts/bench`` prints (and docs/benchmarks.md shows), from the results JSON."""

from __future__ import annotations

import statistics
from typing import Any

ROWS = [
    ("floor_consume", "floor: confluent-kafka consume(10000) of the topic"),
    ("floor_store", "floor: RedisStore.apply_batch, 2000/batch"),
    ("worker", "leadscore worker, end to end"),
    ("peer_faust_naive", "peer: naive Faust agent (GET/score/SET per event)"),
    ("peer_quix", "peer: Quix Streams 3.28 + RocksDB state"),
    ("peer_handrolled", "peer: hand-rolled consume + 1 Lua call/batch"),
    ("replay", "replay (in process, one core)"),
]


def _num(value: Any, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _cpu(design_runs: dict[str, Any], key: str) -> str:
    runs = [r for r in design_runs.get(key, []) if r.get("ok")]
    if not runs:
        return "-"
    own = statistics.median(r["cpu_us_per_event"] for r in runs)
    in_redis = statistics.median(r.get("redis_cpu_us_per_event", 0.0) for r in runs)
    return f"{own:.0f} + {in_redis:.0f}"


def table_lines(results: dict[str, Any]) -> list[str]:
    throughput = results.get("throughput", {})
    runs = results.get("throughput_runs", {})
    ratios = results.get("ratios", {})
    design_runs = results.get("design_runs", {})
    leaves = results.get("leaves_out", {})
    lines = [
        f"| design ({results.get('events', 0):,} events, 4 partitions) | events/s (median) "
        "| per run | worker / it | CPU us/event: own + Redis | hot events vs replay | leaves out |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for key, label in ROWS:
        if key not in throughput:
            continue
        per_run = ", ".join(_num(x) for x in runs.get(key, [])) or "1 run"
        ratio = (
            "-" if key in ("worker", "replay") else _num(ratios.get(f"worker_over_{key}"), "{:.2f}")
        )
        checks = [r.get("hot_check") for r in design_runs.get(key, []) if r.get("hot_check")]
        if not checks:
            hot = "-"
        elif all(c["equal"] for c in checks):
            hot = f"equal ({checks[0]['expected']})"
        else:
            worst = max(checks, key=lambda c: c["missing"] + c["extra"])
            hot = f"differs: -{worst['missing']} +{worst['extra']} of {worst['expected']}"
        failed = sum(1 for r in design_runs.get(key, []) if not r.get("ok"))
        if failed:
            hot += f"; {failed} run(s) FAILED"
        name = f"**{label}**" if key == "worker" else label
        lines.append(
            f"| {name} | {_num(throughput[key])} | {per_run} | {ratio} | {_cpu(design_runs, key)} "
            f"| {hot} "
            f"| {leaves.get(key, '-')} |"
        )
    return lines


def other_lines(results: dict[str, Any]) -> list[str]:
    lines = [f"worker CPU: {_num(results.get('worker_cpu_us_per_event'), '{:.0f}')} us/event"]
    lat = results.get("latency_ms", {})
    if lat:
        lines += [
            "",
            "| offered load (events/s) | p50 ms | p95 ms | p99 ms | hot events "
            "| worker: events/batch | batch ms p50 / p99 (at most) "
            "| worker CPU us/event | machine busy % |",
        ]
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rate, v in lat.items():
            lines.append(
                f"| {int(rate):,} | {_num(v.get('p50'), '{:,.1f}')} | "
                f"{_num(v.get('p95'), '{:,.1f}')} | {_num(v.get('p99'), '{:,.1f}')} "
                f"| {v.get('hot_events', 0)} | {_num(v.get('events_per_batch'), '{:,.1f}')} "
                f"| {_num(v.get('batch_ms_p50_at_most'), '{:g}')} / "
                f"{_num(v.get('batch_ms_p99_at_most'), '{:g}')} "
                f"| {_num(v.get('worker_cpu_us_per_event'), '{:,.0f}')} "
                f"| {_num(v.get('machine_busy_pct'), '{:.0f}')} |"
            )
    mem = results.get("redis_memory", {})
    if mem:
        lines += [
            "",
            "| events/lead | leads | Redis bytes/lead (past the dedupe window) "
            "| inside the window | GB per 1M leads |",
        ]
        lines.append("|---:|---:|---:|---:|---:|")
        for per_lead, v in mem.items():
            lines.append(
                f"| {int(per_lead):,} | {v['leads']:,} | {v['bytes_per_lead']:,.0f} "
                f"| {_num(v.get('bytes_per_lead_inside_window'), '{:,.0f}')} "
                f"| {v['gb_per_1m_leads']:.2f} |"
            )
        lines.append(
            f"\ndedupe window: {_num(results.get('dedupe_bytes_per_event'), '{:.0f}')} "
            "bytes per event inside it"
        )
    rep = results.get("replay")
    if rep:
        lines.append(f"replay: {rep['records']:,} records in {rep['seconds']}s")
    return lines


def print_table(results: dict[str, Any]) -> None:
    print()
    print("\n".join(table_lines(results)))
    print()
    print("\n".join(other_lines(results)))
