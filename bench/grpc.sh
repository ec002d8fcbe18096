#!/usr/bin/env bash
# KurrentDB's gRPC protocol against Concord's HTTP API, on one `concord serve` (release build,
# embedded store, no projections), in one run: appends at W writers over HTTP, over gRPC one
# Append call per append, and over one shared gRPC BatchAppend call (rotated order each
# round), a stream read and a `$all` catch-up over each, and the 4 KiB fsync loop
# of the store's disk, then the ratios (median and range over rounds, each ratio within one
# round). BENCHMARKS.md (issue 21's rows) is made from it.
#
#   bench/grpc.sh [SECONDS=5] [WRITERS=64] [ROUNDS=3] [CATCHUP_EVENTS=500000]
#
# Environment: BENCH_DIR (default target/bench-run) holds the store and results.jsonl;
# CONCORD (default target/release/concord, built here) is the binary measured.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
W="${2:-64}"
ROUNDS="${3:-3}"
N_CATCHUP="${4:-500000}"
N_READ=100000
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "grpc.sh: ROUNDS must be a positive number, not '$ROUNDS'" >&2; exit 2; }

if [[ -z "${CONCORD:-}" ]]; then
  cargo build --release -q --locked -p concord --bin concord
  CONCORD="${CARGO_TARGET_DIR:-$PWD/target}/release/concord"
fi
mkdir -p "${BENCH_DIR:-target/bench-run}"
work="$(cd "$(mktemp -d "${BENCH_DIR:-target/bench-run}/grpc.XXXXXX")" && pwd)"
results="$work/results.jsonl"
echo "results in $results; $(nproc) cores; $(uptime)"

server=""
cleanup() { if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; }
trap cleanup EXIT
. bench/serve.sh
serve "$CONCORD" "$work/store" "$work/serve.log"

# run LABEL STORE ARGS... : one `concord bench`, its JSON kept under LABEL.
run() {
  local label="$1" store="$2"; shift 2
  local json
  json="$("$CONCORD" --store "$store" --json bench "$@")"
  echo "{\"label\": \"$label\", \"round\": $round, \"report\": $json}" >>"$results"
  python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print("round %s %-26s %11.0f events/s  p50 %.3f ms  p99 %.3f ms  load %.2f" % (sys.argv[3], sys.argv[1], r["events_per_sec"], r["p50_ms"], r["p99_ms"], r["load_average"]))' "$label" "$json" "$round"
}

for round in $(seq 1 "$ROUNDS"); do
  run "fsync w=1" "$work" baseline fsync --writers 1 --duration "$SECS"
  if (( round % 2 )); then order="http grpc"; else order="grpc http"; fi
  # Appends three ways, the first rotated each round: HTTP, one gRPC Append call per
  # append, and every writer's appends on one shared BatchAppend call.
  appends=(http grpc grpc-batch)
  for i in 0 1 2; do
    proto="${appends[$(( (i + round - 1) % 3 ))]}"
    case "$proto" in
      grpc-batch) run "grpc-batch append w=$W" "grpc://$addr" append --writers "$W" --duration "$SECS" --grpc-call batch-append ;;
      *) run "$proto append w=$W" "$proto://$addr" append --writers "$W" --duration "$SECS" ;;
    esac
  done
  for proto in $order; do
    run "$proto read n=$N_READ" "$proto://$addr" read --events "$N_READ"
  done
  for proto in $order; do
    run "$proto catchup n=$N_CATCHUP" "$proto://$addr" catchup --events "$N_CATCHUP"
  done
done

python3 - "$results" "$W" "$N_READ" "$N_CATCHUP" <<'PY'
import json, statistics, sys
path, w, n_read, n_catchup = sys.argv[1:]
rows = [json.loads(line) for line in open(path)]
rate = {}
for r in rows:
    rate.setdefault(r["label"], {})[r["round"]] = r["report"]["events_per_sec"]
def show(name, ratios, target=None):
    if not ratios:
        return
    med = statistics.median(ratios)
    met = "" if target is None else f"  target >= {target}: {sum(x >= target for x in ratios)} of {len(ratios)} rounds"
    print(f"{name:<44} median {med:8.2f}  range {min(ratios):.2f}-{max(ratios):.2f}{met}")
def ratio(a, b, target=None, name=None):
    rounds = sorted(set(rate.get(a, {})) & set(rate.get(b, {})))
    show(name or f"{a} / {b}", [rate[a][k] / rate[b][k] for k in rounds], target)
print()
for label in rate:
    vals = list(rate[label].values())
    print(f"{label:<44} median {statistics.median(vals):10.0f} events/s  range {min(vals):.0f}-{max(vals):.0f}")
print()
ratio(f"grpc append w={w}", f"http append w={w}", 1.0)
ratio(f"grpc-batch append w={w}", f"http append w={w}", 1.0)
ratio(f"grpc-batch append w={w}", f"grpc append w={w}")
ratio(f"grpc read n={n_read}", f"http read n={n_read}")
ratio(f"grpc catchup n={n_catchup}", f"http catchup n={n_catchup}")
ratio(f"grpc append w={w}", "fsync w=1")
grpc_catchup = list(rate.get(f"grpc catchup n={n_catchup}", {}).values())
if grpc_catchup:
    print(f"grpc catchup n={n_catchup}: {sum(x >= 300000 for x in grpc_catchup)} of {len(grpc_catchup)} rounds >= 300 000 events/s")
PY
