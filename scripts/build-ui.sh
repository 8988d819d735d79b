#!/usr/bin/env bash
# Builds the upload page's third-party assets from the lockfile: installs exactly what
# crates/chute/ui/package-lock.json pins (npm ci) and copies Uppy's browser bundle into
# crates/chute/ui/vendor/, which the binary embeds (http/ui.rs). The copies are checked in;
# `build-ui.sh --check` fails when they differ from what the lockfile gives (scripts/test.sh
# runs it), so the page can only ship what the lockfile names.
set -euo pipefail
cd "$(dirname "$0")/../crates/chute/ui"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
mkdir -p vendor
out=vendor
if [ "${1:-}" = "--check" ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
for f in uppy.min.js uppy.min.css; do
  cp node_modules/uppy/dist/$f "$out/$f"
done
version=$(node -p 'require("./node_modules/uppy/package.json").version')
echo "uppy $version (from package-lock.json by scripts/build-ui.sh)" > "$out/VERSION"
if [ "${1:-}" = "--check" ]; then
  for f in uppy.min.js uppy.min.css VERSION; do
    if ! cmp -s "$out/$f" "vendor/$f"; then
      echo "crates/chute/ui/vendor/$f differs from what package-lock.json gives: run scripts/build-ui.sh" >&2
      exit 1
    fi
  done
  echo "ui: vendor/ matches package-lock.json (uppy $version)"
fi
