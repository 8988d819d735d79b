#!/usr/bin/env bash
# chute on S3-compatible storage (a local Garage, started by scripts/garage-test.sh), against
# that Garage's own speed, measured in one run:
#   garage PUT      curl uploading the whole file to the bucket as one object (SigV4, unsigned
#                   payload): the ceiling of anything that stores into this bucket
#   garage 8 MiB    the same bytes as 8 MiB objects, one after the other: what writing an
#                   upload as segments costs the bucket (chute holds at most 8 MiB of an upload)
#   chute           tus uploads through chute with storage_url = s3://…, catalog SQLite:
#                   one PATCH, 8 MiB and 1 MiB PATCHes, 64 concurrent 4 MiB uploads; "bare"
#                   (no digest, no fsync) and the default (sha256)
# Prints MB/s and the ratio to the single PUT; checks that a download from chute has the sent
# bytes. Usage: bench/s3.sh [SIZE_MiB] (default 256). Loopback only; ends what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-256}
OUT=bench/out; mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chute-s3-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
. bench/lib.sh

cargo build --release -q -p chute --bin chute --example bench_tus
BIN=target/release/chute; CLIENT=target/release/examples/bench_tus
make_data "$SIZE_MIB"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KEY=GK0123456789abcdef01234567
SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
S3=$(port)
scripts/garage-test.sh "$WORK/garage" "$S3" "$(port)" "$(port)" > "$WORK/garage.log" 2>&1 & PIDS+=($!)
S3URL="http://127.0.0.1:$S3/chute-test"
aws=(--aws-sigv4 "aws:amz:garage:s3" --user "$KEY:$SECRET" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
for _ in $(seq 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "${aws[@]}" -I "$S3URL/")" = 200 ] && break; sleep 0.2
done

# --- the bucket's own speed ---
t0=$(now); curl -sf -o /dev/null "${aws[@]}" -T "$WORK/big.bin" "$S3URL/direct/big.bin"; t1=$(now)
PUT_MBPS=$(mbps "$BYTES" "$(elapsed "$t0" "$t1")")
split -b 8M "$WORK/big.bin" "$WORK/seg."
t0=$(now)
for f in "$WORK"/seg.*; do curl -sf -o /dev/null "${aws[@]}" -T "$f" "$S3URL/direct/$(basename "$f")"; done
t1=$(now); rm -f "$WORK"/seg.*
SEG_MBPS=$(mbps "$BYTES" "$(elapsed "$t0" "$t1")")

# --- chute ---
run() { # $1 bare|default, $2 scenario -> MB/s
  local p extra=() chunk=0 files=("$WORK/big.bin") out
  p=$(port); rm -rf "$WORK/data"; mkdir -p "$WORK/data"
  [ "$1" = bare ] && extra=(--file-upload-checksums "" --upload-fsync false)
  # One token sends the 64 concurrent uploads: admission per user is raised past them.
  "$BIN" serve --listen "127.0.0.1:$p" --data-dir "$WORK/data" --log warn \
    --max-concurrent-uploads-per-user 1000 \
    --storage-url "s3://chute-test/$1-$2/" --s3-endpoint "http://127.0.0.1:$S3" --s3-region garage \
    --s3-access-key-id "$KEY" --s3-secret-access-key "$SECRET" --s3-path-style true \
    "${extra[@]}" > "$WORK/server.out" 2>&1 & local spid=$!
  for _ in $(seq 100); do grep -q '^chute_' "$WORK/server.out" 2>/dev/null && break; sleep 0.05; done
  local tok; tok=$(grep '^chute_' "$WORK/server.out")
  case $2 in 8m) chunk=8388608 ;; 1m) chunk=1048576 ;; 64x) files=("$WORK"/small/*.bin) ;; esac
  out=$("$CLIENT" "http://127.0.0.1:$p/tus/" "$tok" "$chunk" "${files[@]}") || { kill "$spid"; echo "chute $1 $2 failed" >&2; exit 1; }
  if [ "$2" = one ]; then
    local url; url=$(curl -s -H "Authorization: Bearer $tok" "http://127.0.0.1:$p/api/files" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["files"][0]["url"])')
    [ "$(curl -s -H "Authorization: Bearer $tok" "http://127.0.0.1:$p$url" | sha256sum | cut -d' ' -f1)" = "$SENT_SHA" ] \
      || { kill "$spid"; echo "chute on S3 served other bytes than were sent" >&2; exit 1; }
  fi
  kill "$spid"; wait "$spid" 2>/dev/null || true
  echo "$out" | awk '{print $3}'
}
SENT_SHA=$(sha256sum "$WORK/big.bin" | cut -d' ' -f1)
declare -A MB
for s in one 8m 1m 64x; do
  for v in bare default; do MB[$v/$s]=$(run $v $s); echo "chute-$v $s: ${MB[$v/$s]} MB/s" >&2; done
done

{
  echo "chute on S3 (Garage, local), $(date -u +%FT%TZ), $(nproc) cores, ${SIZE_MIB} MiB"
  printf '%-34s %8s %10s\n' what MB/s "x garage PUT"
  printf '%-34s %8s %10s\n' "garage PUT, one object" "$PUT_MBPS" 1.00
  printf '%-34s %8s %10s\n' "garage PUT, 8 MiB objects" "$SEG_MBPS" "$(ratio "$SEG_MBPS" "$PUT_MBPS")"
  for s in one 8m 1m 64x; do
    case $s in one) label="one PATCH";; 8m) label="8 MiB PATCHes";; 1m) label="1 MiB PATCHes";; 64x) label="64 x 4 MiB concurrent";; esac
    for v in bare default; do
      printf '%-34s %8s %10s\n' "chute-$v, $label" "${MB[$v/$s]}" "$(ratio "${MB[$v/$s]}" "$PUT_MBPS")"
    done
  done
} | tee "$OUT/s3-results.txt"
