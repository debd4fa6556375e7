#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
# Needs only a Rust toolchain (cargo) and a C compiler; tests start their own servers on
# 127.0.0.1. The Kafka tests also run against a real broker process, tansu, which
# scripts/tansu.sh builds once into a cache (SLUICE_SKIP_TANSU=1 skips those tests locally),
# and the AWS tests against moto's emulator, which scripts/moto.sh installs (SLUICE_SKIP_MOTO=1),
# and kinesalite for Kinesis shard splits, which scripts/kinesalite.sh installs
# (SLUICE_SKIP_KINESALITE=1). The postgres sink's tests start their own PostgreSQL server from
# Debian's package, which scripts/postgres.sh installs when missing (SLUICE_SKIP_POSTGRES=1).
# The iceberg sink's tests read tables back with pyiceberg, which scripts/pyiceberg.sh installs
# from PyPI into the cache (SLUICE_SKIP_PYICEBERG=1).
# The packaging test builds a .deb with cargo-deb, which
# scripts/cargo-deb.sh installs once (SLUICE_SKIP_DEB=1). The full-disk tests mount a tmpfs
# (root only; elsewhere they skip with a message).
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

# librdkafka (Kafka source and sink) links the system OpenSSL.
if ! pkg-config --exists openssl 2>/dev/null && [ ! -f /usr/include/openssl/ssl.h ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing libssl-dev and pkg-config (OpenSSL headers for librdkafka)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config
  else
    echo "OpenSSL headers are needed to build librdkafka: apt-get install libssl-dev pkg-config" >&2
    exit 1
  fi
fi

# The AWS tests (S3, Kinesis, Firehose, DynamoDB) talk to moto's server, installed once from PyPI.
if [ "${SLUICE_SKIP_MOTO:-}" != 1 ]; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "== installing python3-venv (for moto, the AWS emulator)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
    else
      echo "python3 with venv is needed for the AWS emulator (moto): apt-get install python3-venv" >&2
      exit 1
    fi
  fi
  SLUICE_MOTO_SERVER="$(scripts/moto.sh)"
  export SLUICE_MOTO_SERVER
fi
# The iceberg sink's tests read their tables back with pyiceberg (PyPI), installed once.
if [ "${SLUICE_SKIP_PYICEBERG:-}" != 1 ]; then
  if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
    else
      echo "python3 with venv is needed for pyiceberg: apt-get install python3-venv" >&2
      exit 1
    fi
  fi
  SLUICE_PYICEBERG="$(scripts/pyiceberg.sh)"
  export SLUICE_PYICEBERG
fi
# The Kinesis source's shard-split test runs against kinesalite (npm), installed once.
if [ "${SLUICE_SKIP_KINESALITE:-}" != 1 ]; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "== installing nodejs and npm (for kinesalite, a Kinesis emulator)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
    else
      echo "node and npm are needed for kinesalite: apt-get install nodejs npm" >&2
      exit 1
    fi
  fi
  SLUICE_KINESALITE_MODULES="$(scripts/kinesalite.sh)"
  export SLUICE_KINESALITE_MODULES
fi
# The postgres sink's tests start their own PostgreSQL server (Debian's package, installed once).
if [ "${SLUICE_SKIP_POSTGRES:-}" != 1 ]; then
  SLUICE_PG_BIN="$(scripts/postgres.sh)"
  export SLUICE_PG_BIN
fi
if [ "${SLUICE_SKIP_TANSU:-}" != 1 ]; then
  SLUICE_TANSU="$(scripts/tansu.sh)"
  export SLUICE_TANSU
fi
# The packaging test builds a .deb with cargo-deb and lists its files (dpkg-deb).
if [ "${SLUICE_SKIP_DEB:-}" != 1 ]; then
  SLUICE_CARGO_DEB="$(scripts/cargo-deb.sh)"
  export SLUICE_CARGO_DEB
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
# A failing test's message, not a backtrace: CI keeps a long log's head and tail only, and a
# backtrace pushed the message of a failure out of view (the messages name file and line).
# SLUICE_TEST_BACKTRACE=1 brings backtraces back.
export RUST_BACKTRACE="${SLUICE_TEST_BACKTRACE:-0}"
cargo test --all-targets --locked
