#!/usr/bin/env bash
# Installs the real components the tests drive: Debian's chromium, clamd (clamav-daemon),
# nginx (nginx-light), PostgreSQL (postgresql), promtool (prometheus, whose server is
# installed but never started), nghttp (nghttp2-client, an HTTP/2 client that shows frames) and
# tmux (the client's progress bars are read off a pane); Garage (crates.io); the npm packages pinned in
# e2e/package-lock.json (jQuery-File-Upload, spark-md5, playwright-core, tus-js-client); and
# the Python tools pinned in e2e/requirements.txt (tuspy, standardwebhooks, PyJWT, schemathesis,
# openapi-spec-validator) in e2e/.venv. The tests start clamd, nginx, PostgreSQL and
# Garage themselves (scripts/clamd-test.sh, nginx-test.sh, postgres-test.sh, garage-test.sh).
# Idempotent: does nothing when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null || need+=(curl)
command -v chromium >/dev/null || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
services=()
[ -x /usr/sbin/clamd ] || services+=(clamav-daemon)
[ -x /usr/sbin/nginx ] || services+=(nginx-light)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || services+=(postgresql)
command -v promtool >/dev/null || services+=(prometheus)
command -v nghttp >/dev/null || need+=(nghttp2-client)
command -v tmux >/dev/null || need+=(tmux)
if [ $((${#need[@]} + ${#services[@]})) -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing ${need[*]} ${services[*]}: install them with apt-get or run this as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  [ ${#need[@]} -eq 0 ] || apt-get install -y -q "${need[@]}"
  # The daemons are installed, not started: the tests start their own on loopback.
  [ ${#services[@]} -eq 0 ] || apt-get install -y -q --no-install-recommends "${services[@]}"
fi

# Garage (S3-compatible storage) is not packaged by Debian: built from crates.io once, into
# cargo's bin folder (10-20 minutes on two cores, the longest step of a fresh machine).
if ! command -v garage >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
  cargo install garage --version 2.5.0 --locked --quiet
fi

if [ ! -d e2e/node_modules/blueimp-file-upload ] || [ e2e/package-lock.json -nt e2e/node_modules/.package-lock.json ]; then
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
fi

# Installed again whenever the pins change (the stamp is older than the file).
if [ ! -x e2e/.venv/bin/python ] || [ e2e/requirements.txt -nt e2e/.venv/.installed ]; then
  python3 -m venv e2e/.venv
  e2e/.venv/bin/pip install -q --disable-pip-version-check -r e2e/requirements.txt
  touch e2e/.venv/.installed
fi
