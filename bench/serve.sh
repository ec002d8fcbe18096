# Sourced by the benchmarks that drive a `concord serve`: `serve BINARY STORE LOG` starts it
# on STORE (no projections) at an ephemeral port, its log in LOG, and sets `server` (its
# pid) and `addr` (host:port, as the server prints it); when it does not start, prints the
# log and exits. The caller stops it (`kill "$server"`).
serve() {
  local bin="$1" store="$2" log="$3"
  "$bin" --store "$store" serve --addr 127.0.0.1:0 --no-projections 2>"$log" &
  server=$!
  addr=""
  for _ in $(seq 1 300); do
    addr="$(sed -n 's/.* on http:\/\/\([^ ]*\) .*/\1/p' "$log" | head -n 1 || true)"
    [[ -n "$addr" ]] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n "$addr" ]] || { echo "$(basename "$0"): concord serve did not start:" >&2; cat "$log" >&2; exit 1; }
}
