#!/usr/bin/env bash
# Runs one fuzz target for a while: scripts/fuzz.sh TARGET SECONDS [SEED]
#
# In-process targets (lines_json decompress config buffer_record checkpoint dead_letter_object)
# run coverage-guided under libFuzzer through `cargo fuzz` (sanitizer none, so the stable
# toolchain does; cargo-fuzz is installed once into the cache, the instrumented build goes to
# target/fuzz/ and takes ~10 min the first time). The corpus grows in fuzz/corpus/TARGET,
# seeded from tests/fuzz/regressions/TARGET; findings land in fuzz/artifacts/TARGET.
# http_request (a real agent over TCP), or any target with SLUICE_FUZZ_ENGINE=random, runs the
# seeded random mutator of tests/suite/fuzz.rs instead (findings in target/fuzz-findings/).
# Once a finding is fixed, copy it into tests/fuzz/regressions/TARGET/: every test run
# replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/fuzz.sh TARGET SECONDS [SEED]"
target="${1:?$usage}"
seconds="${2:?$usage}"
seed="${3:-}"
if [ "$target" = http_request ] || [ "${SLUICE_FUZZ_ENGINE:-libfuzzer}" = random ]; then
  export SLUICE_FUZZ_SECONDS="$seconds"
  if [ -n "$seed" ]; then export SLUICE_FUZZ_SEED="$seed"; fi
  exec cargo test --locked --test suite -- --exact "fuzz::$target" --nocapture
fi
cargo_fuzz="$(scripts/cargo-install-cached.sh cargo-fuzz 0.13.2 cargo-fuzz)"
root="$PWD"
mkdir -p "fuzz/corpus/$target" "tests/fuzz/regressions/$target"
cd fuzz
exec "$cargo_fuzz" fuzz run -s none --target-dir "$root/target/fuzz" "$target" \
  "corpus/$target" "$root/tests/fuzz/regressions/$target" -- \
  -max_total_time="$seconds" -max_len=4096 -timeout=2 ${seed:+-seed=$seed}
