#!/usr/bin/env bash
# Issue 12's slow-client load against a release build of chute (SQLite, local folder): 2,000
# tus PATCHes trickling at 1 KiB/s each, 10,000 idle keep-alive connections, and
# meanwhile /healthz every 500 ms and another user's 64 MiB upload and download, for 30 s.
# Prints the client's figures and the server's peak RSS and threads. The trickling PATCHes
# come from one user, so max_concurrent_uploads_per_user and max_open_uploads_per_user are raised for the run: the bench is
# about threads, memory and connections, not admission.
# Usage: bench/slow_clients.sh [TRICKLES] [IDLE] [SECONDS]. Loopback only; ends what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
TRICKLES=${1:-2000} IDLE=${2:-10000} SECONDS_=${3:-30}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chute-slow-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release -q -p chute --bin chute --example bench_slow_clients
BIN=target/release/chute
ulimit -n "$(ulimit -Hn)"
"$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --max-concurrent-uploads-per-user 1000000 --max-open-uploads-per-user 1000000 \
  > "$WORK/serve.out" 2> "$WORK/serve.err" & SERVER=$!; PIDS+=($SERVER)
for _ in $(seq 100); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's/.*listening on http:\/\///p' "$WORK/serve.out")
TOKEN=$(grep '^chute_' "$WORK/serve.out")
"$BIN" --data-dir "$WORK/data" user add normal 2>/dev/null
NORMAL=$("$BIN" --data-dir "$WORK/data" token create --user normal)
threads() { awk '/^Threads:/ {print $2}' "/proc/$SERVER/status"; }
echo "server threads before: $(threads)"
( peak=0; while kill -0 "$SERVER" 2>/dev/null; do t=$(threads); [ "${t:-0}" -gt "$peak" ] && peak=$t && echo "$peak" > "$WORK/threads.peak"; sleep 0.5; done ) &
PIDS+=($!)
target/release/examples/bench_slow_clients "$ADDR" "$TOKEN" "$NORMAL" "$TRICKLES" "$IDLE" "$SECONDS_"
echo "server peak RSS: $(awk '/^VmHWM:/ {print int($2/1024)}' "/proc/$SERVER/status") MiB, peak threads: $(cat "$WORK/threads.peak")"
grep -m1 "open files" "$WORK/serve.err" || true
