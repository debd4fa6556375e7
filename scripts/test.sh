#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
# Needs only a Rust toolchain (cargo) and a C compiler; tests start their own servers on
# 127.0.0.1. Later suites (Kafka, S3/Kinesis emulators) hook in through scripts/test-services.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust from https://rustup.rs" >&2
  exit 1
fi
if ! command -v cc >/dev/null 2>&1; then
  echo "a C compiler (cc) is needed to build VRL's oniguruma and zstd: apt-get install build-essential" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked
