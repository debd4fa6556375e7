#!/usr/bin/env bash
# A long soak of a real agent (not run in CI): scripts/soak.sh MINUTES [BINARY]
# Builds the release binary unless BINARY is given, then runs scripts/soak.py, which reports
# lost/duplicated events and the RSS and descriptor slopes (see its header).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:?usage: scripts/soak.sh MINUTES [BINARY]}"
binary="${2:-}"
if [ -z "$binary" ]; then
  cargo build --release --locked
  binary=target/release/sluice
fi
exec python3 scripts/soak.py "$minutes" --binary "$binary" --out "${SOAK_OUT:-target}"
