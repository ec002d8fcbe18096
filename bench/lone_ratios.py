"""Ratios of a bench/lone.sh run: each round's lone rate / plain SQLite and lone p50 / fsync
p50 for both binaries, then the medians and ranges (each ratio taken within its round).

    python3 bench/lone_ratios.py LONE.txt
"""
import collections
import statistics
import sys

rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
rounds = collections.defaultdict(dict)
for r, label, rate, p50 in rows:
    rounds[int(r)][label] = (float(rate), float(p50))
rate_ratios, p50_ratios = [], []
for r, d in sorted(rounds.items()):
    f, s, b, a = d["fsync"], d["sqlite"], d["before"], d["after"]
    print(
        "round %d  fsync %.0f/s p50 %.3f  sqlite %.0f/s  before %.0f/s p50 %.3f (%.2fx, p50 %.2fx)  after %.0f/s p50 %.3f (%.2fx, p50 %.2fx)"
        % (r, f[0], f[1], s[0], b[0], b[1], b[0] / s[0], b[1] / f[1], a[0], a[1], a[0] / s[0], a[1] / f[1])
    )
    rate_ratios.append((b[0] / s[0], a[0] / s[0]))
    p50_ratios.append((b[1] / f[1], a[1] / f[1]))


def summary(pairs, i):
    xs = [p[i] for p in pairs]
    return "%.2fx (%.2f-%.2fx)" % (statistics.median(xs), min(xs), max(xs))


print("lone rate / plain SQLite (target >= 0.9x): before %s, after %s" % (summary(rate_ratios, 0), summary(rate_ratios, 1)))
print("lone p50 / fsync p50 (target <= 1.2x):     before %s, after %s" % (summary(p50_ratios, 0), summary(p50_ratios, 1)))
