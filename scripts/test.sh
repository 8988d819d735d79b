#!/usr/bin/env bash
# Runs every check and test of chute: formatting, lints, unit tests and the integration
# tests (which start real servers on loopback and drive them with reqwest and curl).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v curl >/dev/null || { echo "curl is needed by the integration tests (apt-get install curl)" >&2; exit 1; }

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
