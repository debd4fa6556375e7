#!/usr/bin/env bash
# Installs cargo-deb (builds the .deb from [package.metadata.deb] in Cargo.toml) once into a
# cache directory and prints the binary's path; ~1 min the first time. The packaging test uses
# it to build a .deb from the binary the test suite built and check the files it installs.
# Override the cache with SLUICE_CACHE_DIR.
set -euo pipefail
version=3.8.0
root="${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}/cargo-deb-$version"
binary="$root/bin/cargo-deb"
if [ -x "$binary" ] && "$binary" --version >/dev/null 2>&1; then
  echo "$binary"
  exit 0
fi
echo "== installing cargo-deb $version into $root (once)" >&2
cargo install cargo-deb --version "$version" --locked --root "$root" >&2
echo "$binary"
