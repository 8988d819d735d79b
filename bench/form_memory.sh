#!/usr/bin/env bash
# Issue 12's memory bound for form uploads: REQUESTS concurrent chunk-encoded multipart
# requests (no Content-Length, so nothing goes to disk up front), each of FILES files of
# FILE_MiB (defaults 20, 100, 2: 4 GiB in all), into a release chute; prints the server's
# peak RSS and checks every request answered 201 with all its files. Per-user admission is
# raised (one token sends them all). Usage: bench/form_memory.sh [REQUESTS] [FILES] [FILE_MiB]
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-20} FILES=${2:-100} FILE_MIB=${3:-2}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chute-form-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release -q -p chute --bin chute
head -c $((FILE_MIB * 1048576)) /dev/urandom > "$WORK/f.bin"
args=(); for i in $(seq "$FILES"); do args+=(-F "file=@$WORK/f.bin;filename=f$i.bin"); done
target/release/chute serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --log warn \
  --max-concurrent-uploads-per-user 1000 > "$WORK/serve.out" 2>&1 & SERVER=$!; PIDS+=($SERVER)
for _ in $(seq 100); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/.*listening on //p' "$WORK/serve.out"); TOKEN=$(grep '^chute_' "$WORK/serve.out")
t0=$(date +%s.%N)
for r in $(seq "$REQUESTS"); do
  curl -sS -o "$WORK/res.$r" -w '%{http_code}\n' -H "Authorization: Bearer $TOKEN" \
    -H "Transfer-Encoding: chunked" "${args[@]}" "$URL/api/files" > "$WORK/code.$r" &
done
wait $(jobs -p | grep -v "$SERVER") 2>/dev/null || true
t1=$(date +%s.%N)
ok=0; for r in $(seq "$REQUESTS"); do
  [ "$(cat "$WORK/code.$r")" = 201 ] && [ "$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['files']))" "$WORK/res.$r")" = "$FILES" ] && ok=$((ok+1))
done
echo "requests=$REQUESTS files_each=$FILES file_mib=$FILE_MIB answered_201_whole=$ok seconds=$(python3 -c "print(f'{$t1-$t0:.1f}')") server_peak_rss_mib=$(awk '/^VmHWM:/ {print int($2/1024)}' "/proc/$SERVER/status")"
[ "$ok" = "$REQUESTS" ]
