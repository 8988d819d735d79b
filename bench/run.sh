#!/usr/bin/env bash
# chute's throughput and memory against this machine's own limits, measured in one run:
#   sink   curl streaming a multipart body over loopback into a server that discards it
#   disk   sequential write of the same size with fsync (dd conv=fsync) in the data dir
#   hash   chute's own SHA-256 (and BLAKE3) over the same bytes, in memory, one core
#   chute  the same 1 GiB multipart upload into chute (default chain: sha256, spill)
#   chute with checksums = blake3 (the pipeline's own ceiling where hashing is cheap)
#   64x    64 concurrent 4 MiB uploads into chute
#   chunked  the django-chunked-upload protocol: the same bytes in 8 MiB and in 1 MiB chunks,
#          one client (bench/chunked_client.py), into chute and into django-chunked-upload 2.0.0
#          (Django 3.2 under gunicorn with 2 workers, installed into bench/out/venv), compared
#          with the md5 rate (the protocol's own ceiling); chute runs with its default checksums
#          (md5 + sha256), md5 only, and md5 only with upload_fsync = false (like for like:
#          django-chunked-upload syncs nothing)
# Prints MB/s (10^6 bytes/s), the ratio to min(sink, disk), and chute's peak RSS (VmHWM).
# Every upload hashes its bytes, so min(sink, disk, that hash) is the ceiling of the default
# chain; that ratio is printed too.
# Usage: bench/run.sh [SIZE_MiB]   (default 1024). Loopback only; ends what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
OUT=bench/out; mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chute-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release -q -p chute --bin chute --example bench_sink --example bench_hash
BIN=target/release/chute; SINK=target/release/examples/bench_sink; HASH=target/release/examples/bench_hash

. bench/lib.sh
make_data "$SIZE_MIB"
measure_limits

# --- hash ---
"$HASH" "$WORK/big.bin" > "$WORK/hash.out"
SHA_MBPS=$(awk '$1=="sha256" {print $2}' "$WORK/hash.out")
B3_MBPS=$(awk '$1=="blake3" {print $2}' "$WORK/hash.out")

# --- chute ---
start_chute() { # $1: name, then extra flags
  local name=$1; shift
  rm -rf "$WORK/data-$name"
  "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data-$name" --log warn "$@" > "$WORK/$name.out" & CPID=$!; PIDS+=($CPID)
  for _ in $(seq 100); do grep -q "listening on" "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/^chute listening on //p' "$WORK/$name.out"); TOKEN=$(grep '^chute_' "$WORK/$name.out")
}
stop_chute() { kill "$CPID"; wait "$CPID" 2>/dev/null || true; }
rss() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$CPID/status"; }
reset_rss() { echo 5 > "/proc/$CPID/clear_refs" 2>/dev/null || true; }
upload_big() { # prints MB/s; checks the stored sha256 / blake3 against what was sent
  local t0 t1 resp
  t0=$(now); resp=$(curl -sS -H "Authorization: Bearer $TOKEN" -F "file=@$WORK/big.bin" "$URL/api/files"); t1=$(now)
  echo "$resp" | grep -q "\"size\":$BYTES" || { echo "upload failed: $resp" >&2; exit 1; }
  echo "$resp" > "$WORK/last.json"
  mbps $BYTES "$(elapsed $t0 $t1)"
}

start_chute default
SENT=$(sha256sum "$WORK/big.bin" | cut -d' ' -f1)
reset_rss; ONE_MBPS=$(upload_big); ONE_RSS=$(rss)
grep -q "$SENT" "$WORK/last.json" || { echo "stored checksum does not match what was sent" >&2; exit 1; }

reset_rss
t0=$(now)
ls "$WORK"/small/*.bin | xargs -P 64 -I{} curl -sS -o /dev/null -w '%{http_code}\n' \
  -H "Authorization: Bearer $TOKEN" -F "file=@{}" "$URL/api/files" > "$WORK/codes"
t1=$(now)
CONC_MBPS=$(mbps $((64 * 4194304)) "$(elapsed $t0 $t1)"); CONC_RSS=$(rss)
[ "$(grep -c '^201$' "$WORK/codes")" = 64 ] || { echo "not every concurrent upload succeeded" >&2; exit 1; }
stop_chute

start_chute blake3 --file-upload-checksums blake3
reset_rss; B3_ONE_MBPS=$(upload_big); B3_ONE_RSS=$(rss)
stop_chute

# --- chunked protocol: chute and django-chunked-upload ---
MD5_MBPS=$(awk '$1=="md5" {print $2}' "$WORK/hash.out")
chunked() { # $1 base url, $2 chunk bytes, [$3 token] -> MB/s
  local secs; secs=$(python3 bench/chunked_client.py "$1" "$WORK/big.bin" "$2" ${3:-})
  mbps $BYTES "$secs"
}
start_chute chunked
reset_rss; CH8=$(chunked "$URL" 8388608 "$TOKEN"); CH1=$(chunked "$URL" 1048576 "$TOKEN"); CH_RSS=$(rss)
stop_chute
start_chute chunkedmd5 --file-upload-checksums md5
CHM8=$(chunked "$URL" 8388608 "$TOKEN"); CHM1=$(chunked "$URL" 1048576 "$TOKEN")
stop_chute
# Like for like with django-chunked-upload, which hashes md5 only and syncs nothing.
start_chute chunkednf --file-upload-checksums md5 --upload-fsync false
CHN8=$(chunked "$URL" 8388608 "$TOKEN"); CHN1=$(chunked "$URL" 1048576 "$TOKEN")
stop_chute

VENV=bench/out/venv
if [ ! -x "$VENV/bin/gunicorn" ]; then
  echo "installing django-chunked-upload into $VENV…" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "django>=3.2,<4" "django-chunked-upload==2.0.0" "gunicorn>=21"
fi
export BENCH_DJANGO_DIR="$WORK/django"; mkdir -p "$BENCH_DJANGO_DIR"
(cd bench/django_chunked && DJANGO_SETTINGS_MODULE=benchproj.settings "../../$VENV/bin/python" -m django migrate -v0)
DPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/gunicorn" --chdir bench/django_chunked -w 2 -b "127.0.0.1:$DPORT" --timeout 900 \
  --log-level warning benchproj.wsgi > "$WORK/django.log" 2>&1 & DPID=$!; PIDS+=($DPID)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$DPORT/" && break; sleep 0.1; done
DJ8=$(chunked "http://127.0.0.1:$DPORT" 8388608); DJ1=$(chunked "http://127.0.0.1:$DPORT" 1048576)
DJ_RSS=$(for p in $DPID $(pgrep -P $DPID); do awk '/VmHWM/ {print $2}' /proc/$p/status; done | awk '{s+=$1} END {print int(s/1024)}')

HLIMIT=$(( SHA_MBPS < LIMIT ? SHA_MBPS : LIMIT ))
{
  echo "chute bench, $(date -u +%FT%TZ), $(nproc) cores, ${SIZE_MIB} MiB"
  printf '%-40s %8s %8s %10s %9s\n' scenario MB/s ratio "w/ hash" "peak RSS"
  printf '%-40s %8s\n' "sink (loopback HTTP, discard)" "$SINK_MBPS"
  printf '%-40s %8s\n' "disk (sequential write + fsync)" "$DISK_MBPS"
  printf '%-40s %8s\n' "sha256, in memory, one core" "$SHA_MBPS"
  printf '%-40s %8s\n' "blake3, in memory, one core" "$B3_MBPS"
  printf '%-40s %8s %8s %10s %9s\n' "chute 1 file (sha256, default)" "$ONE_MBPS" "$(ratio "$ONE_MBPS" "$LIMIT")" "$(ratio "$ONE_MBPS" "$HLIMIT")" "${ONE_RSS} MiB"
  printf '%-40s %8s %8s %10s %9s\n' "chute 1 file (blake3)" "$B3_ONE_MBPS" "$(ratio "$B3_ONE_MBPS" "$LIMIT")" "" "${B3_ONE_RSS} MiB"
  printf '%-40s %8s %8s %10s %9s\n' "chute 64 x 4 MiB concurrent (sha256)" "$CONC_MBPS" "$(ratio "$CONC_MBPS" "$LIMIT")" "$(ratio "$CONC_MBPS" "$HLIMIT")" "${CONC_RSS} MiB"
  echo "ratio = MB/s / min(sink, disk) = $LIMIT; w/ hash = MB/s / min(sink, disk, sha256) = $HLIMIT"
  echo
  printf '%-40s %8s %8s %10s %9s\n' "chunked protocol" MB/s "x md5" "x django" "peak RSS"
  printf '%-40s %8s\n' "md5, in memory, one core" "$MD5_MBPS"
  printf '%-40s %8s %8s %10s %9s\n' "chute 8 MiB chunks (md5+sha256)" "$CH8" "$(ratio "$CH8" "$MD5_MBPS")" "$(ratio "$CH8" "$DJ8")" "${CH_RSS} MiB"
  printf '%-40s %8s %8s %10s\n' "chute 1 MiB chunks (md5+sha256)" "$CH1" "$(ratio "$CH1" "$MD5_MBPS")" "$(ratio "$CH1" "$DJ1")"
  printf '%-40s %8s %8s %10s\n' "chute 8 MiB chunks (md5 only)" "$CHM8" "$(ratio "$CHM8" "$MD5_MBPS")" "$(ratio "$CHM8" "$DJ8")"
  printf '%-40s %8s %8s %10s\n' "chute 1 MiB chunks (md5 only)" "$CHM1" "$(ratio "$CHM1" "$MD5_MBPS")" "$(ratio "$CHM1" "$DJ1")"
  printf '%-40s %8s %8s %10s\n' "chute 8 MiB chunks (md5, no fsync)" "$CHN8" "$(ratio "$CHN8" "$MD5_MBPS")" "$(ratio "$CHN8" "$DJ8")"
  printf '%-40s %8s %8s %10s\n' "chute 1 MiB chunks (md5, no fsync)" "$CHN1" "$(ratio "$CHN1" "$MD5_MBPS")" "$(ratio "$CHN1" "$DJ1")"
  printf '%-40s %8s %8s %10s %9s\n' "django-chunked-upload 8 MiB chunks" "$DJ8" "$(ratio "$DJ8" "$MD5_MBPS")" "" "${DJ_RSS} MiB"
  printf '%-40s %8s %8s\n' "django-chunked-upload 1 MiB chunks" "$DJ1" "$(ratio "$DJ1" "$MD5_MBPS")"
} | tee "$OUT/results.txt"
