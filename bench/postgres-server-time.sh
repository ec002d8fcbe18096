#!/usr/bin/env bash
# Where the database's time goes per lone append, Concord beside Message DB: for each round,
# `concord bench append` and Message DB's write_message (`concord bench baseline messagedb`)
# at 1 writer, 1 KiB events, on one private throwaway server with pg_stat_statements
# tracking nested statements; after each run, the mean execution time per call of the
# top-level call (Concord's one-event function, write_message) and of each statement inside
# it. What a call costs beyond its statements is PL/pgSQL's own work (setting each statement
# up and down, passing the parameters).
#
#   bench/postgres-server-time.sh [ROUNDS=4] [SECONDS=4]
#
# CONCORD, BENCH_DIR, PEERS and PGBIN as in bench/postgres.sh (Message DB is required here).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-4}"; SECS="${2:-4}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "postgres-server-time.sh: ROUNDS must be a positive number, not '$ROUNDS'" >&2; exit 2; }
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
if [[ -z "${CONCORD:-}" ]]; then
  cargo build --release -q --locked -p concord --bin concord
  CONCORD="${CARGO_TARGET_DIR:-$PWD/target}/release/concord"
fi
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/server-time.XXXXXX")" && pwd)"
PG_EXTRA_CONF="shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all"
. bench/private-postgres.sh
install_message_db "$work"
[[ -n "$mdb" ]] || { echo "postgres-server-time.sh: needs Message DB's scripts (PEERS)" >&2; exit 1; }
psql -X -q -d concord -c "CREATE EXTENSION pg_stat_statements"
for target in "$store" "$mdb"; do  # each creates its schema and plans its statements
  if [[ "$target" == "$store" ]]; then what=(append); else what=(baseline messagedb); fi
  "$CONCORD" --store "$target" bench "${what[@]}" --writers 1 --duration 1 --event-bytes 1024 >/dev/null 2>&1
done
echo "$(nproc) cores; $(uptime)"
for round in $(seq 1 "$ROUNDS"); do
  for line in concord messagedb; do
    if [[ "$line" == concord ]]; then target="$store"; what=(append); else target="$mdb"; what=(baseline messagedb); fi
    psql -X -q -d concord -c "SELECT pg_stat_statements_reset()" >/dev/null
    out="$("$CONCORD" --store "$target" --json bench "${what[@]}" --writers 1 --duration "$SECS" --event-bytes 1024 2>/dev/null)"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("round %s %-10s %6.0f events/s  p50 %.3f ms" % (sys.argv[2], sys.argv[3], r["events_per_sec"], r["p50_ms"]))' "$out" "$round" "$line"
    # Statements run once per append (calls near the append count), the call itself first.
    psql -X -At -F $'\t' -d concord -c "
      WITH s AS (SELECT calls, total_exec_time / calls * 1000 AS us, toplevel,
                        left(regexp_replace(query, '\s+', ' ', 'g'), 80) AS q
                 FROM pg_stat_statements WHERE calls > 100)
      SELECT '    ' || CASE WHEN toplevel THEN 'call ' ELSE '  in ' END, round(us::numeric, 1) || ' us', calls, q
      FROM s ORDER BY toplevel DESC, us DESC LIMIT 8"
  done
done
