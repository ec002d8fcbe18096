#!/usr/bin/env bash
# Concord's PostgreSQL backend beside what the same server does without it, in one run, on a
# private throwaway PostgreSQL (initdb in a temporary directory, its own port, fsync and
# synchronous_commit on): plain one-transaction-per-event INSERTs of the same 1 KiB rows
# (`concord bench baseline postgres`), Message DB 1.3.0's write_message with an expected
# version (`concord bench baseline messagedb`, installed here from ../shared/peers/message-db),
# and Concord's `append` on the postgres backend, at 1 and W writers, rounds interleaved;
# three Concord processes appending at once (W/3 writers each, summed; positions checked
# gap-free afterwards); the lag of a live subscription (`concord tail --all`, its own
# process) behind W writers of another process; then the issue-18 ratios (median and range
# over rounds, each ratio within one round).
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

if [[ -z "${CONCORD:-}" ]]; then
  cargo build --release -q --locked -p concord --bin concord
  CONCORD="${CARGO_TARGET_DIR:-$PWD/target}/release/concord"
fi
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/postgres.XXXXXX")" && pwd)"
results="$work/results.jsonl"
echo "results in $results; $(nproc) cores; $(uptime)"

# The private server.
. bench/private-postgres.sh

install_message_db "$work"

# run LABEL STORE ARGS... : one `concord bench`, its JSON kept under LABEL.
run() {
  local label="$1" store="$2"; shift 2
  local json
  json="$("$CONCORD" --store "$store" --json bench "$@")"
  echo "{\"label\": \"$label\", \"round\": $round, \"report\": $json}" >>"$results"
  python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print("round %s %-28s %9.0f events/s  p50 %.3f ms  p99 %.3f ms  load %.2f" % (sys.argv[3], sys.argv[1], r["events_per_sec"], r["p50_ms"], r["p99_ms"], r["load_average"]))' "$label" "$json" "$round"
}

# run3 LABEL ARGS... : three `concord bench` processes at once on the store, W/3 writers each;
# their rates summed under LABEL.
run3() {
  local label="$1"; shift
  local per=$(( W / 3 )) i
  for i in 1 2 3; do
    "$CONCORD" --store "$store" --json bench "$@" --writers "$per" >"$work/proc$i.json" &
  done
  wait
  python3 - "$label" "$round" "$work"/proc{1,2,3}.json >>"$results" <<'PY'
import json, sys
label, rnd, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rs = [json.loads(open(p).read()) for p in paths]
sum_rate = sum(r["events_per_sec"] for r in rs)
report = {"events_per_sec": sum_rate, "p50_ms": max(r["p50_ms"] for r in rs),
          "p99_ms": max(r["p99_ms"] for r in rs), "load_average": rs[0]["load_average"],
          "processes": [r["events_per_sec"] for r in rs]}
print(json.dumps({"label": label, "round": rnd, "report": report}))
sys.stderr.write("round %d %-28s %9.0f events/s  (%s)  worst p50 %.3f ms  worst p99 %.3f ms\n" % (
    rnd, label, sum_rate, " + ".join("%.0f" % r["events_per_sec"] for r in rs), report["p50_ms"], report["p99_ms"]))
PY
  local count max
  read -r count max < <(psql -X -q -t -A -F ' ' -d concord -c "SELECT count(*), coalesce(max(position), 0) FROM concord.concord_events")
  if [[ "$count" == "$max" ]]; then
    echo "round $round positions 1..$max gap-free after three processes ($count events)"
  else
    echo "round $round POSITIONS NOT GAP-FREE: $count events, highest position $max" >&2
    exit 1
  fi
}

# lag LABEL ARGS... : a `concord tail --all --from end` process follows the store while
# another process runs `concord bench ARGS...`; how far behind each event's recorded_at
# (ms) the subscriber printed it.
lag() {
  local label="$1"; shift
  "$CONCORD" --store "$store" --json tail --all --from end >"$work/tail.fifo.out" 2>/dev/null &
  local tail_pid=$!
  python3 - "$work/tail.fifo.out" "$work/lag.json" "$tail_pid" <<'PY' &
import datetime, json, os, sys, time
path, out, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
lags = []
with open(path, "rb") as f:
    buf = b""
    while True:
        chunk = f.read(1 << 16)
        now = time.time()
        if not chunk:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.001)  # the tail's output file grows as events arrive
            continue
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            i = line.rfind(b'"recorded_at":"')
            if i < 0:
                continue
            ts = line[i + 15:i + 39].split(b'"')[0].decode()
            at = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
            lags.append((now - at) * 1000)
lags.sort()
q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))] if lags else float("nan")
json.dump({"events": len(lags), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": lags[-1] if lags else float("nan")}, open(out, "w"))
PY
  local meter_pid=$!
  sleep 1  # the tail is subscribed before the writers start
  run "$label" "$store" "$@"
  sleep 1  # the last events reach the tail
  kill "$tail_pid"; wait "$tail_pid" 2>/dev/null || true
  wait "$meter_pid"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("round %s %-28s subscriber lag over %d events: p50 %.1f ms  p99 %.1f ms  max %.1f ms" % (sys.argv[2], "lag", r["events"], r["p50_ms"], r["p99_ms"], r["max_ms"]))' "$work/lag.json" "$round"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"label": "lag w=%s" % sys.argv[3], "round": int(sys.argv[2]), "report": r}))' "$work/lag.json" "$round" "$W" >>"$results"
  rm -f "$work/tail.fifo.out"
}

for round in $(seq 1 "$ROUNDS"); do
  for w in 1 "$W"; do
    run "insert w=$w" "$store" baseline postgres --writers "$w" --duration "$SECS" --event-bytes "$BYTES"
    [[ -n "$mdb" ]] && run "messagedb w=$w" "$mdb" baseline messagedb --writers "$w" --duration "$SECS" --event-bytes "$BYTES"
    run "concord w=$w" "$store" append --writers "$w" --duration "$SECS" --event-bytes "$BYTES"
  done
  run "concord hot rebase w=$W" "$store" hot --writers "$W" --duration "$SECS" --event-bytes "$BYTES" --policy rebase-unless
  run3 "concord 3 processes w=$W" append --duration "$SECS" --event-bytes "$BYTES"
  lag "concord w=$W with a subscriber" append --writers "$W" --duration "$SECS" --event-bytes "$BYTES"
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
ratio(f"concord 3 processes w={w}", f"concord w={w}", 0.8, " (three processes on one database, summed, vs one)")
lags = [rs[f"lag w={w}"] for rs in by.values() if f"lag w={w}" in rs]
if lags:
    p99 = statistics.median(l["p99_ms"] for l in lags)
    print(f"subscriber lag p99 across processes at {w} writers: median {p99:.1f} ms "
          f"(rounds: {', '.join('%.1f' % l['p99_ms'] for l in lags)}; target <= 50 ms: {'met' if p99 <= 50 else 'NOT met'})")
PY
