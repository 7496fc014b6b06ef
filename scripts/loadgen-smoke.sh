#!/usr/bin/env bash
# CI smoke of the load generator: every scenario, briefly, against a debug
# `switchboard standalone`; each run must report "ok": true (no loss, no
# drift, no failed connects). Figures come from scripts/bench.py, not here.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p switchboard -p switchboard-loadgen
source scripts/standalone.sh
start_standalone "loadgen-smoke-key-0123456789"

LG=./target/debug/switchboard-loadgen
T="ws://127.0.0.1:$port/ws"
run() {
  local out
  out=$("$LG" "$@" --targets "$T" --deadline 60s 2>/dev/null | tail -n 1)
  echo "$out"
  case "$out" in
    *'"ok":true'*) ;;
    *) echo "loadgen smoke failed: $*" >&2; tail -20 "$log" >&2; exit 1 ;;
  esac
}
run idle --connections 200 --hold 1s
run unicast --pairs 10 --rate 200 --duration 2s
run fanout --groups 3 --group-size 10 --rate 30 --duration 2s
run broadcast --clients 200 --repetitions 5 --rate 10
run churn --pool 50 --rate 50 --duration 2s --api "http://127.0.0.1:$port" --api-key "$key"
echo "loadgen smoke: ok"
