#!/usr/bin/env bash
# Runs schemathesis (PyPI, pinned) against a live `switchboard standalone`
# with docs/openapi.yaml: no 5xx, every status and body as documented, bad
# input refused, auth enforced. Bounded: a fixed number of examples per call.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
EXAMPLES="${OPENAPI_EXAMPLES:-40}"

if ! schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  hash -r
fi

cargo build -q -p switchboard
source scripts/standalone.sh
start_standalone "openapi-check-key-$(date +%s)-0123456789"

set +e
schemathesis run docs/openapi.yaml \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $key" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --max-examples "$EXAMPLES" \
  --seed 20261123 \
  --generation-database none \
  --no-color \
  --request-timeout 10
status=$?
set -e
if [ $status -ne 0 ]; then
  echo "---- standalone log ----"; tail -50 "$log"
fi
exit $status
