#!/usr/bin/env bash
# RFC 6455 conformance: runs the Autobahn|Testsuite fuzzing client (cases
# 1.* to 7.* and 9.*; 12/13 need permessage-deflate, which we do not
# negotiate) against the test-only `/echo` endpoint of a debug
# `switchboard standalone` (edge.echo_endpoint on; message, frame and send
# queue limits raised to 20 MiB for the 9.* cases, which send up to 16 MiB).
# Every case must be OK, or listed with its reason in autobahn/expected.json;
# autobahn/check.py compares. The report (HTML and JSON) stays in
# autobahn/report/ (ignored by git).
#
# The client is the reference `wstest` (PyPI autobahntestsuite==25.10.1, the
# suite tungstenite and fastwebsockets report against) in a Python 2.7
# virtualenv under .tools/, made with pyenv's 2.7 (or AUTOBAHN_PYTHON27).
# AUTOBAHN_CLIENT=kosoku runs the same case files with PyPI kosoku==0.1.0
# (Python 3, a Rust runner) instead; so does a machine without Python 2.7.
# Both gave the same verdict on every case here.
set -euo pipefail
cd "$(dirname "$0")/.."

WSTEST_VERSION=25.10.1
KOSOKU_VERSION=0.1.0
CLIENT="${AUTOBAHN_CLIENT:-}"
LIMIT=$((20 * 1024 * 1024))
REPORT=autobahn/report

WSTEST_VENV=.tools/wstest-$WSTEST_VERSION
WSTEST="$PWD/$WSTEST_VENV/bin/wstest"

find_python27() { # prints the path of a Python 2.7, or nothing
  local py="${AUTOBAHN_PYTHON27:-}" root
  if [ -z "$py" ]; then
    root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    py=$(ls -d "$root"/versions/2.7*/bin/python 2>/dev/null | sort -V | tail -n 1)
    [ -n "$py" ] || py=$(command -v python2.7 || true)
  fi
  if [ -n "$py" ] && "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
    echo "$py"
  fi
}

install_wstest() {
  local venv=$WSTEST_VENV py
  [ -f "$venv/.installed" ] && return 0
  py=$(find_python27)
  if [ -z "$py" ]; then
    echo "autobahn: no Python 2.7 found (pyenv install 2.7.18, or set AUTOBAHN_PYTHON27)" >&2
    return 1
  fi
  echo "autobahn: installing autobahntestsuite==$WSTEST_VERSION into $venv ($py)"
  rm -rf "$venv" .tools/virtualenv-py27
  mkdir -p .tools
  local ilog=.tools/wstest-install.log
  # virtualenv goes into a folder of its own (--target) and the suite into a
  # virtualenv, so the Python 2.7 installation itself stays as it is.
  if ! { "$py" -m pip install --disable-pip-version-check --no-warn-script-location \
           --target .tools/virtualenv-py27 'virtualenv<20.22' \
         && PYTHONPATH=.tools/virtualenv-py27 "$py" -m virtualenv "$venv" \
         && "$venv/bin/python" -m pip install --disable-pip-version-check \
           --no-python-version-warning "autobahntestsuite==$WSTEST_VERSION" \
         && "$venv/bin/wstest" --autobahnversion; } >"$ilog" 2>&1; then
    tail -30 "$ilog" >&2
    rm -rf "$venv"
    echo "autobahn: installing autobahntestsuite failed (log: $ilog)" >&2
    return 1
  fi
  rm -rf .tools/virtualenv-py27
  touch "$venv/.installed"
}

install_kosoku() {
  if ! python3 -m pip show kosoku 2>/dev/null | grep -q "^Version: $KOSOKU_VERSION$"; then
    python3 -m pip install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
    hash -r
  fi
}

if [ -z "$CLIENT" ]; then
  if [ -f "$WSTEST_VENV/.installed" ] || [ -n "$(find_python27)" ]; then
    CLIENT=wstest
  else
    echo "autobahn: no Python 2.7 for wstest; running the case files with kosoku"
    CLIENT=kosoku
  fi
fi
case "$CLIENT" in
  wstest) install_wstest ;;
  kosoku) install_kosoku ;;
  *) echo "autobahn: AUTOBAHN_CLIENT must be wstest or kosoku" >&2; exit 2 ;;
esac

cargo build -q -p switchboard
source scripts/standalone.sh
export SWITCHBOARD_EDGE__ECHO_ENDPOINT=true
export SWITCHBOARD_EDGE__MAX_FRAME_BYTES=$LIMIT
export SWITCHBOARD_EDGE__MAX_MESSAGE_BYTES=$LIMIT
export SWITCHBOARD_EDGE__SEND_QUEUE_BYTES=$LIMIT
start_standalone "autobahn-key-$(date +%s)-0123456789"

rm -rf "$REPORT"
mkdir -p "$REPORT"
started=$(date +%s)
set +e
case "$CLIENT" in
  wstest)
    # The spec with this run's port and an absolute report folder.
    python3 - "$port" "$PWD/$REPORT" >"$REPORT/fuzzingclient.json" <<'PY'
import json, sys
spec = json.load(open("autobahn/fuzzingclient.json"))
spec["outdir"] = sys.argv[2]
spec["servers"][0]["url"] = "ws://127.0.0.1:%s/echo" % sys.argv[1]
json.dump(spec, sys.stdout, indent=2)
PY
    (cd "$REPORT" && timeout 300 "$WSTEST" -m fuzzingclient -s fuzzingclient.json) \
      >"$REPORT/client.log" 2>&1
    ;;
  kosoku)
    mapfile -t include < <(python3 -c 'import json; [print(c) for c in json.load(open("autobahn/fuzzingclient.json"))["cases"]]')
    args=()
    for c in "${include[@]}"; do args+=(-i "$c"); done
    # (kosoku names the agent after the server's address.)
    timeout 300 kosoku -m fuzzingclient "${args[@]}" -p 2 -o "$REPORT" "ws://127.0.0.1:$port/echo" \
      >"$REPORT/client.log" 2>&1
    ;;
esac
status=$?
set -e
echo "autobahn: $CLIENT ran for $(($(date +%s) - started)) s (exit $status)"
if ! [ -f "$REPORT/index.json" ]; then
  echo "autobahn: no report written; client log:" >&2
  tail -30 "$REPORT/client.log" >&2
  echo "---- standalone log ----" >&2; tail -30 "$log" >&2
  exit 1
fi
if ! python3 autobahn/check.py "$REPORT/index.json" autobahn/expected.json || [ $status -ne 0 ]; then
  echo "autobahn: failed; report in $REPORT/index.html, client log in $REPORT/client.log" >&2
  echo "---- standalone log ----" >&2; tail -30 "$log" >&2
  exit 1
fi
