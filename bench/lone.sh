#!/usr/bin/env bash
# The lone writer of two `concord` binaries beside its two baselines, in one run: per round,
# the 4 KiB write + fdatasync loop (the p50 bound), plain SQLite one transaction per event
# (the rate bound), then `bench append --writers 1` of each binary on a fresh store, the
# order of the two alternating by round. Prints each round and the medians of the issue-22
# ratios (lone rate / plain SQLite, lone p50 / fsync p50), each taken within its round.
#
#   bench/lone.sh BEFORE AFTER [ROUNDS=8] [SECONDS=3]
#
# Environment: BENCH_DIR (default target/bench-run) holds the stores.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { echo "usage: bench/lone.sh BEFORE AFTER [ROUNDS] [SECONDS]" >&2; exit 2; }
before="$1"; after="$2"; ROUNDS="${3:-8}"; SECS="${4:-3}"
for b in "$before" "$after"; do [[ -x "$b" ]] || { echo "lone.sh: $b is not an executable" >&2; exit 2; }; done
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/lone.XXXXXX")" && pwd)"
results="$work/lone.txt"
echo "stores in $work; $(nproc) cores; $(uptime)" >&2

# one LABEL BINARY STORE ARGS... : a line "ROUND LABEL EVENTS/S P50_MS".
one() {
  local label="$1" bin="$2" store="$3"; shift 3
  "$bin" --store "$store" --json bench "$@" 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%s %s %.0f %.3f" % (sys.argv[1], sys.argv[2], r["events_per_sec"], r["p50_ms"]))' "$round" "$label" |
    tee -a "$results"
}

for round in $(seq "$ROUNDS"); do
  d="$work/round$round"; mkdir -p "$d"
  one fsync "$before" "$d/baseline" baseline fsync --writers 1 --duration "$SECS"
  one sqlite "$before" "$d/baseline" baseline sqlite --writers 1 --duration "$SECS"
  if (( round % 2 )); then order="before after"; else order="after before"; fi
  for which in $order; do
    if [[ "$which" == before ]]; then bin="$before"; else bin="$after"; fi
    one "$which" "$bin" "$d/$which" append --writers 1 --duration "$SECS"
  done
  rm -rf "$d"
done
python3 bench/lone_ratios.py "$results"
