#!/usr/bin/env bash
# Concord's PostgreSQL backend beside what the same server does without it, in one run, on a
# private throwaway PostgreSQL (initdb in a temporary directory, its own port, fsync and
# synchronous_commit on): plain one-transaction-per-event INSERTs of the same 1 KiB rows
# (`concord bench baseline postgres`), Message DB 1.3.0's write_message with an expected
# version (`concord bench baseline messagedb`, installed here from ../shared/peers/message-db),
# and Concord's `append` on the postgres backend, at 1 and W writers, rounds interleaved;
# then the issue-18 ratios (median and range over rounds, each ratio within one round).
#
#   bench/postgres.sh [SECONDS=5] [WRITERS=64] [ROUNDS=3] [EVENT_BYTES=1024]
#
# Environment: BENCH_DIR (default target/bench-run) holds the results; CONCORD (default
# target/release/concord, built here) is the binary measured; PEERS (default
# ../shared/peers from the repository) holds Message DB's scripts (without them the Message
# DB lines are skipped, with a note); PGBIN the PostgreSQL binaries (default: the newest
# under /usr/lib/postgresql). As root the server runs as user postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
W="${2:-64}"
ROUNDS="${3:-3}"
BYTES="${4:-1024}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "postgres.sh: ROUNDS must be a positive number, not '$ROUNDS'" >&2; exit 2; }
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
[[ -x "$PGBIN/initdb" ]] || { echo "postgres.sh: no PostgreSQL server binaries (install Debian's postgresql package, or set PGBIN)" >&2; exit 1; }
PEERS="${PEERS:-$(cd .. && pwd)/shared/peers}"

if [[ -z "${CONCORD:-}" ]]; then
  cargo build --release -q --locked -p concord --bin concord
  CONCORD="${CARGO_TARGET_DIR:-$PWD/target}/release/concord"
fi
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/postgres.XXXXXX")" && pwd)"
results="$work/results.jsonl"
echo "results in $results; $(nproc) cores; $(uptime)"

# The private server.
pgdir="$(mktemp -d /tmp/concord-bench-pg.XXXXXX)"
as_owner() { if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[[ "$(id -u)" == 0 ]] && chown postgres: "$pgdir"
chmod 755 "$pgdir"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() {
  as_owner "$PGBIN/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$pgdir"
}
trap cleanup EXIT
as_owner "$PGBIN/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$pgdir/initdb.log" 2>&1
cat >>"$pgdir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pgdir'
fsync = on
synchronous_commit = on
shared_buffers = 256MB
max_connections = 300
log_min_messages = warning
CONF
as_owner "$PGBIN/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 60 start >/dev/null
export PGHOST=127.0.0.1 PGPORT="$port" PGUSER=postgres
psql -X -q -d postgres -c "CREATE DATABASE concord"
store="postgres://postgres@127.0.0.1:$port/concord"

mdb=""
if [[ -f "$PEERS/message-db/install.sh" ]]; then
  ( cd "$PEERS/message-db" && DATABASE_NAME=message_store PGOPTIONS='-c client_min_messages=warning' bash install.sh >"$work/message-db-install.log" 2>&1 ) \
    || { echo "postgres.sh: installing Message DB failed:" >&2; cat "$work/message-db-install.log" >&2; exit 1; }
  mdb="postgres://postgres@127.0.0.1:$port/message_store"
  echo "Message DB $(cat "$PEERS/message-db/VERSION.txt") installed"
else
  echo "note: no Message DB scripts at $PEERS/message-db (set PEERS): its lines are skipped"
fi

# run LABEL STORE ARGS... : one `concord bench`, its JSON kept under LABEL.
run() {
  local label="$1" store="$2"; shift 2
  local json
  json="$("$CONCORD" --store "$store" --json bench "$@")"
  echo "{\"label\": \"$label\", \"round\": $round, \"report\": $json}" >>"$results"
  python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print("round %s %-28s %9.0f events/s  p50 %.3f ms  p99 %.3f ms  load %.2f" % (sys.argv[3], sys.argv[1], r["events_per_sec"], r["p50_ms"], r["p99_ms"], r["load_average"]))' "$label" "$json" "$round"
}

for round in $(seq 1 "$ROUNDS"); do
  for w in 1 "$W"; do
    run "insert w=$w" "$store" baseline postgres --writers "$w" --duration "$SECS" --event-bytes "$BYTES"
    [[ -n "$mdb" ]] && run "messagedb w=$w" "$mdb" baseline messagedb --writers "$w" --duration "$SECS" --event-bytes "$BYTES"
    run "concord w=$w" "$store" append --writers "$w" --duration "$SECS" --event-bytes "$BYTES"
  done
  run "concord hot rebase w=$W" "$store" hot --writers "$W" --duration "$SECS" --event-bytes "$BYTES" --policy rebase-unless
done

python3 - "$results" "$W" <<'PY'
import json, statistics, sys
path, w = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path)]
by = {}
for r in rows:
    by.setdefault(r["round"], {})[r["label"]] = r["report"]
def ratio(num, den, target, note=""):
    vals = [rs[num]["events_per_sec"] / rs[den]["events_per_sec"]
            for rs in by.values() if num in rs and den in rs and rs[den]["events_per_sec"] > 0]
    if not vals:
        print(f"{num} / {den}: not measured"); return
    med = statistics.median(vals)
    verdict = "met" if med >= target else "NOT met"
    print(f"{num:>22} / {den:<16} {med:6.2f}x  (range {min(vals):.2f}-{max(vals):.2f}; target >= {target}x: {verdict}){note}")
print()
ratio(f"concord w={w}", f"insert w={w}", 4)
ratio(f"concord w={w}", f"messagedb w={w}", 10)
ratio("concord w=1", "messagedb w=1", 1)
ratio(f"concord hot rebase w={w}", f"concord w={w}", 0.8, " (hot stream, rebase_unless, vs distinct streams)")
retries = [rs[f"concord hot rebase w={w}"]["retries"] for rs in by.values() if f"concord hot rebase w={w}" in rs]
print(f"hot stream retries per round: {retries}")
PY
