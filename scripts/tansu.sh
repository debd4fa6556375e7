#!/usr/bin/env bash
# Builds tansu (a Kafka-protocol broker in Rust, used by the Kafka tests and the load harness)
# once into a cache directory and prints the binary's path. The first build takes ~9-20 min on
# 2 cores; later runs reuse the cache. The default build has no storage engine; `dynostore`
# gives memory://.
set -euo pipefail
exec "$(dirname "$0")/cargo-install-cached.sh" tansu 0.6.0 tansu --features dynostore
