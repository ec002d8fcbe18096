#!/usr/bin/env bash
# Conditional-append throughput of the Redis backend next to raw XADD, on one redis-server
# started here (ephemeral port, temp dir, no persistence; never the machine's 6379):
#   1. redis-benchmark XADD                (raw Redis Streams write, 1 entry)
#   2. redis-benchmark FCALL concord_bench_append (the Concord append function alone, via
#      bench/redis-conditional-append.lua: duplicate check, expectation no_stream, writes;
#      1 event to a new stream)
#   3. the Rust client end to end (examples/append_throughput.rs, release build)
# each at 1 and 50 concurrent clients. Usage: bench/redis-append-bench.sh [requests]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-50000}"
LIB=crates/concord-redis/src/concord.lua

dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no --daemonize no \
  --logfile "$dir/redis.log" &
pid=$!
trap 'kill -9 $pid 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
# The library plus the benchmark wrapper, as one library named concord_bench.
{ sed '1s/name=concord$/name=concord_bench/' "$LIB"; cat bench/redis-conditional-append.lua; } \
  | redis-cli -p "$port" -x FUNCTION LOAD REPLACE >/dev/null
last() { tr '\r' '\n' | grep -E 'requests per second|rror' ; }
echo "redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$port, no persistence, $N requests per run"

for c in 1 50; do
  echo "== raw XADD, $c clients"
  redis-benchmark -p "$port" -c "$c" -n "$N" -r 1000000000 -q \
    XADD 'xadd:s-__rand_int__' '*' type Deposited data '{"amount":1}' | last
  echo "== FCALL concord_bench_append (no_stream, 1 event, new stream), $c clients"
  redis-benchmark -p "$port" -c "$c" -n "$N" -r 1000000000 -q FCALL concord_bench_append 0 '__rand_int__' | last
done
echo "(the function runs wrote $(redis-cli -p "$port" GET '{b}:head') events)"

cargo build --release -q -p concord-redis --example append_throughput
for c in 1 50; do
  echo "== RedisStore::append end to end, $c writers"
  target/release/examples/append_throughput "redis://127.0.0.1:$port/0" "$c" "$N"
done
