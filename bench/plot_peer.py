#!/usr/bin/env python3
"""Plots events/s against writers for each system of a peer run (the JSON that
`cargo run --release -p concord-bench --bin peer -- --out FILE` writes).

    python3 bench/plot_peer.py FILE.json OUT.png      (needs matplotlib)
"""
import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

run = json.load(open(sys.argv[1]))
# With several rounds (`--rounds`), each system's line is its median at each writer count.
rates = {}
for p in run["points"]:
    rates.setdefault(p["system"], {}).setdefault(p["writers"], []).append(p["events_per_sec"])
rounds = run.get("rounds", 1)
fig, ax = plt.subplots(figsize=(7, 4.5))
for system, by_writers in sorted(rates.items()):
    writers = sorted(by_writers)
    ax.plot(writers, [statistics.median(by_writers[w]) for w in writers], marker="o", label=system)
ax.axhline(run["fsync_per_sec"], color="grey", linestyle="--", label="4 KiB write + fdatasync (1 thread)")
ax.set_xscale("log", base=2)
ax.set_xlabel("concurrent writers (one event per conditional append)")
ax.set_ylabel("events/s (durable)")
per_point = f"{run['seconds_per_point']} s per point" + (f", median of {rounds} rounds" if rounds > 1 else "")
ax.set_title(f"Concord vs UmaDB, same run, {run['cores']} cores, {per_point}", fontsize=10)
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
