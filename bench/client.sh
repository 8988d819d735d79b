#!/usr/bin/env bash
# `chute upload` against curl, the same file to the same server in the same protocol: a tus
# upload created with one POST, then sent by curl in one PATCH (`curl -T`), or by
# `chute upload` (one streaming PATCH, checked after by the sha256 it hashed while sending, as
# it ships; the same with --no-verify, which hashes nothing, like curl; then in 8 MiB chunks
# with --checksum). Rounds alternate
# the clients; each server is fresh per round (release build, embedded default, upload_fsync
# as it ships). Also the client's peak RSS and CPU time, user + system (GNU time), and the
# server's CPU time (/proc) for the same upload: on one machine the two share its cores. Issue 17's targets: chute upload
# >= 0.9x curl, RSS < 32 MiB whatever the size.
# Usage: [SIZE_MIB=1024] [ROUNDS=3] [PIN=1] bench/client.sh. Loopback only; ends what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}; ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chute-client-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
. bench/lib.sh
# PIN=1 gives the server CPU 0 and the client CPU 1 (taskset): each its own core, as when the
# two run on different machines, instead of sharing both.
ON_SERVER=(env); ON_CLIENT=(env)
if [ "${PIN:-0}" = 1 ]; then ON_SERVER=(taskset -c 0); ON_CLIENT=(taskset -c 1); fi
cargo build --release -q -p chute --bin chute
BIN=$PWD/target/release/chute
echo "making $SIZE_MIB MiB of test data…" >&2
head -c $((SIZE_MIB * 1048576)) /dev/urandom > "$WORK/big.bin"
BYTES=$((SIZE_MIB * 1048576))

serve() { # a fresh server: sets port, token and SERVER (its pid)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$WORK/data"
  CHUTE_LOG=warn "${ON_SERVER[@]}" "$BIN" --data-dir "$WORK/data" --listen "127.0.0.1:$port" serve > "$WORK/serve.log" 2>&1 &
  SERVER=$!; PIDS+=("$SERVER")
  for _ in $(seq 100); do grep -q '^chute_' "$WORK/serve.log" 2>/dev/null && break; sleep 0.1; done
  token=$(grep -m1 '^chute_' "$WORK/serve.log")
}
stop() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; }
server_cpu() { # the server's CPU seconds so far, user + system
  python3 -c "import os, sys; f = open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')', 1)[1].split(); print(f'{(int(f[11]) + int(f[12])) / os.sysconf(\"SC_CLK_TCK\"):.2f}')" "$SERVER"
}

declare -A RATE RSS CPU SCPU
for r in $(seq "$ROUNDS"); do
  for client in curl chute chute-no-verify chute-chunked; do
    serve
    url="http://127.0.0.1:$port"
    if [ "$client" = curl ]; then
      loc=$(curl -sS -D - -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'Tus-Resumable: 1.0.0' \
        -H "Upload-Length: $BYTES" "$url/tus/" | tr -d '\r' | sed -n 's/^location: //Ip')
      t0=$(now)
      "${ON_CLIENT[@]}" /usr/bin/time -f '%M %U %S' -o "$WORK/rss" curl -sS -f -o /dev/null -X PATCH -T "$WORK/big.bin" \
        -H "Authorization: Bearer $token" -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' \
        -H 'Content-Type: application/offset+octet-stream' "$url$loc"
      t1=$(now)
    else
      extra=(); [ "$client" = chute-chunked ] && extra=(--chunk-size 8MiB --checksum)
      [ "$client" = chute-no-verify ] && extra=(--no-verify)
      t0=$(now)
      CHUTE_STATE_DIR="$WORK/state" "${ON_CLIENT[@]}" /usr/bin/time -f '%M %U %S' -o "$WORK/rss" "$BIN" upload --server "$url" \
        --token "$token" "${extra[@]}" "$WORK/big.bin" > /dev/null
      t1=$(now)
    fi
    rate=$(mbps "$BYTES" "$(elapsed "$t0" "$t1")")
    read -r kib user sys < "$WORK/rss"; cpu=$(python3 -c "print(f'{$user + $sys:.2f}')")
    scpu=$(server_cpu)
    RATE[$client]+="$rate "; RSS[$client]+="$((kib / 1024)) "; CPU[$client]+="$cpu "; SCPU[$client]+="$scpu "
    echo "round $r $client: $rate MB/s, client RSS $((kib / 1024)) MiB, client CPU $cpu s, server CPU $scpu s" >&2
    stop
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${RATE[curl]}" | median)
printf "%-16s %8s %8s %8s %13s %13s\n" client "MB/s" "x curl" "RSS MiB" "client CPU s" "server CPU s"
for c in curl chute chute-no-verify chute-chunked; do
  m=$(echo "${RATE[$c]}" | median)
  printf "%-16s %8s %8s %8s %13s %13s\n" "$c" "$m" "$(ratio "$m" "$base")" \
    "$(echo "${RSS[$c]}" | tr ' ' '\n' | sort -n | tail -1)" "$(echo "${CPU[$c]}" | median)" "$(echo "${SCPU[$c]}" | median)"
done
echo "MB/s of each round (the table shows the medians):"
for c in curl chute chute-no-verify chute-chunked; do printf '  %-16s%s\n' "$c" "${RATE[$c]}"; done
