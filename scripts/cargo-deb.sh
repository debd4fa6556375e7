#!/usr/bin/env bash
# Installs cargo-deb (builds the .deb from [package.metadata.deb] in Cargo.toml) once into a
# cache directory and prints the binary's path; ~1 min the first time. The packaging test uses
# it to build a .deb from the binary the test suite built and check the files it installs.
set -euo pipefail
exec "$(dirname "$0")/cargo-install-cached.sh" cargo-deb 3.8.0 cargo-deb
