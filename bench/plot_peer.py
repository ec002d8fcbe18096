#!/usr/bin/env python3
"""Plots events/s against writers for each system of a peer run (the JSON that
`cargo run --release -p concord-bench --bin peer -- --out FILE` writes).

    python3 bench/plot_peer.py FILE.json OUT.png      (needs matplotlib)
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

run = json.load(open(sys.argv[1]))
systems = {}
for p in run["points"]:
    systems.setdefault(p["system"], []).append((p["writers"], p["events_per_sec"]))
fig, ax = plt.subplots(figsize=(7, 4.5))
for system, points in sorted(systems.items()):
    points.sort()
    ax.plot([w for w, _ in points], [r for _, r in points], marker="o", label=system)
ax.axhline(run["fsync_per_sec"], color="grey", linestyle="--", label="4 KiB write + fdatasync (1 thread)")
ax.set_xscale("log", base=2)
ax.set_xlabel("concurrent writers (one event per conditional append)")
ax.set_ylabel("events/s (durable)")
ax.set_title(f"Concord embedded vs UmaDB, same run, {run['cores']} cores, {run['seconds_per_point']} s per point")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
