#!/usr/bin/env bash
# Runs every check and test of chute: formatting, lints, unit tests and the integration
# tests, which start real servers on loopback and drive them with reqwest, curl and a real
# front end in headless Chromium. Installs what those need first (scripts/setup-e2e.sh).
# The integration tests run twice: on the embedded SQLite catalog, then every app on a
# PostgreSQL catalog (a server this script starts with scripts/postgres-test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-e2e.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked

pgdir=$(mktemp -d "${TMPDIR:-/tmp}/chute-test-pg.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./scripts/postgres-test.sh "$pgdir/cluster" "$port" > "$pgdir/log" 2>&1 &
pgpid=$!
trap 'kill -INT "$pgpid" 2>/dev/null || true; wait "$pgpid" 2>/dev/null || true; rm -rf "$pgdir"' EXIT
for _ in $(seq 300); do
  psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAtc 'select 1' >/dev/null 2>&1 && break
  kill -0 "$pgpid" 2>/dev/null || { cat "$pgdir/log" >&2; echo "PostgreSQL did not start" >&2; exit 1; }
  sleep 0.2
done
echo "integration tests again, on PostgreSQL (127.0.0.1:$port)"
CHUTE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port" cargo test --locked --test it
