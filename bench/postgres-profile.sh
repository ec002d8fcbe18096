#!/usr/bin/env bash
# Where the machine's time goes while Concord appends to PostgreSQL at W writers: a private
# throwaway PostgreSQL (bench/private-postgres.sh), `concord bench append` with 1 KiB
# events, and after a warm-up second a system-wide `perf record` (no call graphs: the
# distribution's server is built without frame pointers) for SECONDS. Prints the share of
# samples by process and library, the busiest functions of the database's processes and of
# Concord's, and how idle the machine was.
#
#   bench/postgres-profile.sh [SECONDS=5] [WRITERS=64]
#
# CONCORD (default target/release/concord) is the binary under test; BENCH_DIR (default
# target/bench-run) keeps perf.data; PGBIN as in bench/postgres.sh. Needs perf (Debian:
# linux-perf) and `kernel.perf_event_paranoid` <= 1 (or root).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
W="${2:-64}"
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
CONCORD="${CONCORD:-$PWD/target/release/concord}"
[[ -x "$CONCORD" ]] || { echo "postgres-profile.sh: no binary at $CONCORD (cargo build --release -p concord)" >&2; exit 2; }
command -v perf >/dev/null || { echo "postgres-profile.sh: perf is missing (Debian: apt-get install linux-perf)" >&2; exit 2; }
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/pgprofile.XXXXXX")" && pwd)"
echo "results in $work; $(nproc) cores; $W writers; $(uptime)"
. bench/private-postgres.sh

"$CONCORD" --store "$store" --json bench append --writers "$W" --duration $((SECS + 2)) \
  --event-bytes 1024 >"$work/run.json" 2>/dev/null &
bench=$!
sleep 1
perf record -a -F 999 -o "$work/perf.data" -- sleep "$SECS" 2>"$work/perf-record.log"
wait "$bench"
python3 - "$work/run.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"Concord append: {r.get('events_per_sec', r.get('appends_per_sec', 0)):.0f} events/s "
      f"(the whole run, warm-up included)")
EOF

report() { perf report -i "$work/perf.data" --stdio --no-children --percent-limit "$1" "${@:2}" 2>/dev/null | grep -v '^#' | grep -v '^$'; }
echo "--- samples by process and library (idle is the swapper)"
report 1 --sort comm,dso
echo "--- the database's busiest functions (every postgres process)"
report 0.7 --comms postgres --sort sym | head -n 40
echo "--- Concord's busiest functions"
report 0.5 --comms concord,tokio-runtime-w --sort sym | head -n 25
