#!/usr/bin/env bash
# Runs every check and test of chute: formatting, lints, unit tests and the integration
# tests, which start real servers on loopback and drive them with reqwest, curl and a real
# front end in headless Chromium. Installs what those need first (scripts/setup-e2e.sh).
# The integration tests run three times: on the embedded default (SQLite catalog, local
# folder), then every app on a PostgreSQL catalog (a server this script starts with
# scripts/postgres-test.sh), then as the scaled-out deployment: PostgreSQL catalog and S3
# storage in a Garage bucket (scripts/garage-test.sh). Last, every fuzz target runs 20 s from
# its kept corpus (scripts/fuzz.sh, nightly toolchain and cargo-fuzz). The chaos test and the
# API contract run (scripts/api-contract.sh: openapi-spec-validator, schemathesis) run once,
# after the first pass.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage says its name, the time and the disk left, so a red run shows where it stood.
stage() { echo "== $1 ($(date +%T), $(df -h . | awk 'NR==2 {print $4}') free)"; }

stage "setting up the test tools"
./scripts/setup-e2e.sh
stage "formatting, layers, lockfile, clippy"
cargo fmt --all -- --check
./scripts/layers.sh
# The upload page ships only what its lockfile names.
./scripts/build-ui.sh --check
cargo clippy --all-targets --locked -- -D warnings
# Every pass logs its servers into a file of its own, searched for secrets after it.
logs=$(mktemp -d "${TMPDIR:-/tmp}/chute-test-logs.XXXXXX")
stage "unit and integration tests, on the embedded default (SQLite, local folder)"
CHUTE_TEST_LOG="$logs/sqlite.log" cargo test --all-targets --locked
./scripts/check-logs.sh "$logs/sqlite.log"
# The chaos test (two nodes, PostgreSQL and Garage of its own, restarted under 20 resuming
# clients) runs once, alone: it is the same on every pass and loads the machine for a minute.
stage "the chaos test: faults across nodes"
cargo test --locked --test it -- --ignored chaos
# The OpenAPI document, validated and held to a live server by schemathesis (about 45 s).
stage "the API contract: openapi-spec-validator and schemathesis"
./scripts/api-contract.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
work=$(mktemp -d "${TMPDIR:-/tmp}/chute-test-servers.XXXXXX")
pgpid="" garagepid=""
stop_servers() {
  [ -n "$pgpid" ] && { kill -INT "$pgpid" 2>/dev/null || true; wait "$pgpid" 2>/dev/null || true; }
  [ -n "$garagepid" ] && { kill -TERM "$garagepid" 2>/dev/null || true; wait "$garagepid" 2>/dev/null || true; }
  rm -rf "$work" "$logs"
}
trap stop_servers EXIT
# $1 name, $2 pid, $3 log, then the readiness probe
wait_ready() {
  local name=$1 pid=$2 log=$3; shift 3
  for _ in $(seq 300); do
    "$@" && return
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "$name did not start" >&2; exit 1; }
    sleep 0.2
  done
  cat "$log" >&2; echo "$name was not ready in 60 s" >&2; exit 1
}

pgport=$(free_port)
./scripts/postgres-test.sh "$work/pg" "$pgport" > "$work/pg.log" 2>&1 & pgpid=$!
wait_ready PostgreSQL "$pgpid" "$work/pg.log" \
  sh -c "psql -h 127.0.0.1 -p $pgport -U postgres -d postgres -qAtc 'select 1' >/dev/null 2>&1"
export CHUTE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pgport"
stage "integration tests again, on PostgreSQL (127.0.0.1:$pgport)"
CHUTE_TEST_LOG="$logs/postgres.log" cargo test --locked --test it
./scripts/check-logs.sh "$logs/postgres.log"

s3port=$(free_port)
./scripts/garage-test.sh "$work/garage" "$s3port" "$(free_port)" "$(free_port)" > "$work/garage.log" 2>&1 & garagepid=$!
# The bucket answers a signed HEAD once the node has its layout, key and bucket.
wait_ready Garage "$garagepid" "$work/garage.log" \
  sh -c "curl -sf -o /dev/null -I --aws-sigv4 aws:amz:garage:s3 \
    --user GK0123456789abcdef01234567:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' http://127.0.0.1:$s3port/chute-test/"
stage "integration tests a third time, on PostgreSQL and S3 storage (Garage at 127.0.0.1:$s3port)"
CHUTE_TEST_S3="http://127.0.0.1:$s3port" CHUTE_TEST_LOG="$logs/s3.log" cargo test --locked --test it
./scripts/check-logs.sh "$logs/s3.log"

stage "fuzz targets, 20 s each from the kept corpora"
./scripts/fuzz.sh 20
stage "all passed"
