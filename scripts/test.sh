#!/usr/bin/env bash
# Runs every check and test of chute: formatting, lints, unit tests and the integration
# tests, which start real servers on loopback and drive them with reqwest, curl and a real
# front end in headless Chromium. Installs what those need first (scripts/setup-e2e.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-e2e.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
