#!/usr/bin/env bash
# Installs moto's server (an AWS emulator: S3, Kinesis, Firehose over real HTTP, used by the
# AWS tests) once into a virtualenv under the cache directory and prints the path of its
# `moto_server` command. ~30 s the first time. Override the cache with SLUICE_CACHE_DIR.
set -euo pipefail
version=5.2.5
venv="${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}/moto-$version"
server="$venv/bin/moto_server"
if [ -x "$server" ] && "$venv/bin/python" -c "import moto.server" >/dev/null 2>&1; then
  echo "$server"
  exit 0
fi
echo "== installing moto[server] $version into $venv (once)" >&2
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version" >&2
echo "$server"
