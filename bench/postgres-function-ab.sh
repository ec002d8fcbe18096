#!/usr/bin/env bash
# A/B of the server's time per lone append on PostgreSQL: for each round, `concord bench
# append` at 1 writer with each binary given (order alternating by round, each on its own
# database of one private throwaway server with pg_stat_statements), 1 KiB events; prints
# each run's rate and the mean execution time per call of its write function (the one-event
# function: a lone append of one event), then the medians. The function's time is what the
# server spends on an append before its commit's WAL flush; on this VM it varies far less
# between rounds than the rate, which the flush and the wake-ups dominate.
#
#   bench/postgres-function-ab.sh BINARY_A BINARY_B [ROUNDS=6] [SECONDS=4]
#
# PGBIN as in bench/postgres.sh.
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: bench/postgres-function-ab.sh BINARY_A BINARY_B [ROUNDS] [SECONDS]" >&2; exit 2; }
A="$(realpath "$1")"; B="$(realpath "$2")"; ROUNDS="${3:-6}"; SECS="${4:-4}"
[[ "$A" != "$B" ]] || { echo "postgres-function-ab.sh: give two paths (copy the binary to compare it with itself)" >&2; exit 2; }
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
cd "$(dirname "$0")/.."
PG_EXTRA_CONF="shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top"
. bench/private-postgres.sh
ab_stores "$A" "$B"
for bin in "$A" "$B"; do
  psql -X -q -d "${stores[$bin]##*/}" -c "CREATE EXTENSION pg_stat_statements"
  "$bin" --store "${stores[$bin]}" bench append --writers 1 --duration 1 --event-bytes 1024 >/dev/null 2>&1
done
echo "$(nproc) cores; $(uptime)"
lines="$(mktemp)"
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then order=("$A" "$B"); else order=("$B" "$A"); fi
  for bin in "${order[@]}"; do
    db="${stores[$bin]##*/}"
    psql -X -q -d "$db" -c "SELECT pg_stat_statements_reset()" >/dev/null
    out="$("$bin" --store "${stores[$bin]}" --json bench append --writers 1 --duration "$SECS" --event-bytes 1024 2>/dev/null)"
    fn="$(psql -X -At -d "$db" -c "SELECT calls || ' ' || round((total_exec_time / calls * 1000)::numeric, 1) FROM pg_stat_statements WHERE query LIKE '%concord_append_%' ORDER BY calls DESC LIMIT 1")"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); c,us=sys.argv[3].split(); print("round %s %-40s %6.0f/s p50 %.3f ms  %s calls, %s us per call" % (sys.argv[4], sys.argv[2], r["events_per_sec"], r["p50_ms"], c, us))' "$out" "$bin" "$fn" "$round" | tee -a "$lines"
  done
done
python3 - "$lines" "$A" "$B" <<'PY'
import re, statistics, sys
runs = {sys.argv[2]: [], sys.argv[3]: []}
for line in open(sys.argv[1]):
    m = re.match(r"round \d+ (\S+)\s+(\d+)/s p50 ([\d.]+) ms\s+\d+ calls, ([\d.]+) us", line)
    runs[m.group(1)].append((int(m.group(2)), float(m.group(4))))
for bin, rs in runs.items():
    print("%-40s median %6.0f/s, %6.1f us per call (%.1f-%.1f)" % (bin, statistics.median(r[0] for r in rs),
          statistics.median(r[1] for r in rs), min(r[1] for r in rs), max(r[1] for r in rs)))
a, b = runs[sys.argv[2]], runs[sys.argv[3]]
print("B/A per round: time per call %s; rate %s" % (
    " ".join("%.2f" % (y[1] / x[1]) for x, y in zip(a, b)), " ".join("%.2f" % (y[0] / x[0]) for x, y in zip(a, b))))
PY
