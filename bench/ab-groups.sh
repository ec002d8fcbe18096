#!/usr/bin/env bash
# A/B of two `concord` binaries on consumer groups, in one run: `bench group` through one
# `concord serve` per run on a fresh embedded store (4 consumers over HTTP) at 100 and 1000
# messages per poll, beside a catch-up subscription through the same kind of server; and
# on Redis beside raw XREADGROUP + XACK (`bench baseline xgroup`), both in process and
# through a `concord serve` on that Redis (4 consumers over HTTP, as the embedded runs),
# beside a catch-up subscription through a server on that Redis.
# The order of the two binaries alternates by round. SKIP_EMBEDDED=1 runs only Redis.
#
#   bench/ab-groups.sh BEFORE AFTER [ROUNDS=3]
#
# BEFORE and AFTER are paths of release builds. Environment: BENCH_DIR (default
# target/bench-run) holds the stores; REDIS_URL (default redis://127.0.0.1:6390/0) is a
# Redis this script may FLUSHALL before each run (start a private one: redis-server
# --port 6390 --save "" --appendonly no); GROUP_EVENTS (100000) and REDIS_EVENTS (200000).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { echo "usage: bench/ab-groups.sh BEFORE AFTER [ROUNDS]" >&2; exit 2; }
before="$1"; after="$2"; ROUNDS="${3:-3}"
for b in "$before" "$after"; do [[ -x "$b" ]] || { echo "ab-groups.sh: $b is not an executable" >&2; exit 2; }; done
redis="${REDIS_URL:-redis://127.0.0.1:6390/0}"
command -v redis-cli >/dev/null || { echo "ab-groups.sh: redis-cli is missing (Debian package redis-tools)" >&2; exit 2; }
redis-cli -u "$redis" ping >/dev/null || { echo "ab-groups.sh: no Redis at $redis" >&2; exit 2; }
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/ab-groups.XXXXXX")" && pwd)"
echo "stores in $work; $(nproc) cores; $(uptime)"
server=""
cleanup() { if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; }
trap cleanup EXIT

# line LABEL JSON: the rate and p50 of one `concord --json bench`.
line() {
  python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print("round %s %-28s %9.0f events/s  p50 %.3f ms" % (sys.argv[3], sys.argv[1], r["events_per_sec"], r["p50_ms"]))' "$1" "$2" "$round"
}

# served LABEL BINARY SCENARIO BATCH [STORE]: one bench against a fresh `concord serve`
# on a new embedded store, or on STORE (the Redis, flushed first).
served() {
  local label="$1" bin="$2" scenario="$3" batch="$4" store="${5:-}" d events="${GROUP_EVENTS:-100000}"
  d="$(mktemp -d "$work/serve.XXXXXX")"
  if [[ -n "$store" ]]; then redis-cli -u "$store" flushall >/dev/null; events="${REDIS_EVENTS:-200000}"; else store="$d/store"; fi
  "$bin" --store "$store" serve --addr 127.0.0.1:2298 --no-projections 2>"$d/serve.log" &
  server=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:2298/health >/dev/null && break; sleep 0.1; done
  line "$label" "$("$bin" --store http://127.0.0.1:2298 --json bench "$scenario" --writers 4 --batch "$batch" --events "$events" 2>/dev/null)"
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

# on_redis LABEL BINARY BATCH SCENARIO...: one bench on a flushed Redis.
on_redis() {
  local label="$1" bin="$2" batch="$3"; shift 3
  redis-cli -u "$redis" flushall >/dev/null
  line "$label" "$("$bin" --store "$redis" --json bench "$@" --writers 4 --batch "$batch" --events "${REDIS_EVENTS:-200000}" 2>/dev/null)"
}

for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then order="before after"; else order="after before"; fi
  if [[ -z "${SKIP_EMBEDDED:-}" ]]; then
    for b in 100 1000; do
      for which in $order; do
        if [[ "$which" == before ]]; then bin="$before"; else bin="$after"; fi
        served "$which embedded-http B=$b" "$bin" group "$b"
      done
    done
    served "catch-up (after's server)" "$after" catchup 100
  fi
  for b in 100 1000; do
    on_redis "raw xgroup B=$b" "$before" "$b" baseline xgroup
    for which in $order; do
      if [[ "$which" == before ]]; then bin="$before"; else bin="$after"; fi
      on_redis "$which redis B=$b" "$bin" "$b" group
      served "$which redis-http B=$b" "$bin" group "$b" "$redis"
    done
  done
  served "catch-up redis (after's server)" "$after" catchup 100 "$redis"
done
