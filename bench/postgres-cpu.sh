#!/usr/bin/env bash
# Where the CPU of appends on PostgreSQL goes, per event: a private throwaway PostgreSQL
# (bench/private-postgres.sh), then for each of Concord's append (library mode, the
# postgres backend), Message DB's write_message (when its scripts are there, as in
# bench/postgres.sh) and the plain one-row INSERT baseline at W writers: the events written,
# and the CPU time (user + system) spent by the `concord bench` process and by all of the
# database's processes (postmaster, backends, WAL writer, checkpointer…) over the run,
# divided by the events. On 2 cores the two together bound the rate: a run that keeps both
# cores busy cannot go faster than 2 s of CPU per second.
#
#   bench/postgres-cpu.sh [SECONDS=5] [WRITERS=64] [ROUNDS=2] [EVENT_BYTES=1024]
#
# CONCORD (default target/release/concord) is the binary under test; BENCH_DIR (default
# target/bench-run) holds the results; PGBIN as in bench/postgres.sh. AFTER_SQL, when set,
# runs once Concord has made its schema, before the rounds (e.g. "DROP INDEX
# concord.concord_events_tags", to see what an index costs). PROCESSES=N adds a line of N
# Concord processes at once, W/N writers each, summed (the issue's "three processes").
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
W="${2:-64}"
ROUNDS="${3:-2}"
BYTES="${4:-1024}"
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
CONCORD="${CONCORD:-$PWD/target/release/concord}"
[[ -x "$CONCORD" ]] || { echo "postgres-cpu.sh: no binary at $CONCORD (cargo build --release -p concord)" >&2; exit 2; }
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/pgcpu.XXXXXX")" && pwd)"
echo "results in $work; $(nproc) cores; $(uptime)"
. bench/private-postgres.sh
hz="$(getconf CLK_TCK)"
# The server's own processes (checkpointer, WAL writer…), counted before any client connects.
aux="$(pgrep -c -P "$(head -n 1 "$pgdir/data/postmaster.pid")")"

# db_ticks: the CPU ticks of every process of the private server so far (the postmaster and
# its children, exited backends included through cutime/cstime of the postmaster).
db_ticks() {
  local pm total=0 pid
  pm="$(head -n 1 "$pgdir/data/postmaster.pid")"
  total="$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")"
  for pid in $(pgrep -P "$pm"); do
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) ))
  done
  echo "$total"
}

# one LABEL P ARGS...: `concord bench ARGS…` on the store in P processes at once (each
# given the ARGS as they are: divide the writers beforehand); events/s and CPU per event,
# summed over the processes.
one() {
  local label="$1" procs="$2"; shift 2
  local d0 d1 i
  d0="$(db_ticks)"
  for i in $(seq "$procs"); do
    /usr/bin/time -f '%U %S' -o "$work/time$i" "$CONCORD" --store "$store" --json bench "$@" >"$work/run$i.json" 2>/dev/null &
  done
  wait
  # The run's backends exit after it; their time reaches the postmaster once it reaps them.
  local pm
  pm="$(head -n 1 "$pgdir/data/postmaster.pid")"
  for i in $(seq 100); do
    (( $(pgrep -c -P "$pm") <= aux )) && break
    sleep 0.05
  done
  d1="$(db_ticks)"
  python3 - "$label" "$work" "$procs" "$((d1 - d0))" "$hz" "$round" <<'PY'
import json, sys
label, work, procs, db, hz, rnd = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
runs = [json.load(open(f"{work}/run{i}.json")) for i in range(1, procs + 1)]
times = [open(f"{work}/time{i}").read().split() for i in range(1, procs + 1)]
events = sum(r["events"] for r in runs)
client = sum(float(t[0]) + float(t[1]) for t in times)
database = db / hz
print("round %s %-22s %8.0f events/s  concord %5.1f us/event  database %5.1f us/event  (%.1f s + %.1f s of CPU)" % (
    rnd, label, sum(r["events_per_sec"] for r in runs), client * 1e6 / events, database * 1e6 / events, client, database))
PY
}

if [[ -n "${AFTER_SQL:-}" ]]; then
  "$CONCORD" --store "$store" bench append --writers 1 --duration 0.2 >/dev/null 2>&1
  psql -X -q -d concord -c "$AFTER_SQL"
fi
install_message_db "$work"
for round in $(seq 1 "$ROUNDS"); do
  one "insert w=$W" 1 baseline postgres --writers "$W" --duration "$SECS" --event-bytes "$BYTES"
  if [[ -n "$mdb" ]]; then
    concord_store="$store"; store="$mdb"
    one "messagedb w=$W" 1 baseline messagedb --writers "$W" --duration "$SECS" --event-bytes "$BYTES"
    store="$concord_store"
  fi
  one "concord w=$W" 1 append --writers "$W" --duration "$SECS" --event-bytes "$BYTES"
  if [[ -n "${PROCESSES:-}" ]]; then
    one "concord ${PROCESSES}x$((W / PROCESSES))" "$PROCESSES" append --writers "$((W / PROCESSES))" --duration "$SECS" --event-bytes "$BYTES"
  fi
done
