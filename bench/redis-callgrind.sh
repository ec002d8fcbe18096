#!/usr/bin/env bash
# Instructions Redis executes per appended event, counted with callgrind: repeatable where
# times on a shared 2-core machine move ±20 % between runs, so a change to the function
# library (crates/concord-redis/src/concord.lua) can be judged in one run of each.
#
#   bench/redis-callgrind.sh [LIBRARY.lua] [EVENTS=6000] [BENCH ARGS...]
#
# Starts redis-server under valgrind (ephemeral port, temp dir, no persistence), loads the
# library (default: the crate's), runs `concord bench append --writers 64 ARGS` once to
# create the streams, then counts the instructions of a second run of EVENTS events
# (e.g. `bench/redis-callgrind.sh "" 20000 --batch 10`). Needs valgrind and redis-server;
# builds target/release/concord. The callgrind file is kept for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
LIB="${1:-crates/concord-redis/src/concord.lua}"
[[ -n "$LIB" ]] || LIB=crates/concord-redis/src/concord.lua
N="${2:-6000}"
shift $(( $# < 2 ? $# : 2 ))
for tool in valgrind callgrind_control callgrind_annotate redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing (Debian: valgrind, redis-server)" >&2; exit 1; }
done
cargo build --release -q -p concord --bin concord
CONCORD="$PWD/target/release/concord"

dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" --instr-atstart=no \
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
  >"$dir/redis.log" 2>&1 &
vg=$!
trap 'kill -9 $vg 2>/dev/null || true' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.3; done
# The library under its own name, as the client would load it (a failed load is an error,
# not a silent fall-back to the client's built-in copy).
loaded="$(redis-cli -p "$port" -x FUNCTION LOAD REPLACE <"$LIB")"
[[ "$loaded" == concord ]] || { echo "error: FUNCTION LOAD: $loaded" >&2; exit 1; }
store="redis://127.0.0.1:$port/0?prefix=cg"
"$CONCORD" --store "$store" --json bench append --writers 64 "$@" --events 3000 >/dev/null
callgrind_control -i on "$vg" >/dev/null
"$CONCORD" --store "$store" --json bench append --writers 64 "$@" --events "$N" >/dev/null
callgrind_control -i off "$vg" >/dev/null
callgrind_control -d "$vg" >/dev/null
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$vg" 2>/dev/null || true
out="$(ls -S "$dir"/callgrind.out* | head -1)"
total="$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t { gsub(",", "", $1); t = $1 } END { print t }')"
echo "$(basename "$LIB"): $((total / N)) Redis instructions per event (bench append --writers 64 $* --events $N)"
echo "profile: $out (callgrind_annotate --inclusive=yes $out)"
