#!/usr/bin/env bash
# Server CPU a small request costs, for the chute built here against another binary
# (BASE_BIN=PATH, e.g. one built at an earlier revision): GET /api/files?limit=10 (ten files
# listed), 20000 requests 8 at a time over keep-alive (examples/bench_requests.rs), rounds
# alternating between the two, each server's user+system CPU read from /proc around its
# round. On a shared machine CPU a request varies far less than requests per second, and
# both binaries see the same load. Usage: BASE_BIN=PATH [ROUNDS=4] bench/request-cpu.sh.
# Loopback only; ends what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BASE_BIN:?give BASE_BIN=PATH, the chute binary to compare with}"
ROUNDS=${ROUNDS:-4}; N=20000
cargo build --release -q -p chute --bin chute --example bench_requests
CLIENT=target/release/examples/bench_requests
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chute-cpu-bench.XXXXXX")
declare -A BIN=([now]=target/release/chute [before]=$BASE_BIN) PORT TOK SPID
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
head -c 1000 /dev/urandom > "$WORK/f.bin"
for v in now before; do
  p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  CHUTE_LOG=warn "${BIN[$v]}" --data-dir "$WORK/$v" --listen "127.0.0.1:$p" serve > "$WORK/$v.log" 2>&1 &
  SPID[$v]=$!; PIDS+=($!); PORT[$v]=$p
  for _ in $(seq 100); do grep -q '^chute_' "$WORK/$v.log" 2>/dev/null && break; sleep 0.1; done
  TOK[$v]=$(grep -m1 '^chute_' "$WORK/$v.log")
  for _ in $(seq 10); do
    curl -sf -o /dev/null -H "Authorization: Bearer ${TOK[$v]}" -F "file=@$WORK/f.bin" "http://127.0.0.1:$p/api/files"
  done
done
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  for v in now before; do
    a=$(cpu "${SPID[$v]}")
    "$CLIENT" "http://127.0.0.1:${PORT[$v]}/api/files?limit=10" "${TOK[$v]}" $N 8 > /dev/null
    b=$(cpu "${SPID[$v]}")
    python3 -c "print('round $r $v: %.0f µs of CPU a request' % (($b-$a)/$tck/$N*1e6))"
  done
done
