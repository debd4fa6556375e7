#!/usr/bin/env bash
# Finds PostgreSQL's server programs (initdb, pg_ctl, postgres), installing Debian's
# `postgresql` package when they are missing (as root, ~30 s once), and prints their directory.
# The postgres sink's tests start their own server from it on 127.0.0.1 with a temporary data
# directory; nothing runs as a service.
set -euo pipefail
find_bin() {
  if [ -n "${SLUICE_PG_BIN:-}" ] && [ -x "$SLUICE_PG_BIN/initdb" ]; then
    echo "$SLUICE_PG_BIN"
    return 0
  fi
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}
if find_bin; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing postgresql (for the postgres sink's tests; once)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  # The package may start a cluster of its own; the tests do not use it.
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for cluster in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster "$cluster" main stop >/dev/null 2>&1 || true
    done
  fi
  find_bin && exit 0
fi
echo "PostgreSQL's server programs are needed for the postgres sink's tests: apt-get install postgresql (or SLUICE_SKIP_POSTGRES=1)" >&2
exit 1
