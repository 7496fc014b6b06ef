#!/usr/bin/env bash
# The long partition of issue 13, outside CI: an edge cut off from NATS by a
# black hole for 120 s (crates/switchboard/tests/partitions.rs,
# `edge_cut_off_from_nats_for_120s`), with the same assertions as the 3 s
# and 30 s runs in the suite: clients stay connected or are told
# (1012/1013), no acknowledged send lost or delivered twice, no frame across
# tenants, presence healed with no ghost. Prints the timings it measured.
#
#   bash scripts/partition_soak.sh            # once
#   RUNS=5 bash scripts/partition_soak.sh     # five times in a row
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-1}
cargo build --quiet --bin switchboard
for i in $(seq 1 "$runs"); do
  echo "== run $i of $runs: edge cut off from NATS for 120 s"
  cargo test --quiet -p switchboard --test partitions -- --ignored --nocapture --exact \
    edge_cut_off_from_nats_for_120s 2>&1 | grep -E "edge cut off|test result|panicked|FAILED" || {
      echo "run $i failed" >&2; exit 1; }
done
