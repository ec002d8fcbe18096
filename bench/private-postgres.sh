# Sourced by the PostgreSQL benchmarks: starts a private throwaway PostgreSQL (initdb in a
# temporary directory, its own port and socket directory, fsync and synchronous_commit on,
# 256 MB shared buffers), exports PGHOST/PGPORT/PGUSER for psql, creates database `concord`
# and sets `store` to its URL; the server is stopped and deleted on exit. As root it runs as
# user postgres. Needs PGBIN (the server binaries). `install_message_db DIR` then installs
# Message DB into database `message_store` from PEERS (default ../shared/peers) and sets
# `mdb` to its URL (empty, with a note, when the scripts are not there).
# `ab_stores A B` creates databases concord_a and concord_b and maps binary A and binary B
# to their URLs in the associative array `stores` (for the scripts that compare two builds).
# PG_EXTRA_CONF, when set, is appended to the server's postgresql.conf (e.g.
# "shared_preload_libraries = 'pg_stat_statements'" to see where the server's time goes).
[[ -x "$PGBIN/initdb" ]] || { echo "$0: no PostgreSQL server binaries (install Debian's postgresql package, or set PGBIN)" >&2; exit 1; }
pgdir="$(mktemp -d /tmp/concord-bench-pg.XXXXXX)"
as_owner() { if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[[ "$(id -u)" == 0 ]] && chown postgres: "$pgdir"
chmod 755 "$pgdir"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() {
  as_owner "$PGBIN/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$pgdir"
}
trap cleanup EXIT
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
${PG_EXTRA_CONF:-}
CONF
as_owner "$PGBIN/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 60 start >/dev/null
export PGHOST=127.0.0.1 PGPORT="$port" PGUSER=postgres
psql -X -q -d postgres -c "CREATE DATABASE concord"
store="postgres://postgres@127.0.0.1:$port/concord"

PEERS="${PEERS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/peers}"
install_message_db() {
  mdb=""
  if [[ -f "$PEERS/message-db/install.sh" ]]; then
    ( cd "$PEERS/message-db" && DATABASE_NAME=message_store PGOPTIONS='-c client_min_messages=warning' bash install.sh >"$1/message-db-install.log" 2>&1 ) \
      || { echo "$0: installing Message DB failed:" >&2; cat "$1/message-db-install.log" >&2; exit 1; }
    mdb="postgres://postgres@127.0.0.1:$port/message_store"
    echo "Message DB $(cat "$PEERS/message-db/VERSION.txt") installed"
  else
    echo "note: no Message DB scripts at $PEERS/message-db (set PEERS): its lines are skipped"
  fi
}

# Each binary writes its own database, so that two builds of different schema formats can
# be compared (a build refuses a schema newer than it knows).
ab_stores() {
  psql -X -q -d postgres -c "CREATE DATABASE concord_a" -c "CREATE DATABASE concord_b"
  declare -gA stores=([$1]="${store%/*}/concord_a" [$2]="${store%/*}/concord_b")
}
