#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing,
# checks formatting, lints, the crate layering, the Helm chart, the HTTP API against its
# OpenAPI document (schemathesis), then runs every test (unit tests and the
# process tests with real NATS, nginx and our binary).
set -euo pipefail
cd "$(dirname "$0")/.."

# The suite must leave no process of its own behind (nginx workers whose
# master died were found once). Remember what ran before it; every process
# it starts inherits SWITCHBOARD_SUITE_RUN (nginx rewrites its environment
# block with its process title, so an nginx is judged by its pid alone).
export SWITCHBOARD_SUITE_RUN="$$-$(date +%s%N)"
suite_pids() { # pid of every live (not zombie) nginx, nats-server, switchboard, loadgen, k6
  ps -eo pid=,stat=,comm= | awk '$2 !~ /^Z/ && $3 ~ /^(nginx|nats-server|switchboard|switchboard-loa|k6)$/ { print $1 }'
}
ours() { # pid: started by this run (not running before it, and carrying its marker)
  case " $preexisting " in *" $1 "*) return 1 ;; esac
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = nginx ] && return 0
  grep -qzxF "SWITCHBOARD_SUITE_RUN=$SWITCHBOARD_SUITE_RUN" "/proc/$1/environ" 2>/dev/null
}
leftovers() {
  local pid
  for pid in $(suite_pids); do ours "$pid" && echo "$pid"; done
  return 0
}
check_no_leftovers() { # waits up to 5 s for processes still exiting
  local left
  for _ in $(seq 1 50); do
    left=$(leftovers)
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  echo "== FAILED: the test suite left processes behind:" >&2
  ps -o pid=,ppid=,etime=,args= -p "$(echo $left | tr ' ' ',')" >&2 || true
  return 1
}
preexisting=$(suite_pids | tr '\n' ' ')

bash scripts/setup.sh

echo "== format"
cargo fmt --all -- --check

echo "== JS SDK bundle: rebuilt from its sources, the same bytes as committed"
# The binary embeds clients/js/dist/switchboard.js (the web console), so
# `cargo run` needs no Node: the committed bundle must be what the sources
# build to.
(cd clients/js && npm ci --no-audit --no-fund --silent && npm run build --silent)
cp clients/js/package-lock.json clients/js/node_modules/.package-lock-ci.json
if [ -n "$(git status --porcelain -- clients/js/dist)" ]; then
  git status --short -- clients/js/dist >&2
  git diff --stat -- clients/js/dist >&2
  echo "clients/js/dist differs from its sources: run npm run build in clients/js and commit dist/" >&2
  exit 1
fi

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

echo "== Autobahn|Testsuite (RFC 6455 cases 1-7, 9) against the echo endpoint"
bash scripts/autobahn.sh

echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$log")
echo "tests: ${passed:-0} passed, ${failed:-0} failed"

echo "== no process left behind"
check_no_leftovers || { [ "$status" -ne 0 ] || status=1; }
exit "$status"
