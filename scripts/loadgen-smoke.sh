#!/usr/bin/env bash
# CI smoke of the load generator: every scenario, briefly, against a debug
# `switchboard standalone` (storm against a small cluster, since it kills an
# edge); each run must report "ok": true (no loss, no drift, no failed
# connects, every dropped client reachable again). Figures come from
# scripts/bench.py, not here.
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

# storm needs edges to kill: a small cluster (NATS, a router, two edges),
# edge 1 is killed under its clients, which reconnect to edge 2.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { # URL
  for _ in $(seq 1 200); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "not ready: $1" >&2; tail -20 "$dir"/*.log >&2; return 1
}
dir=$(mktemp -d)
cluster_pids=""
standalone_log=$log
trap 'kill $standalone_pid $cluster_pids 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$standalone_log" "$dir"' EXIT
nats_port=$(free_port)
nats-server -js -a 127.0.0.1 -p "$nats_port" --store_dir "$dir/js" >"$dir/nats.log" 2>&1 &
cluster_pids="$cluster_pids $!"
for _ in $(seq 1 200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
  sleep 0.05
done
export SWITCHBOARD_NATS__URL="nats://127.0.0.1:$nats_port" SWITCHBOARD_API_KEY="$key" SWITCHBOARD_ROUTER__NODE_TIMEOUT=2s
router_port=$(free_port)
SWITCHBOARD_ROUTER__LISTEN="127.0.0.1:$router_port" ./target/debug/switchboard router >"$dir/router.log" 2>&1 &
cluster_pids="$cluster_pids $!"
wait_ready "http://127.0.0.1:$router_port/readyz"
edge_urls=""
for i in 1 2; do
  p=$(free_port)
  SWITCHBOARD_EDGE__LISTEN="127.0.0.1:$p" ./target/debug/switchboard edge >"$dir/edge$i.log" 2>&1 &
  cluster_pids="$cluster_pids $!"
  # Edge 1 is the one the storm kills: disowned, so bash does not report
  # its death ("Killed").
  [ "$i" = 1 ] && edge1_pid=$! && disown "$edge1_pid"
  wait_ready "http://127.0.0.1:$p/readyz"
  edge_urls="$edge_urls${edge_urls:+,}ws://127.0.0.1:$p/ws"
done
T="$edge_urls"
log="$dir/edge2.log"
run storm --clients 200 --kill "kill -9 $edge1_pid" --backoff-base 200ms \
  --settle 3s --recover-timeout 20s --api "http://127.0.0.1:$router_port" --api-key "$key"
echo "loadgen smoke: ok"
