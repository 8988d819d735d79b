#!/usr/bin/env bash
# Searches the log of a whole integration-test pass (CHUTE_TEST_LOG: every in-process server
# of the suite, JSON, chute's lines down to debug) for secrets, and fails on any: API tokens,
# signed tokens (JWTs), download-link signatures, webhook secrets, and the fixed secrets the
# tests configure (JWT, metrics and S3 keys). It also fails on a log too small to prove
# anything, so that a pass that logged nothing cannot pass this check.
set -euo pipefail
log=${1:?usage: check-logs.sh LOG}
lines=$(grep -c '"target":"chute::access"' "$log" || true)
if [ "${lines:-0}" -lt 1000 ]; then
  echo "check-logs: only ${lines:-0} access lines in $log; the suite's servers did not log" >&2
  exit 1
fi
status=0
check() {
  local what=$1 pattern=$2 hits
  hits=$(grep -oE -- "$pattern" "$log" | head -3 || true)
  if [ -n "$hits" ]; then
    echo "check-logs: $what in $log:" >&2
    echo "$hits" >&2
    status=1
  fi
}
check "an API token" 'chute_[0-9a-f]{64}'
check "a signed token (JWT)" 'eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.'
check "a download link's signature" '[?&]s=[A-Za-z0-9_-]{20,}'
check "a webhook secret" 'whsec_[A-Za-z0-9+/]{8,}'
check "the tests' JWT secret" 'an application secret of at least thirty-two bytes'
check "the tests' metrics token" 'metrics-scrape-secret-7f3a9c|metrics-token-for-the-log-test'
check "the test bucket's secret key" '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'
[ "$status" -eq 0 ] && echo "check-logs: $lines access lines, no secret in $log"
exit "$status"
