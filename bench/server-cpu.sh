#!/usr/bin/env bash
# Server CPU per HTTP append, split by thread: starts `concord serve --no-projections` on a
# fresh embedded store, runs `concord bench append` against it over HTTP, and divides each
# server thread's CPU time (utime + stime from /proc/PID/task/*/stat, before and after) by
# the events appended. The tokio workers are the HTTP path (parse, route, answer, hand-off);
# the writer and syncer threads are the store, which library mode pays as well.
#
#   bench/server-cpu.sh [SECONDS=5] [WRITERS=64] [BATCH=1]
#
# CONCORD (default target/release/concord) is the binary under test; BENCH_DIR (default
# target/bench-run) holds the store. Prints one JSON object per run on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
W="${2:-64}"
B="${3:-1}"
CONCORD="${CONCORD:-$PWD/target/release/concord}"
[[ -x "$CONCORD" ]] || { echo "server-cpu.sh: no binary at $CONCORD (cargo build --release -p concord)" >&2; exit 2; }
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/cpu.XXXXXX")" && pwd)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

"$CONCORD" --store "$work/store" serve --no-projections --addr "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/health" >/dev/null || { echo "server-cpu.sh: the server did not start:" >&2; cat "$work/serve.log" >&2; exit 1; }

# Each thread's name and its CPU ticks (utime + stime); comm may hold spaces, hence the split
# at the last ')'.
threads() {
  for t in /proc/"$server"/task/*; do
    local stat name
    stat="$(cat "$t/stat" 2>/dev/null)" || continue
    name="$(cat "$t/comm" 2>/dev/null)" || continue
    echo "$(basename "$t") ${name// /_} $(echo "${stat##*)}" | awk '{print $12 + $13}')"
  done
}
before="$(threads)"
report="$("$CONCORD" --store "http://127.0.0.1:$port" --json bench append --writers "$W" --batch "$B" --duration "$SECS")"
after="$(threads)"

python3 - "$before" "$after" "$report" "$(getconf CLK_TCK)" <<'PY'
import json, sys
before, after, report, hz = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
def parse(text):
    out = {}
    for line in text.splitlines():
        tid, name, ticks = line.split()
        out[tid] = (name, int(ticks))
    return out
b, a = parse(before), parse(after)
groups = {}
for tid, (name, ticks) in a.items():
    used = ticks - b.get(tid, (name, 0))[1]
    group = "tokio workers" if name.startswith("tokio") else name
    groups[group] = groups.get(group, 0) + used
events = report["events"]
per = {g: round(t / hz / events * 1e6, 2) for g, t in sorted(groups.items()) if t}
print(json.dumps({
    "writers": report["writers"], "batch": report["batch"], "events": events,
    "events_per_sec": round(report["events_per_sec"]), "p50_ms": report["p50_ms"],
    "server_cpu_us_per_event": round(sum(groups.values()) / hz / events * 1e6, 2),
    "by_thread_us_per_event": per, "load_average": report["load_average"],
}))
PY
