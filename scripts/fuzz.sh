#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 20) from the corpus kept in
# fuzz/corpus/<target>; new inputs go to a scratch folder, so the kept corpus only changes when
# someone minimises a longer run into it (`cargo +nightly fuzz cmin`). Installs the nightly
# toolchain and cargo-fuzz when missing. Fails on the first crash, timeout or out-of-memory,
# leaving the input under fuzz/artifacts/<target>/.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-20}; shift || true
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
# No sanitizer: the code under test is safe Rust (its two `unsafe` libc calls are not on
# these paths), so ASan would find nothing that a panic does not, at several times the cost.
flags=(-O -s none)
cargo +nightly fuzz build "${flags[@]}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/chute-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  echo "fuzzing $t for ${SECONDS_EACH}s"
  status=0
  cargo +nightly fuzz run "${flags[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
    > "$scratch/$t.log" 2>&1 || status=$?
  # libFuzzer's progress lines are left out; its summary and any failure are shown.
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|Done)' "$scratch/$t.log" || true
  if [ "$status" -ne 0 ]; then
    grep -E -A20 'panicked|ERROR' "$scratch/$t.log" | head -40 >&2
    echo "fuzz target $t failed (input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
done
