#!/usr/bin/env bash
# What the database's backends are doing while Concord appends, sampled: a private throwaway
# PostgreSQL (bench/private-postgres.sh), `concord bench append` in P processes at once
# (W/P writers each), and meanwhile one session that reads pg_stat_activity every 5 ms and
# counts, per sample, the backends of the run by state: running (no wait event), waiting for
# a lock (and which: the head row shows as `transactionid`, a stream's advisory lock as
# `advisory`), writing or flushing WAL, or idle (waiting for the client: Concord's side).
# The head lock (a two-key advisory lock) is held from a batch's write through its COMMIT,
# so the share of samples with a backend in `Lock:advisory` tells how much the batches of
# several processes queue on it (a stream's lock is a one-key advisory lock, uncontended on
# distinct streams). A second table says, per sample, whether the head lock was held and
# what its holder was doing: its write (running), its COMMIT's flush (IO:WALSync…), or
# nothing yet (free: the last holder has committed and the next waiter is not running yet).
#
#   bench/postgres-waits.sh [SECONDS=5] [WRITERS=64] [PROCESSES=3] [ROUNDS=1]
#
# CONCORD (default target/release/concord) is the binary; BENCH_DIR as in the others.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"; W="${2:-64}"; P="${3:-3}"; ROUNDS="${4:-1}"
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
CONCORD="${CONCORD:-$PWD/target/release/concord}"
[[ -x "$CONCORD" ]] || { echo "postgres-waits.sh: no binary at $CONCORD (cargo build --release -p concord)" >&2; exit 2; }
. bench/private-postgres.sh
work="$pgdir"   # removed with the server on exit
echo "$(nproc) cores; $(uptime)"
"$CONCORD" --store "$store" bench append --writers 1 --duration 0.2 >/dev/null 2>&1
# A procedure that commits after each sample: one long transaction would hold back the
# clean-up of the head row's old versions, and every append would walk them (appends at
# 64 writers ran at half their rate beside such a sampler).
psql -X -q -d concord -c "CREATE TABLE waits_sample (n int, state text, wait text)" \
  -c "CREATE TABLE head_sample (n int, holder text)" -c "
  CREATE PROCEDURE sample_waits(samples int) LANGUAGE plpgsql AS \$\$ BEGIN
    FOR i IN 1..samples LOOP
      INSERT INTO waits_sample SELECT i, state, coalesce(wait_event_type || ':' || wait_event, 'running')
        FROM pg_stat_activity WHERE datname = 'concord' AND backend_type = 'client backend'
        AND pid <> pg_backend_pid() AND application_name <> 'psql';
      INSERT INTO head_sample SELECT i, coalesce((SELECT coalesce(a.wait_event_type || ':' || a.wait_event,
          CASE WHEN a.state = 'active' THEN 'running' ELSE 'idle: ' || a.state END)
        FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted LIMIT 1), 'free');
      COMMIT;
      PERFORM pg_sleep(0.005);
      COMMIT;
    END LOOP; END \$\$"
samples=$(( SECS * 200 ))
for round in $(seq 1 "$ROUNDS"); do
  psql -X -q -d concord -c "TRUNCATE waits_sample, head_sample"
  # The sampler starts first and outlasts the run a little; samples with no backend of the
  # run active are left out below.
  psql -X -q -d concord -c "CALL sample_waits($(( samples + 100 )))" &
  sampler=$!
  sleep 0.2
  for i in $(seq "$P"); do
    "$CONCORD" --store "$store" --json bench append --writers "$(( W / P ))" --duration "$SECS" --event-bytes 1024 >"$work/run$i.json" 2>/dev/null &
    pids[$i]=$!
  done
  for i in $(seq "$P"); do wait "${pids[$i]}"; done
  wait "$sampler"
  python3 -c 'import json,sys; rs=[json.load(open(p)) for p in sys.argv[3:]]; print("round %s: %d x %d writers, %.0f events/s together (%s)" % (sys.argv[1], len(rs), int(sys.argv[2]), sum(r["events_per_sec"] for r in rs), " + ".join("%.0f" % r["events_per_sec"] for r in rs)))' "$round" "$(( W / P ))" "$work"/run*.json
  psql -X -q -d concord -c "
    WITH busy AS (SELECT n FROM waits_sample WHERE state = 'active' GROUP BY n),
    per AS (SELECT CASE WHEN state <> 'active' THEN 'idle (Concord''s side: ' || state || ')' ELSE wait END AS what, count(*) AS c
            FROM waits_sample WHERE n IN (SELECT n FROM busy) GROUP BY 1)
    SELECT what, round(c::numeric / (SELECT count(*) FROM busy), 2) AS backends_per_sample,
           round(100.0 * c / sum(c) OVER (), 1) AS percent
    FROM per ORDER BY c DESC"
  psql -X -q -d concord -c "
    WITH busy AS (SELECT n FROM waits_sample WHERE state = 'active' GROUP BY n)
    SELECT 'head lock: ' || holder AS what, round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent_of_samples
    FROM head_sample WHERE n IN (SELECT n FROM busy) GROUP BY holder ORDER BY count(*) DESC"
done
