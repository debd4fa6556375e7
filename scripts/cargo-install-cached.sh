#!/usr/bin/env bash
# Installs a crate's binary with `cargo install` once into a cache directory and prints the
# binary's path; later runs reuse the cache. Used by scripts/tansu.sh and scripts/cargo-deb.sh.
# Usage: cargo-install-cached.sh CRATE VERSION BINARY [extra cargo install arguments...]
# Override the cache with SLUICE_CACHE_DIR.
set -euo pipefail
crate=$1 version=$2 name=$3
shift 3
root="${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}/$crate-$version"
binary="$root/bin/$name"
if [ -x "$binary" ] && "$binary" --version >/dev/null 2>&1; then
  echo "$binary"
  exit 0
fi
echo "== installing $crate $version into $root (once)" >&2
cargo install "$crate" --version "$version" --locked --root "$root" "$@" >&2
"$binary" --version >&2
echo "$binary"
