#!/usr/bin/env bash
# What a request costs beside its bytes: authentication, CORS and the proxy layer, measured
# as requests per second of GET /api/files?limit=10 (ten files listed, ten "url" fields) over
# keep-alive connections, 8 at a time (examples/bench_requests.rs).
# Two chute servers run side by side, on SQLite:
#   plain  no signed tokens, no CORS, no trusted proxies: the baseline, with an API token;
#   full   an HS256 secret and an RSA public key (auth_jwt_*), cors_allowed_origins and
#          trusted_proxies set; asked with an API token (the layers on, but unused), with
#          HS256 and RS256 tokens (minted by PyJWT, e2e/mint_jwt.py), with an allowed Origin
#          (CORS headers added), with X-Forwarded-* (the answer's URLs rewritten), and with all
#          of these at once.
# A third server, quiet, is plain with CHUTE_LOG=warn: no access line per request (the cost of
# the log line, apart from the metrics every server keeps).
# BASELINE=REV also builds chute at git revision REV (a worktree under bench/out) and runs it
# with plain's settings as `before`: what the code since REV costs a request (or BASE_BIN=PATH:
# a chute binary built before, run the same way).
# ROUNDS rounds (default 3), the variants taking turns; the median of each is printed with its
# ratio to the baseline. Usage: [BASELINE=REV] [ROUNDS=3] [N=20000] bench/requests.sh.
# Loopback only; ends what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; N=${N:-20000}; CONC=8
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chute-req-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release -q -p chute --bin chute --example bench_requests
BIN=target/release/chute; CLIENT=target/release/examples/bench_requests
if [ -n "${BASE_BIN:-}" ]; then
  : # a chute binary built before, the `before` variant as it is
elif [ -n "${BASELINE:-}" ]; then
  rev=$(git rev-parse --short "$BASELINE")
  tree=bench/out/baseline-$rev
  [ -d "$tree" ] || git worktree add -q --detach "$tree" "$rev"
  (cd "$tree" && cargo build --release -q -p chute --bin chute)
  BASE_BIN=$tree/target/release/chute
fi
PY=e2e/.venv/bin/python
[ -x "$PY" ] || { echo "run scripts/setup-e2e.sh first (PyJWT mints the tokens)" >&2; exit 1; }
SECRET="a bench secret of at least thirty-two bytes"
"$PY" e2e/mint_jwt.py keys "$WORK/keys"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # $1 name, then settings as env: prints "PORT TOKEN"
  local name=$1 p bin=$BIN; shift; p=$(port)
  [ "$name" = before ] && bin=$BASE_BIN
  env "$@" "$bin" --data-dir "$WORK/$name" --listen "127.0.0.1:$p" serve > "$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q "listening" "$WORK/$name.log" 2>/dev/null && break; sleep 0.1; done
  echo "$p $(grep -m1 '^chute_' "$WORK/$name.log")"
}
read -r PLAIN PLAIN_TOKEN < <(start plain)
read -r FULL FULL_TOKEN < <(start full CHUTE_AUTH_JWT_SECRET="$SECRET" \
  CHUTE_AUTH_JWT_PUBLIC_KEY="$WORK/keys/rsa.pub.pem" CHUTE_CORS_ALLOWED_ORIGINS=https://app.example \
  CHUTE_TRUSTED_PROXIES=127.0.0.1)
read -r QUIET QUIET_TOKEN < <(start quiet CHUTE_LOG=warn)
SERVERS_UP=("$PLAIN $PLAIN_TOKEN" "$FULL $FULL_TOKEN" "$QUIET $QUIET_TOKEN")
if [ -n "${BASE_BIN:-}" ]; then
  read -r BEFORE BEFORE_TOKEN < <(start before)
  SERVERS_UP+=("$BEFORE $BEFORE_TOKEN")
fi
for i in $(seq 10); do head -c 1000 /dev/urandom > "$WORK/f$i.bin"; done
for srv in "${SERVERS_UP[@]}"; do
  set -- $srv
  for i in $(seq 10); do
    curl -sf -o /dev/null -H "Authorization: Bearer $2" -F "file=@$WORK/f$i.bin" "http://127.0.0.1:$1/api/files"
  done
done
# Tokens for `admin`, the user whose ten files are listed.
mapfile -t JWTS < <(echo "[{\"alg\":\"HS256\",\"key\":\"$SECRET\",\"exp_in\":3600,\"claims\":{\"sub\":\"admin\"}},
  {\"alg\":\"RS256\",\"key\":\"$WORK/keys/rsa.pem\",\"exp_in\":3600,\"claims\":{\"sub\":\"admin\"}}]" \
  | "$PY" e2e/mint_jwt.py | python3 -c 'import json,sys; [print(t) for t in json.load(sys.stdin)]')
HS=${JWTS[0]} RS=${JWTS[1]}
ORIGIN="Origin:https://app.example"
FWD=("X-Forwarded-Proto:https" "X-Forwarded-Host:files.example" "X-Forwarded-Prefix:/uploads")

names=(baseline quiet layers-on hs256 rs256 cors proxy everything)
[ -n "${BASE_BIN:-}" ] && names+=(before)
run() { # $1 variant
  local url="/api/files?limit=10"
  case $1 in
    baseline)   "$CLIENT" "http://127.0.0.1:$PLAIN$url" "$PLAIN_TOKEN" "$N" $CONC ;;
    quiet)      "$CLIENT" "http://127.0.0.1:$QUIET$url" "$QUIET_TOKEN" "$N" $CONC ;;
    before)     "$CLIENT" "http://127.0.0.1:$BEFORE$url" "$BEFORE_TOKEN" "$N" $CONC ;;
    layers-on)  "$CLIENT" "http://127.0.0.1:$FULL$url" "$FULL_TOKEN" "$N" $CONC ;;
    hs256)      "$CLIENT" "http://127.0.0.1:$FULL$url" "$HS" "$N" $CONC ;;
    rs256)      "$CLIENT" "http://127.0.0.1:$FULL$url" "$RS" "$N" $CONC ;;
    cors)       "$CLIENT" "http://127.0.0.1:$FULL$url" "$FULL_TOKEN" "$N" $CONC "$ORIGIN" ;;
    proxy)      "$CLIENT" "http://127.0.0.1:$FULL$url" "$FULL_TOKEN" "$N" $CONC "${FWD[@]}" ;;
    everything) "$CLIENT" "http://127.0.0.1:$FULL$url" "$HS" "$N" $CONC "$ORIGIN" "${FWD[@]}" ;;
  esac
}
declare -A RATE P50 P99
for r in $(seq "$ROUNDS"); do
  for v in "${names[@]}"; do
    read -r rate p50 p99 < <(run "$v")
    RATE[$v]+="$rate "; P50[$v]+="$p50 "; P99[$v]+="$p99 "
    echo "round $r $v: $rate req/s, p50 $p50 µs, p99 $p99 µs" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${RATE[baseline]}" | median)
printf "%-11s %10s %8s %8s %8s\n" variant "req/s" "x base" "p50 µs" "p99 µs"
for v in "${names[@]}"; do
  rate=$(echo "${RATE[$v]}" | median)
  printf "%-11s %10s %8s %8s %8s\n" "$v" "$rate" "$(python3 -c "print(f'{$rate/$base:.2f}')")" \
    "$(echo "${P50[$v]}" | median)" "$(echo "${P99[$v]}" | median)"
done
