#!/usr/bin/env bash
# Flame graphs of the scenarios behind issue 6's speed targets, so that what bounds each one
# can be seen rather than asserted (BENCHMARKS.md, "Issue 6's targets, and issue 20's", links them).
#
#   bench/profile.sh [OUT_DIR] [SECONDS]   (defaults: bench/results/profiles, 5 s per profile)
#
# One SVG per scenario, every thread of the process(es) involved, kernel frames included:
#   append-w64        embedded store, 64 writers on distinct streams (the SQLite-ratio target)
#   hot-rebase-w64    embedded store, 64 writers on one stream under rebase-unless
#   read              embedded store, rehydrating a 100 000-event stream for SECONDS
#   http-append-w64   `concord serve --no-projections` and the `concord bench` client, 64 writers
#   redis-append-w64  redis-server and the `concord bench` client, 64 writers
#
# Needs perf (Debian: linux-perf) and inferno (`cargo install inferno`), redis-server for the
# last one (SKIP_REDIS=1 leaves it out). ONLY="read http-append-w64" profiles just those.
# Call graphs are unwound from DWARF: the release profile keeps line tables (`debug = 1`).
# perf may need `kernel.perf_event_paranoid` <= 1.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/results/profiles}"
SECS="${2:-5}"
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || { echo "profile.sh: SECONDS must be a positive number, not '$SECS'" >&2; exit 2; }
for tool in perf inferno-collapse-perf inferno-flamegraph python3; do
  command -v "$tool" >/dev/null || {
    echo "profile.sh: '$tool' is missing (perf: apt-get install linux-perf; inferno: cargo install inferno)" >&2
    exit 2
  }
done

cargo build --release -q -p concord --bin concord
CONCORD="$PWD/target/release/concord"
mkdir -p "$OUT" target/bench-run
work="$(cd "$(mktemp -d target/bench-run/profile.XXXXXX)" && pwd)"
echo "profiles into $OUT, scratch in $work; $(nproc) cores; $(uptime)"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# 299 samples/s per CPU with 16 KiB of stack each: enough for a graph, small enough for
# `perf script` to unwind in about a minute per profile.
PERF_RECORD=(perf record -q -F 299 --call-graph dwarf,16384)

wanted() { [[ -z "${ONLY:-}" || " $ONLY " == *" $1 "* ]]; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# render NAME TITLE [PID=LABEL ...] : perf data in $work/NAME.data -> $OUT/NAME.svg. With
# PID=LABEL pairs (two processes in one profile) each thread is named after its process.
render() {
  local name="$1" title="$2"; shift 2
  if (($#)); then
    local rename=() pair
    for pair in "$@"; do rename+=(-e "s/^\([^;]*\)-${pair%%=*};/\1 (${pair#*=});/"); done
    perf script -F comm,pid,tid,time,event,ip,sym,dso -i "$work/$name.data" 2>/dev/null |
      inferno-collapse-perf --all --pid | sed "${rename[@]}" >"$work/$name.folded"
  else
    perf script -i "$work/$name.data" 2>/dev/null | inferno-collapse-perf --all >"$work/$name.folded"
  fi
  inferno-flamegraph --title "$title" --minwidth 0.2 <"$work/$name.folded" >"$OUT/$name.svg"
  echo "  $OUT/$name.svg ($(wc -l <"$work/$name.folded") distinct stacks)"
}

# record NAME PID... : SECS seconds of the given processes, every thread.
record() {
  local name="$1"; shift
  local list; list="$(IFS=,; echo "$*")"
  "${PERF_RECORD[@]}" -p "$list" -o "$work/$name.data" -- sleep "$SECS" 2>/dev/null
}

# in_process NAME TITLE ARGS... : `concord bench ARGS` on a fresh embedded store, profiled
# from its start (seeding included, under its own threads) to its end.
in_process() {
  local name="$1" title="$2"; shift 2
  wanted "$name" || return 0
  echo "== $name: concord bench $*"
  "${PERF_RECORD[@]}" -o "$work/$name.data" -- \
    "$CONCORD" --store "$work/$name" --json bench "$@" >"$work/$name.json" 2>"$work/$name.err" ||
    { echo "profile.sh: concord bench $* failed:" >&2; cat "$work/$name.err" >&2; exit 1; }
  render "$name" "$title"
}

in_process append-w64 "embedded append, 64 writers (writer thread: SQLite)" \
  append --writers 64 --duration "$SECS"
in_process hot-rebase-w64 "embedded hot stream, 64 writers, rebase-unless" \
  hot --writers 64 --policy rebase-unless --duration "$SECS"
in_process read "embedded rehydrate of 100 000 events (seeding under concord-writer)" \
  read --duration "$SECS"

# beside SERVER LABEL NAME TITLE URL : the bench client appending with 64 writers to URL,
# profiled together with the already running process SERVER (named LABEL in the graph).
beside() {
  local server="$1" label="$2" name="$3" title="$4" url="$5"
  "$CONCORD" --store "$url" --json bench append --writers 64 --duration $((SECS + 2)) \
    >"$work/$name.json" 2>"$work/$name.err" &
  local client=$!; pids+=("$client")
  sleep 1 # the writers' start-up (streams created, connections opened) is not what is asked
  record "$name" "$server" "$client"
  wait "$client" || { echo "profile.sh: the bench client of $name failed:" >&2; cat "$work/$name.err" >&2; exit 1; }
  render "$name" "$title" "$server=$label" "$client=client"
}

if wanted http-append-w64; then
  echo "== http-append-w64: concord serve --no-projections + concord bench --store http://"
  port="$(free_port)"
  "$CONCORD" serve --no-projections --addr "127.0.0.1:$port" --store "$work/served" >"$work/serve.log" 2>&1 &
  server=$!; pids+=("$server")
  until "$CONCORD" --store "http://127.0.0.1:$port" streams >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || { echo "profile.sh: concord serve did not start:" >&2; cat "$work/serve.log" >&2; exit 1; }
    sleep 0.1
  done
  beside "$server" server http-append-w64 "HTTP append, 64 connections: concord serve and the bench client" \
    "http://127.0.0.1:$port"
  kill "$server"
fi

if [[ "${SKIP_REDIS:-}" != 1 ]] && wanted redis-append-w64; then
  command -v redis-server >/dev/null || { echo "profile.sh: redis-server is missing (apt-get install redis-server), or SKIP_REDIS=1" >&2; exit 2; }
  echo "== redis-append-w64: redis-server + concord bench --store redis://"
  rport="$(free_port)"
  mkdir -p "$work/redis"
  redis-server --port "$rport" --bind 127.0.0.1 --dir "$work/redis" --save "" --appendonly no \
    --daemonize no --logfile "$work/redis/redis.log" &
  redis=$!; pids+=("$redis")
  until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.1; done
  beside "$redis" redis redis-append-w64 "Redis append, 64 writers: redis-server and the bench client" \
    "redis://127.0.0.1:$rport/0"
fi
echo "done; the rates measured while profiling (perf slows them) are in $work/*.json"
