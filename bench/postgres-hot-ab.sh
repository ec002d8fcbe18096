#!/usr/bin/env bash
# A/B of the hot-stream line on PostgreSQL: for each round and each binary given, `concord
# bench hot --policy rebase-unless` and `concord bench append` at 64 writers with 1 KiB
# events on one private throwaway PostgreSQL (initdb in a temporary directory, fsync and
# synchronous_commit on), and the ratio hot / append within the pair. Alternate the order of
# the binaries between runs: the first line on a fresh server runs slow.
#
#   bench/postgres-hot-ab.sh BINARY_A BINARY_B [ROUNDS=3]
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: bench/postgres-hot-ab.sh BINARY_A BINARY_B [ROUNDS]" >&2; exit 2; }
A="$1"; B="$2"; ROUNDS="${3:-3}"
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
[[ -x "$PGBIN/initdb" ]] || { echo "postgres-hot-ab.sh: no PostgreSQL server binaries (install Debian's postgresql package, or set PGBIN)" >&2; exit 1; }
pgdir="$(mktemp -d /tmp/concord-hot-ab.XXXXXX)"
as_owner() { if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[[ "$(id -u)" == 0 ]] && chown postgres: "$pgdir"
chmod 755 "$pgdir"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
trap 'as_owner "$PGBIN/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
as_owner "$PGBIN/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$pgdir/initdb.log" 2>&1
cat >>"$pgdir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pgdir'
fsync = on
synchronous_commit = on
shared_buffers = 256MB
max_connections = 300
log_min_messages = warning
CONF
as_owner "$PGBIN/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 60 start >/dev/null
psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE concord"
store="postgres://postgres@127.0.0.1:$port/concord"
echo "$(nproc) cores; $(uptime)"
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$A" "$B"; do
    hot="$("$bin" --store "$store" --json bench hot --writers 64 --duration 5 --event-bytes 1024 --policy rebase-unless 2>/dev/null)"
    plain="$("$bin" --store "$store" --json bench append --writers 64 --duration 5 --event-bytes 1024 2>/dev/null)"
    python3 -c 'import json,sys; h=json.loads(sys.argv[2]); u=json.loads(sys.argv[3]); print("round %s %-40s hot %6.0f/s p50 %.1f ms  append %6.0f/s  ratio %.2f  retries %s" % (sys.argv[4], sys.argv[1], h["events_per_sec"], h["p50_ms"], u["events_per_sec"], h["events_per_sec"]/u["events_per_sec"], h.get("retries")))' "$bin" "$hot" "$plain" "$round"
  done
done
