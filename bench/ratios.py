#!/usr/bin/env python3
"""The table of ratios of a `bench/run.sh` results file, against issue 6's targets.

    python3 bench/ratios.py RESULTS.jsonl [WRITERS=64]

Each line of RESULTS.jsonl is `{"label": …, "round": k, "report": <concord bench --json>}`
(`round` absent means round 1). A ratio is only ever taken between two figures of the same
round: the machine moves between rounds (on the VMs here, ±20 % within minutes), so each
round's baselines are what its figures are judged against. With several rounds a line
shows the median ratio and the range over rounds; the verdict is the median's, and
"(n of m rounds)" says how many rounds met the target on their own. The `cpu probe` line
(a timed Python loop per round) is printed beside the ratios: the two absolute targets
(read, catch-up) are only as fast as the CPU was in that round.
"""

import json
import statistics
import sys

USAGE = "usage: python3 bench/ratios.py RESULTS.jsonl [WRITERS=64]"


def load(path):
    """{round: {label: report}} from a results file."""
    rounds = {}
    with open(path) as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                d = json.loads(text)
                rounds.setdefault(int(d.get("round", 1)), {})[d["label"]] = d["report"]
            except (ValueError, KeyError, TypeError) as e:
                sys.exit(f"{path}:{number}: not a results line ({e})")
    return rounds


def rate(rows, label):
    r = rows.get(label)
    return r["events_per_sec"] if r else None


def p50(rows, label):
    r = rows.get(label)
    return r.get("p50_ms") if r else None


def table(rounds, w):
    """The lines of the ratio table (a list of strings)."""
    out = []

    def line(what, num, den, target=None):
        pairs = []
        for rows in rounds.values():
            a = rate(rows, num)
            b = rate(rows, den) if isinstance(den, str) else den
            if a is not None and b:
                pairs.append((a, b))
        if not pairs:
            return
        ratios = [a / b for a, b in pairs]
        median = statistics.median(ratios)
        verdict = ""
        if target is not None:
            verdict = ("  met" if median >= target else "  NOT met") + f" (target >= {target}x)"
        if len(pairs) == 1:
            a, b = pairs[0]
            out.append(f"{what:<58} {a:>11.0f} / {b:>11.0f} = {median:6.2f}x{verdict}")
        else:
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}x"
            count = ""
            if target is not None:
                count = f" ({sum(r >= target for r in ratios)} of {len(ratios)} rounds)"
            out.append(f"{what:<58} median {median:6.2f}x  range {spread:<13}{verdict}{count}")

    def latency(what, num, den, target):
        """A ratio of median latencies: lower is better, the target is a ceiling."""
        ratios = []
        for rows in rounds.values():
            a, b = p50(rows, num), p50(rows, den)
            if a is not None and b:
                ratios.append(a / b)
        if not ratios:
            return
        median = statistics.median(ratios)
        verdict = ("  met" if median <= target else "  NOT met") + f" (target <= {target}x)"
        spread = "" if len(ratios) == 1 else f"  range {min(ratios):.2f}-{max(ratios):.2f}x"
        out.append(f"{what:<58} {median:6.2f}x{spread}{verdict}")

    n = len(rounds)
    out.append("")
    out.append("ratios (same run)" if n == 1 else f"ratios (each within its round; {n} rounds)")
    line(f"embedded append w={w} / sqlite w={w}", f"embedded append w={w}", f"sqlite w={w}", 20)
    line("embedded append w=1 / sqlite w=1", "embedded append w=1", "sqlite w=1", 0.9)
    latency("embedded append w=1 p50 / fsync w=1 p50", "embedded append w=1", "fsync w=1", 1.2)
    line(f"http append w={w} / embedded append w={w}", f"http append w={w}", f"embedded append w={w}", 0.6)
    latency("http append w=1 p50 / embedded append w=1 p50", "http append w=1", "embedded append w=1", 1.5)
    line("embedded append w=1 / fsync w=1", "embedded append w=1", "fsync w=1")
    line(f"embedded append w={w} / fsync w=1", f"embedded append w={w}", "fsync w=1")
    line(f"embedded hot rebase-unless / append w={w}", f"embedded hot w={w} rebase-unless", f"embedded append w={w}", 0.8)
    line("embedded read (events/s) / 1 000 000", "embedded read n=100000", 1_000_000, 1)
    line("embedded catchup (events/s) / 500 000", "embedded catchup n=100000", 500_000, 1)
    line(f"redis append w={w} / minimal Lua script w={w}", f"redis append w={w}", f"lua w={w}", 0.9)
    line(f"redis append w={w} / raw xadd w={w}", f"redis append w={w}", f"xadd w={w}")
    line(f"redis append w={w} batch=10 / raw xadd w={w}", f"redis append w={w} batch=10", f"xadd w={w}", 1)
    line(f"redis hot rebase-unless / append w={w}", f"redis hot w={w} rebase-unless", f"redis append w={w}", 0.8)
    probes = [rows["cpu probe"]["seconds"] for rows in rounds.values() if "cpu probe" in rows]
    if probes:
        spread = "" if len(probes) == 1 else f" (range {min(probes):.2f}-{max(probes):.2f} s)"
        out.append(f"cpu probe, 10 M-step Python loop: {statistics.median(probes):.2f} s{spread}"
                   " (absolute targets move with it)")
    cpu = [rows[f"http append w={w}"]["server_cpu_us_per_event"] for rows in rounds.values()
           if "server_cpu_us_per_event" in rows.get(f"http append w={w}", {})]
    if cpu:
        spread = "" if len(cpu) == 1 else f" (range {min(cpu):.1f}-{max(cpu):.1f})"
        out.append(f"http server CPU per event at w={w}: {statistics.median(cpu):.1f} us{spread}"
                   " (bench/server-cpu.sh: every thread of concord serve, store included)")
    for b in ("embedded", "redis"):
        retries = [rows[f"{b} hot w={w} rebase-unless"]["retries"]
                   for rows in rounds.values() if f"{b} hot w={w} rebase-unless" in rows]
        if retries:
            out.append(f"{b} hot rebase-unless retries: {max(retries)} (target 0)"
                       + ("" if n == 1 else f" (most in any of {len(retries)} rounds)"))
    return out


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(USAGE)
    rounds = load(sys.argv[1])
    if not rounds:
        sys.exit(f"{sys.argv[1]}: no results")
    print("\n".join(table(rounds, sys.argv[2] if len(sys.argv) == 3 else "64")))


if __name__ == "__main__":
    main()
