#!/usr/bin/env bash
# A/B of one process against three on PostgreSQL: for each round, `concord bench append`
# at W writers in one process, then W/3 writers in each of three processes at once (summed),
# with each binary given (their order alternating by round), 1 KiB events, on one private
# throwaway PostgreSQL (bench/private-postgres.sh). The issue-18 ratio "three processes ÷
# one" moves with both figures; this shows each on its own, build beside build.
#
#   bench/postgres-processes-ab.sh BINARY_A BINARY_B [ROUNDS=4] [SECONDS=5] [WRITERS=64]
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: bench/postgres-processes-ab.sh BINARY_A BINARY_B [ROUNDS] [SECONDS] [WRITERS]" >&2; exit 2; }
A="$(realpath "$1")"; B="$(realpath "$2")"; ROUNDS="${3:-4}"; SECS="${4:-5}"; W="${5:-64}"
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
cd "$(dirname "$0")/.."
. bench/private-postgres.sh
work="$pgdir"   # removed with the server on exit
ab_stores "$A" "$B"
per=$(( W / 3 ))
one() {
  "$1" --store "${stores[$1]}" --json bench append --writers "$W" --duration "$SECS" --event-bytes 1024 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("round %s %-40s 1 x %s: %8.0f/s p50 %.3f ms" % (sys.argv[2], sys.argv[1], sys.argv[3], r["events_per_sec"], r["p50_ms"]))' "$1" "$round" "$W"
}
three() {
  local i
  for i in 1 2 3; do
    "$1" --store "${stores[$1]}" --json bench append --writers "$per" --duration "$SECS" --event-bytes 1024 >"$work/p$i.json" 2>/dev/null &
  done
  wait
  python3 -c 'import json,sys; rs=[json.load(open(p)) for p in sys.argv[4:]]; print("round %s %-40s 3 x %s: %8.0f/s (%s)" % (sys.argv[2], sys.argv[1], sys.argv[3], sum(r["events_per_sec"] for r in rs), " + ".join("%.0f" % r["events_per_sec"] for r in rs)))' "$1" "$round" "$per" "$work"/p{1,2,3}.json
}
echo "$(nproc) cores; $(uptime)"
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then order=("$A" "$B"); else order=("$B" "$A"); fi
  for bin in "${order[@]}"; do one "$bin"; done
  for bin in "${order[@]}"; do three "$bin"; done
done
