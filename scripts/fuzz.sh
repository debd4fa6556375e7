#!/usr/bin/env bash
# Runs one fuzz target for a while: scripts/fuzz.sh TARGET SECONDS [SEED]
# Targets: lines_json decompress config buffer_record checkpoint dead_letter_object http_request
# (the tests in tests/fuzz.rs). A finding is saved under target/fuzz-findings/; copy it into
# tests/fuzz/regressions/TARGET/ once fixed, so every run replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: scripts/fuzz.sh TARGET SECONDS [SEED]}"
export SLUICE_FUZZ_SECONDS="${2:?usage: scripts/fuzz.sh TARGET SECONDS [SEED]}"
if [ -n "${3:-}" ]; then export SLUICE_FUZZ_SEED="$3"; fi
exec cargo test --locked --test fuzz -- --exact "$target" --nocapture
