#!/usr/bin/env bash
# tus side by side: chute, rustus (crates.io, cargo install) and @tus/server with
# @tus/file-store (npm), on this machine in one run, each started fresh per scenario:
#   1 GiB in one PATCH, in 8 MiB, 1 MiB and 256 KiB PATCHes, as 8 concurrent uploads of an
#   eighth each in 1 MiB PATCHes (8x1m: where durable appends can share their syncs), and 64
#   concurrent 4 MiB uploads (SCENARIOS="one 8m 1m 256k 8x1m 64x" runs some of them).
# One client for all: the bench_tus example (reqwest, files in memory, Upload-Length known), or
# with BENCH_CLIENT=python bench/tus_client.py (a loop of PATCHes through Python's http.client,
# keep-alive, files in memory): a client that costs CPU, as most real ones do, which on a small machine the server
# must share cores with. Each server's CPU time (user + system, from /proc) per GiB received
# is printed beside its speed.
# Prints MB/s and peak RSS (VmHWM) of each server, the ratio to the best peer, and for the
# single PATCH the ratio to min(sink, disk). chute runs four ways: its default (sha256 of every
# file, fsync before each acknowledgement), with blake3, with blake3 and upload_fsync = false,
# and "bare" (no file digest, no fsync), which is exactly what the peers do by default (they
# hash nothing and fsync nothing); rustus
# also runs with --force-fsync, durable like chute's default. The default run's
# stored sha256 is checked against the sent bytes. Two reference servers run through the same
# client: tus-sink (answers tus, throws the bytes away: what loopback HTTP carries with this
# client) and store-sink (answers tus and appends each upload's bytes to a file of its own with
# plain writes, no catalog, no fsync: the ceiling of any tus server that keeps the bytes).
# chute-hooks is the default with hooks on (upload.finished to a receiver that verifies each
# signature, e2e/webhook_receiver.py: scripts/setup-e2e.sh installs it); chute-hooks-all sends
# every notification (upload.created, upload.progress every second, upload.finished).
# BASELINE=REV also builds chute at git revision REV (a worktree under bench/out, a target
# folder of its own) and runs it beside the current code as `base` (default) and `base-bare`:
# a regression check in the same run. SERVERS="..." runs only the servers named.
# Usage: [BASELINE=REV] [SERVERS=...] bench/tus.sh [SIZE_MiB]   (default 1024). Loopback only;
# ends what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
OUT=bench/out; mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chute-tus-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
. bench/lib.sh

cargo build --release -q -p chute --bin chute --example bench_sink --example bench_tus
BIN=target/release/chute
case ${BENCH_CLIENT:=rust} in
  rust) CLIENT=(target/release/examples/bench_tus) ;;
  python) CLIENT=(python3 bench/tus_client.py) ;;
  *) echo "BENCH_CLIENT is rust or python" >&2; exit 2 ;;
esac
if [ -n "${BASELINE:-}" ]; then
  rev=$(git rev-parse --short "$BASELINE")
  tree=$OUT/baseline-$rev
  [ -d "$tree" ] || git worktree add -q --detach "$tree" "$rev"
  (cd "$tree" && cargo build --release -q -p chute --bin chute)
  BASE_BIN=$tree/target/release/chute
fi
RUSTUS=$OUT/tools/bin/rustus
DEFAULT_SERVERS="chute chute-blake3 chute-nofsync chute-bare rustus rustus-fsync tusnode tus-sink store-sink"
SERVERS=${SERVERS:-$DEFAULT_SERVERS}
if [[ " $SERVERS " == *" rustus"* && ! -x "$RUSTUS" ]]; then
  echo "installing rustus into $OUT/tools (cargo install, a few minutes)…" >&2
  cargo install -q rustus --locked --root "$OUT/tools"
fi
if [[ " $SERVERS " == *" tusnode "* && ! -d bench/tus_node/node_modules/@tus/server ]]; then
  (cd bench/tus_node && npm ci --no-audit --no-fund --loglevel=error)
fi

if [[ " $SERVERS " == *" chute-hooks"* ]]; then
  HOOK_SECRET=whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  HOOK_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  e2e/.venv/bin/python e2e/webhook_receiver.py "$HOOK_SECRET" "$HOOK_PORT" > "$WORK/receiver.out" 2>&1 &
  PIDS+=($!)
fi
make_data "$SIZE_MIB"
measure_limits

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do curl -s -o /dev/null -X OPTIONS "$1" && return; sleep 0.05; done; echo "server at $1 did not start" >&2; exit 1; }

start() { # $1: chute | chute-blake3 | rustus | tusnode -> sets SPID, ENDPOINT, TOK
  local p; p=$(port); rm -rf "$WORK/data"; mkdir -p "$WORK/data"
  case $1 in
    chute|chute-blake3|chute-nofsync|chute-bare|chute-hooks|chute-hooks-all|base|base-bare)
      local extra=() bin=$BIN
      [[ $1 == base* ]] && bin=$BASE_BIN
      [ "$1" = base-bare ] && extra=(--file-upload-checksums "" --upload-fsync false)
      [ "$1" = chute-blake3 ] && extra=(--file-upload-checksums blake3)
      # Nearly like the peers, which fsync nothing: blake3 and upload_fsync = false.
      [ "$1" = chute-nofsync ] && extra=(--file-upload-checksums blake3 --upload-fsync false)
      # Exactly the peers' work: no digest of the file, no fsync.
      [ "$1" = chute-bare ] && extra=(--file-upload-checksums "" --upload-fsync false)
      if [[ $1 == chute-hooks* ]]; then
        local events=upload.finished; [ "$1" = chute-hooks-all ] && events=all
        extra=(--hooks-url "http://127.0.0.1:$HOOK_PORT/hook" --hooks-secret "$HOOK_SECRET" \
          --hooks-events "$events")
      fi
      # One token sends the 64 concurrent uploads: admission per user is raised past them.
      "$bin" serve --listen "127.0.0.1:$p" --data-dir "$WORK/data" --log warn \
        --max-concurrent-uploads-per-user 1000 "${extra[@]}" > "$WORK/server.out" 2>&1 & SPID=$!
      ENDPOINT="http://127.0.0.1:$p/tus/"
      for _ in $(seq 100); do grep -q '^chute_' "$WORK/server.out" 2>/dev/null && break; sleep 0.05; done
      TOK=$(grep '^chute_' "$WORK/server.out") ;;
    rustus|rustus-fsync)
      # rustus 0.5's --force-fsync is on whenever it is given, whatever its value (the
      # option is a flag that also takes a value): `--force-fsync false` fsyncs every PATCH,
      # as strace shows. Its default, like the other peers', is no fsync: the flag is left
      # out for that (before session 15 this script passed `false`, so every "rustus"
      # figure up to then is of rustus with fsync).
      local sync=(); [ "$1" = rustus-fsync ] && sync=(--force-fsync true)
      # rustus buffers each PATCH body whole, up to --max-body-size (default 256 KiB): raised
      # so that its single-PATCH and 8 MiB scenarios run at all.
      "$RUSTUS" --host 127.0.0.1 --port "$p" --data-dir "$WORK/data" --info-dir "$WORK/data" \
        --max-body-size $((BYTES + 1048576)) "${sync[@]}" --log-level ERROR > "$WORK/server.out" 2>&1 & SPID=$!
      ENDPOINT="http://127.0.0.1:$p/files/"; TOK=- ;;
    tus-sink|store-sink)
      local store=(); [ "$1" = store-sink ] && store=("$WORK/data")
      target/release/examples/bench_sink "127.0.0.1:$p" "${store[@]}" > "$WORK/server.out" 2>&1 & SPID=$!
      ENDPOINT="http://127.0.0.1:$p/files/"; TOK=- ;;
    tusnode)
      node bench/tus_node/server.mjs "$p" "$WORK/data" > "$WORK/server.out" 2>&1 & SPID=$!
      ENDPOINT="http://127.0.0.1:$p/files"; TOK=- ;;
  esac
  PIDS+=("$SPID"); wait_port "$ENDPOINT"
}
stop() { kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; }
peak() { # the server's peak RSS in MiB, its children included (node has none, but be fair)
  for p in $SPID $(pgrep -P "$SPID" || true); do awk '/VmHWM/ {print $2}' "/proc/$p/status"; done | awk '{s+=$1} END {print int(s/1024)}'
}
cpu() { # $1 bytes received: the server's CPU seconds (user + system) per GiB of them
  local ticks; ticks=$(for p in $SPID $(pgrep -P "$SPID" || true); do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s+=$1} END {print s}')
  python3 -c "import os, sys; print(f'{int(sys.argv[1]) / os.sysconf(\"SC_CLK_TCK\") / (int(sys.argv[2]) / 2**30):.2f}')" "$ticks" "$1"
}
run() { # $1 server, $2 scenario -> "MB/s RSS" (runs in a subshell: stops its server itself)
  local out mb rss used chunk=0 files=("$WORK/big.bin")
  start "$1"
  case $2 in
    8m)   chunk=8388608 ;;
    1m)   chunk=1048576 ;;
    256k) chunk=262144 ;;
    8x1m) chunk=1048576; files=("$WORK"/eighths/*.bin) ;;
    64x)  files=("$WORK"/small/*.bin) ;;
  esac
  out=$("${CLIENT[@]}" "$ENDPOINT" "$TOK" "$chunk" "${files[@]}") || { stop; echo "$1 $2 failed" >&2; exit 1; }
  mb=$(echo "$out" | awk '{print $3}'); rss=$(peak); used=$(cpu "$(echo "$out" | awk '{print $1}')")
  if [[ $1 == chute* || $1 == base* ]] && [[ $2 != 64x && $2 != 8x1m ]]; then
    curl -s -H "Authorization: Bearer $TOK" "${ENDPOINT%/tus/}/api/files" | grep -q "$SENT_SHA" \
      || { [ "$1" != chute ] || { echo "chute stored other bytes than were sent" >&2; exit 1; }; }
  fi
  stop
  echo "$mb $rss $used"
}

SENT_SHA=$(sha256sum "$WORK/big.bin" | cut -d' ' -f1)
[ -n "${BASELINE:-}" ] && SERVERS="$SERVERS base base-bare"
# The 64 x 4 MiB scenario lasts a fifth of a second: it runs ROUNDS_64X times, the servers
# taking turns in each round (so a slow spell of the host hits all of them), and each server's
# median counts (its peak RSS: the highest).
ROUNDS_64X=${ROUNDS_64X:-5}
# ROUNDS=N repeats the other scenarios too (servers taking turns; medians count).
ROUNDS=${ROUNDS:-1}
median() { tr ' ' '\n' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
SCENARIOS=${SCENARIOS:-one 8m 1m 256k 64x}
declare -A MB RSS ALL CPU CPUS
for s in $SCENARIOS; do
  rounds=$ROUNDS; [ $s = 64x ] && rounds=$ROUNDS_64X
  for _ in $(seq "$rounds"); do
    for srv in $SERVERS; do
      read -r m r c < <(run "$srv" "$s")
      ALL[$srv/$s]="${ALL[$srv/$s]:-} $m"; CPUS[$srv/$s]="${CPUS[$srv/$s]:-} $c"
      (( r > ${RSS[$srv/$s]:-0} )) && RSS[$srv/$s]=$r
      echo "$srv $s: $m MB/s, $r MiB, $c CPU s/GiB" >&2
    done
  done
  for srv in $SERVERS; do
    MB[$srv/$s]=$(echo ${ALL[$srv/$s]} | median); CPU[$srv/$s]=$(echo ${CPUS[$srv/$s]} | median)
  done
done

{
  echo "tus side by side, $(date -u +%FT%TZ), $(nproc) cores, ${SIZE_MIB} MiB, $BENCH_CLIENT client; sink $SINK_MBPS, disk $DISK_MBPS MB/s, disk synced every MiB $DSYNC_MBPS MB/s"
  printf '%-26s %-14s %8s %9s %10s %10s %10s %10s\n' scenario server MB/s "peak RSS" "CPU s/GiB" "x best peer" "x min(sink,disk)" "x store-sink"
  for s in $SCENARIOS; do
    case $s in one) label="1 GiB, one PATCH";; 8m) label="1 GiB, 8 MiB PATCHes";; 1m) label="1 GiB, 1 MiB PATCHes";;
      256k) label="1 GiB, 256 KiB PATCHes";; 8x1m) label="8 x 1/8 GiB, 1 MiB PATCHes";;
      64x) label="64 x 4 MiB concurrent";; esac
    best=$(( ${MB[rustus/$s]:-1} > ${MB[tusnode/$s]:-1} ? ${MB[rustus/$s]:-1} : ${MB[tusnode/$s]:-1} ))
    for srv in $SERVERS; do
      printf '%-26s %-14s %8s %7s MiB %10s %10s %10s %10s\n' "$label" "$srv" "${MB[$srv/$s]}" "${RSS[$srv/$s]}" "${CPU[$srv/$s]}" \
        "$(ratio "${MB[$srv/$s]}" "$best")" "$(ratio "${MB[$srv/$s]}" "$LIMIT")" "$(ratio "${MB[$srv/$s]}" "${MB[store-sink/$s]:-1}")"
      label=""
    done
  done
  for s in $SCENARIOS; do
    [ $s != 64x ] && [ "$ROUNDS" -eq 1 ] && continue
    echo "$s, MB/s of each round (the table shows the medians):"
    for srv in $SERVERS; do printf '  %-14s%s\n' "$srv" "${ALL[$srv/$s]}"; done
  done
} | tee "$OUT/tus-results-$BENCH_CLIENT.txt"
