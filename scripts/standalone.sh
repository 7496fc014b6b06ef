# Sourced by the CI scripts: starts a debug `switchboard standalone` on a
# free port with rate limits raised, waits until it is ready, and stops it
# on exit. Sets `port`, `key` (its API key) and `log` (its log file).
# Usage: start_standalone KEY

start_standalone() {
  key=$1
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  log=$(mktemp)
  SWITCHBOARD_STANDALONE__LISTEN="127.0.0.1:$port" SWITCHBOARD_API_KEY="$key" \
    SWITCHBOARD_EDGE__RATE_PER_SEC=100000 SWITCHBOARD_EDGE__RATE_BURST=100000 \
    ./target/debug/switchboard standalone >"$log" 2>&1 &
  standalone_pid=$!
  trap 'kill $standalone_pid 2>/dev/null || true; wait $standalone_pid 2>/dev/null || true; rm -f "$log"' EXIT
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "standalone did not become ready:" >&2
  tail -20 "$log" >&2
  return 1
}
