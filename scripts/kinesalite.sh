#!/usr/bin/env bash
# Installs kinesalite (a second Kinesis emulator; unlike moto it implements SplitShard, so the
# Kinesis source's split handling is tested against it) once from the npm registry into a
# cache directory, and prints its node_modules path. Needs node and npm. Override the cache
# with SLUICE_CACHE_DIR.
set -euo pipefail
version=3.3.3
prefix="${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}/kinesalite-$version"
if [ -f "$prefix/node_modules/kinesalite/package.json" ]; then
  echo "$prefix/node_modules"
  exit 0
fi
echo "== installing kinesalite $version into $prefix (once)" >&2
mkdir -p "$prefix"
npm install --prefix "$prefix" --silent --no-audit --no-fund "kinesalite@$version" >&2
echo "$prefix/node_modules"
