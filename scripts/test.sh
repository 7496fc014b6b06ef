#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing,
# checks formatting, lints, the crate layering, the Helm chart, the HTTP API against its
# OpenAPI document (schemathesis), then runs every test (unit tests and the
# process tests with real NATS, nginx and our binary).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== format"
cargo fmt --all -- --check

echo "== layering: edge and router never depend on each other"
if cargo tree -p switchboard-edge -e normal --prefix none | grep -q '^switchboard-router'; then
  echo "switchboard-edge depends on switchboard-router" >&2; exit 1
fi
if cargo tree -p switchboard-router -e normal --prefix none | grep -q '^switchboard-edge'; then
  echo "switchboard-router depends on switchboard-edge" >&2; exit 1
fi

echo "== clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== Helm chart: lint, render, validate"
bash scripts/chart-check.sh

echo "== OpenAPI: schemathesis against a live standalone"
bash scripts/openapi-check.sh

echo "== load generator smoke (every scenario, briefly)"
bash scripts/loadgen-smoke.sh

echo "== k6 smoke against the local cluster"
bash scripts/k6-smoke.sh

echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$log")
echo "tests: ${passed:-0} passed, ${failed:-0} failed"
exit "$status"
