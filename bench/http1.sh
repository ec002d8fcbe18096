#!/usr/bin/env bash
# One writer, library mode beside HTTP through `concord serve`, ROUNDS times:
#   bash bench/http1.sh [BIN] [ROUNDS]
# Prints each round's events/s and p50 of a lone library append and of a lone HTTP append
# (the issue-22 ratio "HTTP append, 1 connection: p50 ≤ 1.5× library mode's"). Set
# SERVER_CPUS / CLIENT_CPUS (taskset lists) to pin the server and the client.
set -euo pipefail
BIN=${1:-target/release/concord}
ROUNDS=${2:-3}
DIR=$(mktemp -d /var/tmp/concord-http1.XXXXXX)
PORT=${PORT:-18777}
pin() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }
p50() { python3 -c "import json,sys; d=json.load(sys.stdin); print(round(d['events_per_sec']), 'events/s, p50', d['p50_ms'], 'ms')"; }
trap 'rm -rf "$DIR"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$DIR"/*
  lib=$($(pin "${SERVER_CPUS:-}") "$BIN" --store "$DIR/lib" --json bench append --writers 1 --duration 3 2>/dev/null | p50)
  $(pin "${SERVER_CPUS:-}") "$BIN" --store "$DIR/srv" serve --addr "127.0.0.1:$PORT" --no-projections > "$DIR/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 0.1; done
  http=$($(pin "${CLIENT_CPUS:-}") "$BIN" --store "http://127.0.0.1:$PORT" --json bench append --writers 1 --duration 3 2>/dev/null | p50)
  kill "$server"; wait "$server" 2>/dev/null || true
  echo "round $r: library $lib | http $http"
done
