#!/usr/bin/env bash
# Runs a throwaway PostgreSQL server in the foreground for the tests: a new cluster in DIR
# (or the one already there, for a restart), listening on 127.0.0.1:PORT only, trust authentication for the
# user `postgres`, fsync off (test data). Usage: postgres-test.sh DIR PORT
# The process execs into the postmaster, so its PID is the server's: SIGTERM/SIGINT stop it.
# As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
set -euo pipefail
dir=$1 port=$2
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
[ -n "$bin" ] && [ -x "$bin/postgres" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 2; }
as_pg=()
if [ "$(id -u)" = 0 ]; then
  # The server's user must reach DIR: the tests' private temp folders are opened for traversal.
  parent=$(dirname "$dir")
  chmod o+x "$parent"
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi
if [ ! -f "$dir/PG_VERSION" ]; then # a cluster already there is started again (a restart)
  mkdir "$dir"
  [ "$(id -u)" != 0 ] || chown postgres:postgres "$dir"
  "${as_pg[@]}" "$bin/initdb" -D "$dir" -U postgres -A trust --no-sync -E UTF8 >"$dir.initdb.log" 2>&1 \
    || { cat "$dir.initdb.log" >&2; exit 1; }
fi
exec "${as_pg[@]}" "$bin/postgres" -D "$dir" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200
