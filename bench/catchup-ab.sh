#!/usr/bin/env bash
# A/B of two `concord` binaries' `$all` catch-up over gRPC: one store seeded once, served by
# BEFORE and AFTER in turn (order alternated by round), each run read by the same client
# (BEFORE's `concord bench catchup`) after one warm-up catch-up. Prints events/s and the
# server's CPU per event (user + system time of the server process over the measured run),
# the steadier of the two on a shared host.
#
#   bench/catchup-ab.sh BEFORE AFTER [ROUNDS=3] [EVENTS=500000]
#
# Environment: BENCH_DIR (default target/bench-run) holds the store.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { echo "usage: bench/catchup-ab.sh BEFORE AFTER [ROUNDS] [EVENTS]" >&2; exit 2; }
before="$1"; after="$2"; ROUNDS="${3:-3}"; N="${4:-500000}"
for b in "$before" "$after"; do [[ -x "$b" ]] || { echo "catchup-ab.sh: $b is not an executable" >&2; exit 2; }; done
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/catchup-ab.XXXXXX")" && pwd)"
echo "store in $work; $(nproc) cores; $(uptime)"
server=""
cleanup() { if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; }
trap cleanup EXIT

. bench/serve.sh
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"

for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then order="$before $after"; else order="$after $before"; fi
  for bin in $order; do
    serve "$bin" "$work/store" "$work/serve.log"
    "$before" --store "grpc://$addr" --json bench catchup --events "$N" >/dev/null 2>&1
    t0="$(ticks "$server")"
    json="$("$before" --store "grpc://$addr" --json bench catchup --events "$N" 2>/dev/null)"
    t1="$(ticks "$server")"
    kill "$server"; wait "$server" 2>/dev/null || true; server=""
    python3 -c 'import json,sys; r=json.loads(sys.argv[2]); n=int(sys.argv[4]); us=(int(sys.argv[5])*1e6/int(sys.argv[6]))/n; print("round %s %-28s %9.0f events/s  server %.2f us/event" % (sys.argv[3], sys.argv[1], r["events_per_sec"], us))' "$bin" "$json" "$round" "$N" "$((t1 - t0))" "$hz"
  done
done
