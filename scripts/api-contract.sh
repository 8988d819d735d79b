#!/usr/bin/env bash
# The API contract run: starts `chute serve` on its embedded default in a fresh folder, as a
# new user would, validates the OpenAPI document it serves at /openapi.json with
# openapi-spec-validator, then drives every described operation with schemathesis
# (e2e/schemathesis.toml says which checks and why; e2e/schemathesis_hooks.py gives the
# resumable protocols' byte bodies a serializer). Fails on any schemathesis failure: a 5xx,
# an answer whose status, media type, headers or body the document does not describe, a
# refused-as-valid bad request, a resource usable after DELETE, and so on; and on a panic in
# the server's log or a server that is gone at the end.
#
# Bounded by a number of examples per operation (SCHEMATHESIS_EXAMPLES, 100), with a fixed seed
# (SCHEMATHESIS_SEED) so that a red run can be replayed; give another seed to explore. Needs the Python tools of e2e/requirements.txt (scripts/setup-e2e.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

py=e2e/.venv/bin
for tool in schemathesis openapi-spec-validator; do
  [ -x "$py/$tool" ] || { echo "$py/$tool is missing: run scripts/setup-e2e.sh" >&2; exit 1; }
done
# The binary the integration tests were built with: a plain `cargo build` would resolve the
# dependencies' features without the test-only ones and build the whole tree a second time,
# which costs minutes and gigabytes (a CI run once died of a full disk doing it).
chute=$(cargo test --locked --no-run --test it --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "chute" \
            and "bin" in m["target"]["kind"]:
        print(m["executable"])
')
[ -x "$chute" ] || { echo "no chute binary from the test build" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/chute-contract.XXXXXX")
pid=""
cleanup() {
  [ -n "$pid" ] && { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export CHUTE_DATA_DIR="$work/data" CHUTE_LISTEN="127.0.0.1:$port" CHUTE_LOG_FORMAT=json
"$chute" user add contract >/dev/null
token=$("$chute" token create --user contract)
"$chute" serve > "$work/server.log" 2>&1 & pid=$!
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "chute did not start" >&2; exit 1; }
  sleep 0.1
done

curl -sf "http://127.0.0.1:$port/openapi.json" -o "$work/openapi.json"
"$py/openapi-spec-validator" "$work/openapi.json"
python3 - "$work/openapi.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
ops = sum(len(item) for item in doc["paths"].values())
print(f"openapi.json: OpenAPI {doc['openapi']}, {len(doc['paths'])} paths, {ops} operations")
PY

# /metrics takes the metrics token, not a user's (tested with promtool in tests/it/metrics.rs);
# /api/events is for staff, and its `wait` holds an answer open up to 60 s.
set +e
"$py/schemathesis" --no-color --config-file e2e/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $token" \
  --exclude-path /metrics --exclude-path /api/events \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-100}" \
  --seed "${SCHEMATHESIS_SEED:-20261207}" \
  --workers 2
status=$?
set -e

if grep -q 'panicked' "$work/server.log"; then
  grep 'panicked' "$work/server.log" >&2
  echo "the server panicked during the run" >&2
  exit 1
fi
kill -0 "$pid" 2>/dev/null || { tail -20 "$work/server.log" >&2; echo "the server is gone" >&2; exit 1; }
exit "$status"
