#!/usr/bin/env bash
# Every `concord bench` scenario with its baselines, on the embedded store and on Redis, in
# one run on this machine, then the table of ratios (BENCHMARKS.md is made from it).
#
#   bench/run.sh [SECONDS] [WRITERS] [ROUNDS]   (defaults: 5 s per write run, 64 writers, 1 round)
#
# With ROUNDS > 1 the whole sequence (baselines and scenarios, fresh stores) runs that many
# times and bench/ratios.py prints each ratio's median and range over the rounds, every ratio
# taken within one round: on an unsteady machine one run's ratio can be far off.
#
# Environment: CONCORD (a binary to measure; default: build this checkout); BENCH_DIR (default target/bench-run) holds the stores; REDIS_URL uses an
# existing Redis instead of starting one (ephemeral port, temp dir, no persistence; never
# the machine's 6379); SKIP_REDIS=1 / SKIP_EMBEDDED=1 leave a backend out, SKIP_HTTP=1 the
# appends through `concord serve` (bench/server-cpu.sh, after the embedded scenarios). Needs python3;
# redis-server and redis-benchmark for the Redis part. Every line of results.jsonl is one
# `concord bench --json` object with the label it has in the table.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
W="${2:-64}"
ROUNDS="${3:-1}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: ROUNDS must be a positive number, not '$ROUNDS'" >&2; exit 2; }
N_READ=100000

# CONCORD names a binary to measure instead of building this checkout's.
if [[ -z "${CONCORD:-}" ]]; then
  cargo build --release -q -p concord --bin concord
  CONCORD="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/concord"
fi
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/run.XXXXXX")" && pwd)"
results="$work/results.jsonl"
echo "results in $results; $(nproc) cores; $(uptime)"

cleanup() { if [[ -n "${redis_pid:-}" ]]; then kill -9 "$redis_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

# run LABEL STORE ARGS... : one `concord bench`, its JSON kept under LABEL.
run() {
  local label="$1" store="$2"; shift 2
  local json
  json="$("$CONCORD" --store "$store" --json bench "$@")"
  echo "{\"label\": \"$label\", \"round\": $round, \"report\": $json}" >>"$results"
  python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print("%-34s %11.0f events/s  p50 %.3f ms  p99 %.3f ms  conflicts %d retries %d  rss %.0f MiB  load %.2f" % (sys.argv[1], r["events_per_sec"], r["p50_ms"], r["p99_ms"], r["conflicts"], r["retries"], r["max_rss_mib"], r["load_average"]))' "$label" "$json"
}

scenarios() {
  local b="$1" store="$2"
  run "$b append w=1" "$store" append --writers 1 --duration "$SECS"
  run "$b append w=$W" "$store" append --writers "$W" --duration "$SECS"
  run "$b append w=$W batch=10" "$store" append --writers "$W" --batch 10 --duration "$SECS"
  for policy in reject retry rebase-unless; do
    run "$b hot w=$W $policy" "$store" hot --writers "$W" --policy "$policy" --duration "$SECS"
  done
  run "$b read n=$N_READ" "$store" read --events "$N_READ"
  run "$b catchup n=$N_READ" "$store" catchup --events "$N_READ"
}

# The Redis server outlives the rounds; each round writes under its own key prefix.
if [[ "${SKIP_REDIS:-}" != 1 ]]; then
  if [[ -z "${REDIS_URL:-}" ]]; then
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    mkdir -p "$work/redis"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$work/redis" --save "" --appendonly no \
      --daemonize no --logfile "$work/redis/redis.log" &
    redis_pid=$!
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
    REDIS_URL="redis://127.0.0.1:$port/0"
  fi
  host_port="${REDIS_URL#redis://}"; host_port="${host_port%%/*}"
  rhost="${host_port%%:*}"; rport="${host_port##*:}"
  sha="$(redis-cli -h "$rhost" -p "$rport" SCRIPT LOAD "$(cat bench/minimal-conditional-append.lua)")"
fi

# How fast this machine's CPU is right now (a 10-million-step Python loop, seconds): the
# absolute targets (read, catch-up) move with it, and on these VMs it moves by half within
# an hour. ratios.py prints it beside the ratios.
cpu_probe() {
  local secs rate
  read -r secs rate < <(python3 -c 'import time
t = time.perf_counter()
s = 0
for i in range(10_000_000): s += i
secs = time.perf_counter() - t
print(round(secs, 3), round(10_000_000 / secs))')
  echo "{\"label\": \"cpu probe\", \"round\": $round, \"report\": {\"scenario\": \"probe-cpu\", \"seconds\": $secs, \"events_per_sec\": $rate}}" >>"$results"
  printf '%-34s %11s s  (10 M-step Python loop; lower is faster)\n' "cpu probe" "$secs"
}

for round in $(seq "$ROUNDS"); do
  [[ "$ROUNDS" == 1 ]] || echo "== round $round of $ROUNDS ($(uptime))"
  cpu_probe
  if [[ "${SKIP_EMBEDDED:-}" != 1 ]]; then
    E="$work/embedded"; [[ "$ROUNDS" == 1 ]] || E="$work/round$round/embedded"
    echo "== embedded store ($E)"
    run "fsync w=1" "$E" baseline fsync --writers 1 --duration "$SECS"
    run "fsync w=$W" "$E" baseline fsync --writers "$W" --duration "$SECS"
    run "sqlite w=1" "$E" baseline sqlite --writers 1 --duration "$SECS"
    run "sqlite w=$W" "$E" baseline sqlite --writers "$W" --duration "$SECS"
    scenarios embedded "$E"
    # The same appends through `concord serve` (issue 22): rate, p50 and the server's CPU.
    if [[ "${SKIP_HTTP:-}" != 1 ]]; then
      for w in 1 "$W"; do
        json="$(CONCORD="$CONCORD" BENCH_DIR="$work" bash bench/server-cpu.sh "$SECS" "$w" 1 2>/dev/null)"
        echo "{\"label\": \"http append w=$w\", \"round\": $round, \"report\": $json}" >>"$results"
        python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print("%-34s %11.0f events/s  p50 %.3f ms  server CPU %.1f us/event  load %.2f" % (sys.argv[1], r["events_per_sec"], r["p50_ms"], r["server_cpu_us_per_event"], r["load_average"]))' "http append w=$w" "$json"
      done
    fi
  fi
  if [[ "${SKIP_REDIS:-}" != 1 ]]; then
    echo "== redis ($REDIS_URL, $(redis-server --version | awk '{print $3}'))"
    R="$REDIS_URL?prefix=bench$$r$round"
    run "xadd w=1" "$R" baseline xadd --writers 1 --duration "$SECS"
    run "xadd w=$W" "$R" baseline xadd --writers "$W" --duration "$SECS"
    # The minimal conditional-append script, driven by redis-benchmark at the same concurrency.
    for c in 1 "$W"; do
      rps="$(redis-benchmark -h "$rhost" -p "$rport" -c "$c" -n $((c == 1 ? 20000 : 200000)) -r 1000000000 --csv \
        EVALSHA "$sha" 3 "{lua$$r$round}:s:__rand_int__" "{lua$$r$round}:all" "{lua$$r$round}:head" 0 BenchTicked '{"amount":1}' |
        tail -1 | cut -d, -f2 | tr -d '"')"
      echo "{\"label\": \"lua w=$c\", \"round\": $round, \"report\": {\"scenario\": \"baseline-lua\", \"writers\": $c, \"events_per_sec\": $rps, \"load_average\": $(cut -d' ' -f1 /proc/loadavg)}}" >>"$results"
      printf '%-34s %11.0f events/s  (redis-benchmark, minimal conditional-append script)\n' "lua w=$c" "$rps"
    done
    scenarios redis "$R"
  fi
done

python3 bench/ratios.py "$results" "$W"
