#!/usr/bin/env bash
# A/B of the lone writer on PostgreSQL: for each round, Message DB's write_message with an
# expected version at 1 writer (`concord bench baseline messagedb`), then `concord bench
# append` at 1 writer with each binary given (their order alternating by round), 1 KiB
# events, on one private throwaway PostgreSQL (initdb in a temporary directory, fsync and
# synchronous_commit on); each binary's ratio to the Message DB line of its round. WRITERS
# (default 1) runs every line at that many writers instead, the binaries' batches then.
# B_SQL, a file of SQL, runs on B's database once both binaries have made their schemas (a
# 1-second line each): the same binary copied to two paths, with B's layout changed by hand (an index
# replaced, a function's body edited) measures what that part costs.
#
#   bench/postgres-lone-ab.sh BINARY_A BINARY_B [ROUNDS=3] [SECONDS=5] [WRITERS=1]
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: bench/postgres-lone-ab.sh BINARY_A BINARY_B [ROUNDS] [SECONDS] [WRITERS]" >&2; exit 2; }
A="$(realpath "$1")"; B="$(realpath "$2")"; ROUNDS="${3:-3}"; SECS="${4:-5}"; W="${5:-1}"
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
cd "$(dirname "$0")/.."
. bench/private-postgres.sh
work="$(mktemp -d)"
install_message_db "$work"
[[ -n "$mdb" ]] || { echo "postgres-lone-ab.sh: Message DB is needed for the baseline" >&2; exit 1; }
ab_stores "$A" "$B"
if [[ -n "${B_SQL:-}" ]]; then
  for bin in "$A" "$B"; do "$bin" --store "${stores[$bin]}" --json bench append --writers 1 --duration 1 --event-bytes 1024 >/dev/null 2>&1; done
  psql -X -q -v ON_ERROR_STOP=1 -d "${stores[$B]##*/}" -f "$B_SQL"
  echo "B_SQL $B_SQL ran on B's database"
fi
echo "$(nproc) cores; $W writers; $(uptime)"
for round in $(seq 1 "$ROUNDS"); do
  base="$("$A" --store "$mdb" --json bench baseline messagedb --writers "$W" --duration "$SECS" --event-bytes 1024 2>/dev/null)"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("round %s %-40s %6.0f/s p50 %.3f ms" % (sys.argv[2], "messagedb", r["events_per_sec"], r["p50_ms"]))' "$base" "$round"
  if (( round % 2 )); then order=("$A" "$B"); else order=("$B" "$A"); fi
  for bin in "${order[@]}"; do
    out="$("$bin" --store "${stores[$bin]}" --json bench append --writers "$W" --duration "$SECS" --event-bytes 1024 2>/dev/null)"
    python3 -c 'import json,sys; b=json.loads(sys.argv[2]); r=json.loads(sys.argv[3]); print("round %s %-40s %6.0f/s p50 %.3f ms  ratio to messagedb %.2f" % (sys.argv[4], sys.argv[1], r["events_per_sec"], r["p50_ms"], r["events_per_sec"]/b["events_per_sec"]))' "$bin" "$base" "$out" "$round"
  done
done
