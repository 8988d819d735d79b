#!/usr/bin/env bash
# `chute upload` against curl, the same file to the same server in the same protocol: a tus
# upload created with one POST, then sent by curl in one PATCH (`curl -T`), or by
# `chute upload` (one streaming PATCH; then in 8 MiB chunks with --checksum). Rounds alternate
# the clients; each server is fresh per round (release build, embedded default, upload_fsync
# as it ships). Also the client's peak RSS (GNU time). Issue 17's targets: chute upload
# >= 0.9x curl, RSS < 32 MiB whatever the size.
# Usage: [SIZE_MIB=1024] [ROUNDS=3] bench/client.sh. Loopback only; ends what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}; ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chute-client-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
. bench/lib.sh
cargo build --release -q -p chute --bin chute
BIN=$PWD/target/release/chute
echo "making $SIZE_MIB MiB of test data…" >&2
head -c $((SIZE_MIB * 1048576)) /dev/urandom > "$WORK/big.bin"
BYTES=$((SIZE_MIB * 1048576))

serve() { # a fresh server: sets port, token and SERVER (its pid)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$WORK/data"
  CHUTE_LOG=warn "$BIN" --data-dir "$WORK/data" --listen "127.0.0.1:$port" serve > "$WORK/serve.log" 2>&1 &
  SERVER=$!; PIDS+=("$SERVER")
  for _ in $(seq 100); do grep -q '^chute_' "$WORK/serve.log" 2>/dev/null && break; sleep 0.1; done
  token=$(grep -m1 '^chute_' "$WORK/serve.log")
}
stop() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; }

declare -A RATE RSS
for r in $(seq "$ROUNDS"); do
  for client in curl chute chute-chunked; do
    serve
    url="http://127.0.0.1:$port"
    if [ "$client" = curl ]; then
      loc=$(curl -sS -D - -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'Tus-Resumable: 1.0.0' \
        -H "Upload-Length: $BYTES" "$url/tus/" | tr -d '\r' | sed -n 's/^location: //Ip')
      t0=$(now)
      /usr/bin/time -f '%M' -o "$WORK/rss" curl -sS -f -o /dev/null -X PATCH -T "$WORK/big.bin" \
        -H "Authorization: Bearer $token" -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' \
        -H 'Content-Type: application/offset+octet-stream' "$url$loc"
      t1=$(now)
    else
      extra=(); [ "$client" = chute-chunked ] && extra=(--chunk-size 8MiB --checksum)
      t0=$(now)
      CHUTE_STATE_DIR="$WORK/state" /usr/bin/time -f '%M' -o "$WORK/rss" "$BIN" upload --server "$url" \
        --token "$token" "${extra[@]}" "$WORK/big.bin" > /dev/null
      t1=$(now)
    fi
    rate=$(mbps "$BYTES" "$(elapsed "$t0" "$t1")")
    RATE[$client]+="$rate "; RSS[$client]+="$(( $(cat "$WORK/rss") / 1024 )) "
    echo "round $r $client: $rate MB/s, client RSS $(( $(cat "$WORK/rss") / 1024 )) MiB" >&2
    stop
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${RATE[curl]}" | median)
printf "%-14s %8s %8s %12s\n" client "MB/s" "x curl" "RSS MiB"
for c in curl chute chute-chunked; do
  m=$(echo "${RATE[$c]}" | median)
  printf "%-14s %8s %8s %12s\n" "$c" "$m" "$(ratio "$m" "$base")" "$(echo "${RSS[$c]}" | tr ' ' '\n' | sort -n | tail -1)"
done
