#!/usr/bin/env bash
# HTTP/2 against HTTP/1.1, and what TLS costs, on one chute server per transport (default
# settings: sha256 of every upload, fsync before each acknowledgement), with bench_tus:
#   64x   64 concurrent uploads of 4 MiB: over one HTTP/2 connection (64 streams) against 64
#         HTTP/1.1 connections;
#   big   one upload of SIZE_MiB (default 256) in one PATCH: one stream against one
#         connection (an HTTP/2 stream is held to its flow-control window).
# Each over plain TCP (HTTP/1.1, h2c with prior knowledge) and over TLS (the certificate made
# by e2e/tls_cert.py; HTTP/1.1 and HTTP/2 by ALPN). ROUNDS rounds (default 5), the transports
# taking turns; medians and their ratio to plain HTTP/1.1 are printed.
# Usage: [ROUNDS=5] [TRANSPORTS="h1 h2c"] bench/h2.sh [SIZE_MiB]. Loopback only; ends what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-256}; ROUNDS=${ROUNDS:-5}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chute-h2-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release -q -p chute --bin chute --example bench_tus
BIN=target/release/chute; CLIENT=target/release/examples/bench_tus
[ -x e2e/.venv/bin/python ] || { echo "run scripts/setup-e2e.sh first (the certificate)" >&2; exit 1; }
e2e/.venv/bin/python e2e/tls_cert.py "$WORK" bench
head -c $((SIZE_MIB * 1048576)) /dev/urandom > "$WORK/big.bin"
mkdir -p "$WORK/small"; for i in $(seq 64); do head -c 4194304 /dev/urandom > "$WORK/small/$i.bin"; done

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run() { # $1 transport, $2 scenario -> MB/s (a fresh server each run, as bench/tus.sh does)
  local p scheme=http tls=() http=1 files=("$WORK/big.bin") out
  p=$(port)
  case $1 in
    h1) ;;
    h2c) http=2 ;;
    h1-tls) scheme=https; tls=(--tls-cert "$WORK/bench.pem" --tls-key "$WORK/bench.key") ;;
    h2-tls) scheme=https; http=2; tls=(--tls-cert "$WORK/bench.pem" --tls-key "$WORK/bench.key") ;;
  esac
  [ "$2" = 64x ] && files=("$WORK"/small/*.bin)
  rm -rf "$WORK/data"
  "$BIN" serve --listen "127.0.0.1:$p" --data-dir "$WORK/data" --log warn \
    --max-concurrent-uploads-per-user 1000 "${tls[@]}" > "$WORK/server.out" 2>&1 &
  local spid=$!; PIDS+=("$spid")
  for _ in $(seq 100); do grep -q '^chute_' "$WORK/server.out" 2>/dev/null && break; sleep 0.05; done
  out=$(BENCH_TUS_HTTP=$http BENCH_TUS_INSECURE=1 "$CLIENT" "$scheme://127.0.0.1:$p/tus/" \
    "$(grep '^chute_' "$WORK/server.out")" 0 "${files[@]}")
  kill "$spid"; wait "$spid" 2>/dev/null || true
  echo "$out" | awk '{print $3}'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
declare -A ALL
transports=${TRANSPORTS:-"h1 h2c h1-tls h2-tls"}
for s in 64x big; do
  for r in $(seq "$ROUNDS"); do
    for t in $transports; do
      m=$(run "$t" "$s"); ALL[$t/$s]+="$m "
      echo "round $r $s $t: $m MB/s" >&2
    done
  done
done
echo "HTTP/2 and TLS, $(date -u +%FT%TZ), $(nproc) cores; medians of $ROUNDS rounds"
printf '%-34s %-8s %8s %8s\n' scenario transport MB/s "x h1"
for s in 64x big; do
  label="64 x 4 MiB concurrent"; [ $s = big ] && label="$SIZE_MIB MiB, one PATCH"
  base=$(echo "${ALL[h1/$s]}" | median)
  for t in $transports; do
    m=$(echo "${ALL[$t/$s]}" | median)
    printf '%-34s %-8s %8s %8s\n' "$label" "$t" "$m" "$(python3 -c "print(f'{$m/$base:.2f}')")"
    label=""
  done
done
