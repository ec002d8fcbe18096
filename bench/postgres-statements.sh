#!/usr/bin/env bash
# Where a private PostgreSQL's time goes under Concord's appends: the server runs with
# pg_stat_statements, `concord bench append` runs W writers of 1 KiB events (after a warm-up
# second), then the statements by total execution time: calls, ms, ms per call, rows.
# Execution time only: a COMMIT's WAL flush, the round trips and the client's own work are
# not in it (compare the calls' sum with the run's length).
#
#   bench/postgres-statements.sh [SECONDS=5] [WRITERS=64] [PROCESSES=1]
#
# With PROCESSES=N the W writers are split across N `concord bench` processes at once.
#
# CONCORD (default target/release/concord) is the binary under test; PGBIN as in
# bench/postgres.sh (Debian's postgresql package ships pg_stat_statements).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
W="${2:-64}"
P="${3:-1}"
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
CONCORD="${CONCORD:-$PWD/target/release/concord}"
[[ -x "$CONCORD" ]] || { echo "postgres-statements.sh: no binary at $CONCORD (cargo build --release -p concord)" >&2; exit 2; }
PG_EXTRA_CONF="shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
track_functions = 'pl'"
. bench/private-postgres.sh
psql -X -q -d concord -c "CREATE EXTENSION pg_stat_statements"
"$CONCORD" --store "$store" bench append --writers "$W" --duration 1 --event-bytes 1024 >/dev/null 2>&1
psql -X -q -d concord -c "SELECT pg_stat_statements_reset()" >/dev/null
for i in $(seq "$P"); do
  "$CONCORD" --store "$store" --json bench append --writers "$(( W / P ))" --duration "$SECS" --event-bytes 1024 >"$pgdir/run$i.json" 2>/dev/null &
done
wait
python3 -c 'import json,sys; rs=[json.load(open(p)) for p in sys.argv[1:]]; print("%d events in %.2f s, %.0f events/s (%d processes), p50 %s ms" % (sum(r["events"] for r in rs), max(r["seconds"] for r in rs), sum(r["events_per_sec"] for r in rs), len(rs), " / ".join("%.3f" % r["p50_ms"] for r in rs)))' "$pgdir"/run*.json
psql -X -d concord -c "SELECT calls, round(total_exec_time::numeric,1) AS ms, round((total_exec_time/calls)::numeric,3) AS ms_per_call, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS q FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 14"
