#!/usr/bin/env bash
# Appends beside a snapshot held open in the same database (what a `pg_dump` backup, a long
# report or a session idle in a transaction does): for each round, `concord bench append`
# at W writers with each binary given (alternating their order), first with nothing else
# running, then while one `REPEATABLE READ` transaction that has read a table keeps its
# snapshot; Message DB's `write_message` the same way. A private throwaway PostgreSQL
# (bench/private-postgres.sh), 1 KiB events, each binary on its own database.
#
#   bench/postgres-held-snapshot.sh BINARY_A BINARY_B [ROUNDS=2] [SECONDS=10] [WRITERS=64]
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: bench/postgres-held-snapshot.sh BINARY_A BINARY_B [ROUNDS] [SECONDS] [WRITERS]" >&2; exit 2; }
A="$(realpath "$1")"; B="$(realpath "$2")"; ROUNDS="${3:-2}"; SECS="${4:-10}"; W="${5:-64}"
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
cd "$(dirname "$0")/.."
. bench/private-postgres.sh
ab_stores "$A" "$B"
install_message_db "$pgdir" >/dev/null
line() {
  python3 -c 'import json,sys; r=json.load(sys.stdin); print("round %s %-14s %-44s %8.0f/s p50 %6.2f ms p99 %6.2f ms" % (sys.argv[1], sys.argv[2], sys.argv[3], r["events_per_sec"], r["p50_ms"], r["p99_ms"]))' "$round" "$1" "$2"
}
runs() {
  local bin
  for bin in "${order[@]}"; do
    "$bin" --store "${stores[$bin]}" --json bench append --writers "$W" --duration "$SECS" --event-bytes 1024 2>/dev/null | line "$1" "$bin"
  done
  if [[ -n "$mdb" ]]; then
    "$A" --store "$mdb" --json bench baseline messagedb --writers "$W" --duration "$SECS" --event-bytes 1024 2>/dev/null | line "$1" "message db"
  fi
}
echo "$(nproc) cores; $(uptime); $W writers, ${SECS} s each"
for bin in "$A" "$B"; do "$bin" --store "${stores[$bin]}" bench append --writers 1 --duration 0.5 >/dev/null 2>&1; done
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then order=("$A" "$B"); else order=("$B" "$A"); fi
  runs "alone"
  # One held snapshot in each database (a snapshot holds back only its own database's rows).
  holders=()
  for db in concord_a concord_b message_store; do
    PGAPPNAME=snapshot-holder psql -X -q -d "$db" -c "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class; SELECT pg_sleep(100000)" >/dev/null 2>&1 &
    holders+=($!)
  done
  sleep 1
  runs "beside"
  # The backend sleeps on until told: end it, and with it the snapshot.
  psql -X -q -d postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'snapshot-holder'" >/dev/null
  wait "${holders[@]}" 2>/dev/null || true
done
