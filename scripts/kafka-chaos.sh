#!/usr/bin/env bash
# The long Kafka chaos test: scripts/kafka-chaos.sh ROUNDS
# Three agents in one consumer group on 6 partitions of a real tansu broker, one killed with -9
# and restarted at random in each round while a producer keeps writing; at the end every
# message must have been delivered (duplicates are reported). The suite runs 6 rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:?usage: scripts/kafka-chaos.sh ROUNDS}"
SLUICE_TANSU="${SLUICE_TANSU:-$(scripts/tansu.sh)}"
export SLUICE_TANSU SLUICE_KAFKA_CHAOS_ROUNDS="$rounds"
exec cargo test --locked --test suite kafka_delivery::chaos -- --nocapture
