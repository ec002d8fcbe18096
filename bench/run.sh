#!/usr/bin/env bash
# Every `concord bench` scenario with its baselines, on the embedded store and on Redis, in
# one run on this machine, then the table of ratios (BENCHMARKS.md is made from it).
#
#   bench/run.sh [SECONDS] [WRITERS]        (defaults: 5 seconds per write run, 64 writers)
#
# Environment: BENCH_DIR (default target/bench-run) holds the stores; REDIS_URL uses an
# existing Redis instead of starting one (ephemeral port, temp dir, no persistence; never
# the machine's 6379); SKIP_REDIS=1 / SKIP_EMBEDDED=1 leave a backend out. Needs python3;
# redis-server and redis-benchmark for the Redis part. Every line of results.jsonl is one
# `concord bench --json` object with the label it has in the table.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
W="${2:-64}"
N_READ=100000

cargo build --release -q -p concord --bin concord
CONCORD="$PWD/target/release/concord"
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
  echo "{\"label\": \"$label\", \"report\": $json}" >>"$results"
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

if [[ "${SKIP_EMBEDDED:-}" != 1 ]]; then
  echo "== embedded store ($work/embedded)"
  E="$work/embedded"
  run "fsync w=1" "$E" baseline fsync --writers 1 --duration "$SECS"
  run "fsync w=$W" "$E" baseline fsync --writers "$W" --duration "$SECS"
  run "sqlite w=1" "$E" baseline sqlite --writers 1 --duration "$SECS"
  run "sqlite w=$W" "$E" baseline sqlite --writers "$W" --duration "$SECS"
  scenarios embedded "$E"
fi

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
  echo "== redis ($REDIS_URL, $(redis-server --version | awk '{print $3}'))"
  R="$REDIS_URL?prefix=bench$$"
  run "xadd w=1" "$R" baseline xadd --writers 1 --duration "$SECS"
  run "xadd w=$W" "$R" baseline xadd --writers "$W" --duration "$SECS"
  # The minimal conditional-append script, driven by redis-benchmark at the same concurrency.
  sha="$(redis-cli -h "$rhost" -p "$rport" SCRIPT LOAD "$(cat bench/minimal-conditional-append.lua)")"
  for c in 1 "$W"; do
    rps="$(redis-benchmark -h "$rhost" -p "$rport" -c "$c" -n $((c == 1 ? 20000 : 200000)) -r 1000000000 --csv \
      EVALSHA "$sha" 3 "{lua$$}:s:__rand_int__" "{lua$$}:all" "{lua$$}:head" 0 BenchTicked '{"amount":1}' |
      tail -1 | cut -d, -f2 | tr -d '"')"
    echo "{\"label\": \"lua w=$c\", \"report\": {\"scenario\": \"baseline-lua\", \"writers\": $c, \"events_per_sec\": $rps, \"load_average\": $(cut -d' ' -f1 /proc/loadavg)}}" >>"$results"
    printf '%-34s %11.0f events/s  (redis-benchmark, minimal conditional-append script)\n' "lua w=$c" "$rps"
  done
  scenarios redis "$R"
fi

python3 - "$results" "$W" <<'EOF'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    rows[d["label"]] = d["report"]
W = sys.argv[2]
def rate(label):
    r = rows.get(label)
    return r["events_per_sec"] if r else None
def line(what, num, den, target=None):
    a, b = rate(num), (rate(den) if isinstance(den, str) else den)
    if a is None or b is None:
        return
    ratio = a / b
    verdict = "" if target is None else ("  met" if ratio >= target else "  NOT met") + f" (target >= {target}x)"
    print(f"{what:<58} {a:>11.0f} / {b:>11.0f} = {ratio:6.2f}x{verdict}")
print()
print("ratios (same run)")
line(f"embedded append w={W} / sqlite w={W}", f"embedded append w={W}", f"sqlite w={W}", 20)
line("embedded append w=1 / sqlite w=1", "embedded append w=1", "sqlite w=1")
line("embedded append w=1 / fsync w=1", "embedded append w=1", "fsync w=1")
line(f"embedded append w={W} / fsync w=1", f"embedded append w={W}", "fsync w=1")
line(f"embedded hot rebase-unless / append w={W}", f"embedded hot w={W} rebase-unless", f"embedded append w={W}", 0.8)
line(f"embedded read (events/s) / 1 000 000", f"embedded read n=100000", 1_000_000, 1)
line(f"embedded catchup (events/s) / 500 000", f"embedded catchup n=100000", 500_000, 1)
line(f"redis append w={W} / minimal Lua script w={W}", f"redis append w={W}", f"lua w={W}", 0.9)
line(f"redis append w={W} / raw xadd w={W}", f"redis append w={W}", f"xadd w={W}")
line(f"redis append w={W} batch=10 / raw xadd w={W}", f"redis append w={W} batch=10", f"xadd w={W}", 1)
line(f"redis hot rebase-unless / append w={W}", f"redis hot w={W} rebase-unless", f"redis append w={W}", 0.8)
for b in ("embedded", "redis"):
    r = rows.get(f"{b} hot w={W} rebase-unless")
    if r:
        print(f"{b} hot rebase-unless retries: {r['retries']} (target 0)")
EOF
