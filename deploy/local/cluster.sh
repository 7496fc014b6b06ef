#!/usr/bin/env bash
# Local cluster on 127.0.0.1 (SPEC §6):
#   NATS with JetStream (4222), one router (8090), three edges (8081-8083),
#   nginx as the WebSocket load balancer (8080).
# NATS runs as the Helm chart runs it: authorization on, users sb-edge and
# sb-router with the permissions of k8s/switchboard/files/nats-permissions.conf
# and passwords generated once into .run/local/nats-*-password
# (SWITCHBOARD_LOCAL_NATS_AUTH=0 runs it open).
# Usage: deploy/local/cluster.sh up | down | status
# Logs and pid files live in .run/local/ at the repository root; `down`
# stops only what `up` started (by its pid files).
# Environment: SWITCHBOARD_BIN (default: build target/release/switchboard),
# SWITCHBOARD_API_KEY and any SWITCHBOARD_* setting are passed through.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUN="$ROOT/.run/local"
NATS_PORT="${NATS_PORT:-4222}"
ROUTER_PORT="${ROUTER_PORT:-8090}"
EDGE_PORTS=(8081 8082 8083)
LB_PORT="${LB_PORT:-8080}"

log() { printf 'cluster: %s\n' "$*"; }

wait_port() { # port what
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  log "$2 did not open port $1; see $RUN/$2.log"; return 1
}

wait_ready() { # port what
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  log "$2 is not ready on port $1; see $RUN/$2.log"; return 1
}

start() { # name cmd...
  # setsid: each process leads its own process group (pgid = the pid in the
  # pid file), so `down` can stop whatever it forked (nginx's workers) too.
  local name=$1; shift
  setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# Whether pid runs (a zombie, dead but not yet reaped by init, does not).
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$st" ] && [ "${st#Z}" = "$st" ]; }

running() { [ -f "$RUN/$1.pid" ] && alive "$(cat "$RUN/$1.pid")"; }

up() {
  bash "$ROOT/scripts/setup.sh" >/dev/null
  mkdir -p "$RUN/nats" "$RUN/nginx/tmp"
  for p in nats router edge1 edge2 edge3 nginx; do
    if running "$p"; then log "$p is already running (pid $(cat "$RUN/$p.pid")); run '$0 down' first"; exit 1; fi
  done
  local bin="${SWITCHBOARD_BIN:-}"
  if [ -z "$bin" ]; then
    log "building switchboard (release)"
    (cd "$ROOT" && cargo build --release -q -p switchboard)
    bin="$ROOT/target/release/switchboard"
  fi

  if [ -z "${SWITCHBOARD_API_KEY:-}" ]; then
    if [ ! -s "$RUN/api_key" ]; then
      (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RUN/api_key")
    fi
    SWITCHBOARD_API_KEY=$(cat "$RUN/api_key")
    log "no SWITCHBOARD_API_KEY set: using $RUN/api_key"
  fi
  export SWITCHBOARD_API_KEY

  local edge_auth=() router_auth=() nats_conf=()
  if [ "${SWITCHBOARD_LOCAL_NATS_AUTH:-1}" != 0 ]; then
    for role in edge router; do
      if [ ! -s "$RUN/nats-$role-password" ]; then
        # A letter first: nats-server reads an env password as a config
        # value, and one that looks like a number is parsed as one.
        (umask 077; printf 'sb-%s' "$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$RUN/nats-$role-password")
      fi
    done
    cp "$ROOT/k8s/switchboard/files/nats-permissions.conf" "$RUN/nats/permissions.conf"
    cat >"$RUN/nats/nats.conf" <<'CONF'
include ./permissions.conf
authorization {
  users = [
    {user: sb-edge, password: $SB_EDGE_PASSWORD, permissions: $SB_EDGE_PERMISSIONS}
    {user: sb-router, password: $SB_ROUTER_PASSWORD, permissions: $SB_ROUTER_PERMISSIONS}
  ]
}
CONF
    nats_conf=(--config "$RUN/nats/nats.conf")
    export SB_EDGE_PASSWORD SB_ROUTER_PASSWORD
    SB_EDGE_PASSWORD=$(cat "$RUN/nats-edge-password")
    SB_ROUTER_PASSWORD=$(cat "$RUN/nats-router-password")
    edge_auth=(SWITCHBOARD_NATS__USER=sb-edge "SWITCHBOARD_NATS__PASSWORD=$SB_EDGE_PASSWORD")
    router_auth=(SWITCHBOARD_NATS__USER=sb-router "SWITCHBOARD_NATS__PASSWORD=$SB_ROUTER_PASSWORD")
    log "NATS authorization on: users sb-edge, sb-router (passwords in $RUN/nats-*-password)"
  fi
  start nats nats-server "${nats_conf[@]}" -js -a 127.0.0.1 -p "$NATS_PORT" --store_dir "$RUN/nats"
  unset SB_EDGE_PASSWORD SB_ROUTER_PASSWORD
  wait_port "$NATS_PORT" nats
  export SWITCHBOARD_NATS__URL="nats://127.0.0.1:$NATS_PORT"

  SWITCHBOARD_ROUTER__LISTEN="127.0.0.1:$ROUTER_PORT" start router env "${router_auth[@]}" "$bin" router
  wait_ready "$ROUTER_PORT" router
  local i=1
  for port in "${EDGE_PORTS[@]}"; do
    SWITCHBOARD_EDGE__LISTEN="127.0.0.1:$port" SWITCHBOARD_EDGE__NODE_NAME="edge$i" start "edge$i" env "${edge_auth[@]}" "$bin" edge
    i=$((i + 1))
  done
  i=1
  for port in "${EDGE_PORTS[@]}"; do wait_ready "$port" "edge$i"; i=$((i + 1)); done

  local servers=""
  # max_fails=0: a draining edge's 503 or a restarting edge's refusal sends
  # the handshake to the next edge without marking the edge failed (see
  # crates/testkit/src/nginx.rs: with max_fails=1 nginx starved reconnects
  # after a rolling restart).
  for port in "${EDGE_PORTS[@]}"; do servers+="        server 127.0.0.1:$port max_fails=0;"$'\n'; done
  cat >"$RUN/nginx/nginx.conf" <<NGINX
worker_processes 1;
worker_shutdown_timeout 2s;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $RUN/nginx/tmp;
    proxy_temp_path $RUN/nginx/tmp;
    fastcgi_temp_path $RUN/nginx/tmp;
    uwsgi_temp_path $RUN/nginx/tmp;
    scgi_temp_path $RUN/nginx/tmp;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
    upstream switchboard_edges {
$servers    }
    upstream switchboard_api { server 127.0.0.1:$ROUTER_PORT; }
    server {
        listen 127.0.0.1:$LB_PORT;
        location /api/websocket/ {
            proxy_pass http://switchboard_api;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
        }
        location / {
            proxy_pass http://switchboard_edges;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_next_upstream error timeout http_502 http_503;
        }
    }
}
NGINX
  local nginx=/usr/sbin/nginx; [ -x "$nginx" ] || nginx=$(command -v nginx)
  start nginx "$nginx" -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" -g 'daemon off;'
  wait_port "$LB_PORT" nginx
  log "up: ws://127.0.0.1:$LB_PORT/ws (nginx) -> edges ${EDGE_PORTS[*]}; router http://127.0.0.1:$ROUTER_PORT; NATS $SWITCHBOARD_NATS__URL"
  log "API key: $SWITCHBOARD_API_KEY"
  log "logs: $RUN/*.log"
}

down() {
  # nginx gets SIGQUIT (graceful: the master stops its workers, at most
  # worker_shutdown_timeout for open WebSockets, then exits), the others
  # SIGTERM (edges drain). Whatever is still running after 10 s, and
  # anything left in a process group (a worker whose master died), is killed.
  local any=0
  for p in nginx edge1 edge2 edge3 router nats; do
    if running "$p"; then
      local sig=TERM; [ "$p" = nginx ] && sig=QUIT
      kill -"$sig" "$(cat "$RUN/$p.pid")" 2>/dev/null || true
      any=1
    fi
  done
  for p in nginx edge1 edge2 edge3 router nats; do
    [ -f "$RUN/$p.pid" ] || continue
    local pid; pid=$(cat "$RUN/$p.pid")
    for _ in $(seq 1 200); do alive "$pid" || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$RUN/$p.pid"
  done
  if [ $any = 1 ]; then log "down"; else log "nothing was running"; fi
}

status() {
  for p in nats router edge1 edge2 edge3 nginx; do
    if running "$p"; then echo "$p: running (pid $(cat "$RUN/$p.pid"))"; else echo "$p: stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
