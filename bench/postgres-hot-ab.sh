#!/usr/bin/env bash
# A/B of the hot-stream line on PostgreSQL: for each round and each binary given, `concord
# bench hot --policy rebase-unless` and `concord bench append` at 64 writers with 1 KiB
# events on one private throwaway PostgreSQL (initdb in a temporary directory, fsync and
# synchronous_commit on; each binary on its own database, so builds of different schema
# formats compare), and the ratio hot / append within the pair. Alternate the order of
# the binaries between runs: the first line on a fresh server runs slow.
#
#   bench/postgres-hot-ab.sh BINARY_A BINARY_B [ROUNDS=3]
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: bench/postgres-hot-ab.sh BINARY_A BINARY_B [ROUNDS]" >&2; exit 2; }
A="$(realpath "$1")"; B="$(realpath "$2")"; ROUNDS="${3:-3}"
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
cd "$(dirname "$0")/.."
. bench/private-postgres.sh
ab_stores "$A" "$B"
echo "$(nproc) cores; $(uptime)"
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$A" "$B"; do
    hot="$("$bin" --store "${stores[$bin]}" --json bench hot --writers 64 --duration 5 --event-bytes 1024 --policy rebase-unless 2>/dev/null)"
    plain="$("$bin" --store "${stores[$bin]}" --json bench append --writers 64 --duration 5 --event-bytes 1024 2>/dev/null)"
    python3 -c 'import json,sys; h=json.loads(sys.argv[2]); u=json.loads(sys.argv[3]); print("round %s %-40s hot %6.0f/s p50 %.1f ms  append %6.0f/s  ratio %.2f  retries %s" % (sys.argv[4], sys.argv[1], h["events_per_sec"], h["p50_ms"], u["events_per_sec"], h["events_per_sec"]/u["events_per_sec"], h.get("retries")))' "$bin" "$hot" "$plain" "$round"
  done
done
