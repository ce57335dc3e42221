"""The two PNGs of ``scripts/bench``, next to the results JSON: throughput by design and
latency percentiles by offered load. Runs in the plot venv (.cache/bench-venvs/plot: only
matplotlib, not a project dependency).

    .cache/bench-venvs/plot/bin/python bench/plots.py bench/results/bench.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {
    "floor_consume": "floor:\nconsume",
    "floor_store": "floor:\nRedis store",
    "worker": "worker",
    "peer_faust_naive": "naive\nFaust",
    "peer_quix": "Quix\n+RocksDB",
    "peer_handrolled": "hand-rolled\n+Lua",
    "replay": "replay\n(offline)",
}


def throughput_plot(results: dict, path: Path) -> None:
    data = {k: v for k, v in results["throughput"].items() if v}
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=80)
    colours = ["#999999" if k.startswith("floor") or k == "replay" else "#4c72b0" for k in data]
    colours = ["#dd8452" if k == "worker" else c for k, c in zip(data, colours, strict=True)]
    bars = ax.bar([LABELS.get(k, k) for k in data], list(data.values()), color=colours)
    ax.set_yscale("log")
    ax.set_ylim(top=max(data.values()) * 2.5)  # room for the labels
    ax.set_ylabel("events/s (log)")
    ax.set_title(f"Throughput, {results['events']:,} events, median of runs", fontsize=10)
    for bar, value in zip(bars, data.values(), strict=True):
        ax.annotate(
            f"{value:,.0f}",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def latency_plot(results: dict, path: Path) -> None:
    lat = results.get("latency_ms") or {}
    rates = [int(r) for r in lat if lat[r].get("p50") is not None]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=80)
    for p, marker in (("p50", "o"), ("p95", "s"), ("p99", "^")):
        ax.plot(rates, [lat[str(r)][p] for r in rates], marker=marker, label=p)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(rates, [f"{r:,}" for r in rates])
    ax.set_xlabel("offered load (events/s)")
    ax.set_ylabel("produce -> hot event (ms)")
    ax.set_title("Worker latency by offered load", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    path = Path(sys.argv[1])
    results = json.loads(path.read_text())
    throughput_plot(results, path.with_name(path.stem + "-throughput.png"))
    if results.get("latency_ms"):
        latency_plot(results, path.with_name(path.stem + "-latency.png"))
    print(f"plots: {path.with_name(path.stem + '-*.png')}")


if __name__ == "__main__":
    main()
