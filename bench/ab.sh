#!/usr/bin/env bash
# A/B of two `concord` binaries on the embedded store, in one run: appends in library mode
# at 1 and 64 writers, and through one `concord serve` per binary over HTTP and gRPC at 64
# writers, with plain SQLite at 1 and 64 writers and the 4 KiB write + fdatasync loop (the
# lone writer's p50 bound) as the baselines of each round. The order of
# the two binaries alternates by round, each run gets a fresh store.
#
#   bench/ab.sh BEFORE AFTER [SECONDS=5] [ROUNDS=3]
#
# BEFORE and AFTER are paths of release builds (e.g. built from two commits and copied
# aside). Environment: BENCH_DIR (default target/bench-run) holds the stores.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { echo "usage: bench/ab.sh BEFORE AFTER [SECONDS] [ROUNDS]" >&2; exit 2; }
before="$1"; after="$2"; SECS="${3:-5}"; ROUNDS="${4:-3}"
for b in "$before" "$after"; do [[ -x "$b" ]] || { echo "ab.sh: $b is not an executable" >&2; exit 2; }; done
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/ab.XXXXXX")" && pwd)"
echo "stores in $work; $(nproc) cores; $(uptime)"
server=""
cleanup() { if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; }
trap cleanup EXIT
. bench/serve.sh

# one LABEL BINARY STORE ARGS... : one `concord bench`, a line of rate, p50 and load.
one() {
  local label="$1" bin="$2" store="$3"; shift 3
  local json
  json="$("$bin" --store "$store" --json bench "$@" 2>/dev/null)"
  python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print("round %s %-18s %9.0f events/s  p50 %.3f ms  load %.2f" % (sys.argv[3], sys.argv[1], r["events_per_sec"], r["p50_ms"], r["load_average"]))' "$label" "$json" "$round"
}

for round in $(seq "$ROUNDS"); do
  d="$work/round$round"; mkdir -p "$d"
  one "fsync w=1" "$before" "$d/baseline" baseline fsync --writers 1 --duration "$SECS"
  one "sqlite w=1" "$before" "$d/baseline" baseline sqlite --writers 1 --duration "$SECS"
  one "sqlite w=64" "$before" "$d/baseline" baseline sqlite --writers 64 --duration "$SECS"
  if (( round % 2 )); then order="before after"; else order="after before"; fi
  for which in $order; do
    if [[ "$which" == before ]]; then bin="$before"; else bin="$after"; fi
    one "$which lib w=64" "$bin" "$d/$which-lib64" append --writers 64 --duration "$SECS"
    one "$which lib w=1" "$bin" "$d/$which-lib1" append --writers 1 --duration "$SECS"
    serve "$bin" "$d/$which-serve" "$d/$which-serve.log"
    one "$which http w=64" "$bin" "http://$addr" append --writers 64 --duration "$SECS"
    one "$which grpc w=64" "$bin" "grpc://$addr" append --writers 64 --duration "$SECS"
    cleanup; server=""
  done
done
