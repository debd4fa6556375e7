#!/usr/bin/env bash
# Builds tansu (a Kafka-protocol broker in Rust, used by the Kafka tests and the load harness)
# once into a cache directory and prints the binary's path. The first build takes ~9-20 min on
# 2 cores; later runs reuse the cache. Override the cache with SLUICE_CACHE_DIR.
set -euo pipefail
version=0.6.0
root="${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}/tansu-$version"
binary="$root/bin/tansu"
if [ -x "$binary" ] && "$binary" --version >/dev/null 2>&1; then
  echo "$binary"
  exit 0
fi
echo "== building tansu $version into $root (once; takes several minutes)" >&2
# The default build has no storage engine; `dynostore` gives memory://.
cargo install tansu --version "$version" --locked --features dynostore --root "$root" >&2
"$binary" --version >&2
echo "$binary"
