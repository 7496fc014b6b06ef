#!/usr/bin/env python3
"""One scale run for docs/scaling.md (not CI): many idle connections on a
local cluster with a 3-server NATS JetStream cluster (presence buckets and
the history log at 3 replicas), two routers and as many edges as the
connection count needs (at most ~20k open files per process on this box).
Reports memory per connection per process kind (RSS delta over the
connected window, divided by the connections that process serves or
indexes) and each router's index and partition share.

    python3 scripts/scale_run.py --connections 300000
    python3 scripts/scale_run.py --connections 30000 --edges 2   # a quick one
"""
import argparse, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SB_BIN") or os.path.join(ROOT, "target/release/switchboard")
LG = os.environ.get("SB_LOADGEN") or os.path.join(ROOT, "target/release/switchboard-loadgen")
KEY = "scale-key-0123456789abcdef"
PAGE = os.sysconf("SC_PAGE_SIZE")
PER_PROCESS = 19000

_port = [30000 + os.getpid() % 4000]
def free_port():
    while True:
        _port[0] += 1
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", _port[0])); return _port[0]
        except OSError: continue
        finally: s.close()

def nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))

def rss(pid):
    return int(open(f"/proc/{pid}/statm").read().split()[1]) * PAGE

def wait_http(port, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200: return
        except Exception: time.sleep(0.1)
    raise RuntimeError(f"port {port} not ready")

def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "): return float(line.split()[-1])
    return None

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=300000)
    ap.add_argument("--edges", type=int, default=0, help="default: connections / 19,000, rounded up")
    ap.add_argument("--rate", type=int, default=3000, help="connects per second, all loadgens together")
    ap.add_argument("--hold", type=int, default=30, help="seconds to hold once all are connected")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    edges = a.edges or -(-a.connections // PER_PROCESS)
    per_edge = a.connections // edges
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "switchboard", "-p", "switchboard-loadgen"], cwd=ROOT, check=True)
    d = tempfile.mkdtemp(prefix="sb-scale-")
    procs = []
    lgs = []
    def spawn(name, cmd, env=None):
        log = open(os.path.join(d, name + ".log"), "w")
        p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=log, preexec_fn=nofile)
        procs.append(p); return p
    try:
        # A 3-server NATS JetStream cluster.
        client_ports = [free_port() for _ in range(3)]
        route_ports = [free_port() for _ in range(3)]
        nats = []
        for i in range(3):
            routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(route_ports) if j != i)
            nats.append(spawn(f"nats{i}", ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(client_ports[i]),
                                           "--server_name", f"n{i}", "--cluster_name", "sb-scale",
                                           "--cluster", f"nats://127.0.0.1:{route_ports[i]}", "--routes", routes,
                                           "--store_dir", os.path.join(d, f"js{i}")]))
        url = ",".join(f"nats://127.0.0.1:{p}" for p in client_ports)
        env = {"SWITCHBOARD_NATS__URL": url, "SWITCHBOARD_API_KEY": KEY, "SWITCHBOARD_LOG__LEVEL": "info",
               "SWITCHBOARD_NATS__REPLICAS": "3", "SWITCHBOARD_HISTORY__REPLICAS": "3",
               "SWITCHBOARD_EDGE__HEARTBEAT": "600s", "SWITCHBOARD_ROUTER__PRESENCE_NOTICES": "off",
               "SWITCHBOARD_EDGE__MAX_CONNECTIONS_PER_ADDRESS": "0"}
        router_ports = [free_port() for _ in range(2)]
        routers = [spawn(f"router{i}", [BIN, "router"], {**env, "SWITCHBOARD_ROUTER__LISTEN": f"127.0.0.1:{p}"}) for i, p in enumerate(router_ports)]
        for p in router_ports: wait_http(p)
        edge_ports = [free_port() for _ in range(edges)]
        edge_procs = [spawn(f"edge{i}", [BIN, "edge"], {**env, "SWITCHBOARD_EDGE__LISTEN": f"127.0.0.1:{p}", "SWITCHBOARD_EDGE__NODE_NAME": f"edge{i}"}) for i, p in enumerate(edge_ports)]
        for p in edge_ports: wait_http(p)
        time.sleep(8)  # leases settle (fair share between the two routers)
        kinds = {"nats": nats, "router": routers, "edge": edge_procs}
        before = {k: [rss(p.pid) for p in ps] for k, ps in kinds.items()}
        # One loadgen per edge, each to its own edge, from its own source addresses.
        t0 = time.time()
        for i, port in enumerate(edge_ports):
            src = ",".join(f"127.0.{1 + i // 60}.{2 + (4 * i + k) % 240}" for k in range(4))
            cmd = [LG, "idle", "--targets", f"ws://127.0.0.1:{port}/ws", "--biz", f"scale{i % 50}", "--connections", str(per_edge),
                   "--rate", str(max(1, a.rate // edges)), "--hold", f"{a.hold + 3600}s", "--prefix", f"s{i}", "--sources", src]
            lgs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=nofile))
        for p in lgs:
            for line in p.stderr:
                if line.startswith("READY"): break
        connected_s = time.time() - t0
        time.sleep(5)
        after = {k: [rss(p.pid) for p in ps] for k, ps in kinds.items()}
        # What each edge really holds (a connect can fail under the storm).
        held = [int(metric(p, "switchboard_connections") or 0) for p in edge_ports]
        total = sum(held)
        entries = [metric(p, "switchboard_presence_entries") for p in router_ports]
        owned = []
        for i in range(2):
            log = open(os.path.join(d, f"router{i}.log")).read()
            acq = len(re.findall(r"partition acquired partition=", log)) // 2
            rel = len(re.findall(r"partition released partition=", log))
            owned.append(acq - rel)
        report = {
            "connections": total, "offered": per_edge * edges, "edges": edges, "seconds_to_connect_all": round(connected_s, 1),
            "edge_bytes_per_conn": [round((after["edge"][i] - before["edge"][i]) / max(held[i], 1)) for i in range(edges)],
            "router_bytes_per_conn": [round((after["router"][i] - before["router"][i]) / max(entries[i] or 1, 1)) for i in range(2)],
            "nats_bytes_per_conn": [round((after["nats"][i] - before["nats"][i]) / total) for i in range(3)],
            "router_rss_mib": [round(after["router"][i] / 2**20) for i in range(2)],
            "nats_rss_mib": [round(after["nats"][i] / 2**20) for i in range(3)],
            "edge_rss_mib_median": sorted(round(x / 2**20) for x in after["edge"])[edges // 2],
            "router_index_entries": entries, "router_partitions_owned": owned,
        }
        print(json.dumps(report, indent=1))
        time.sleep(a.hold)
    finally:
        for p in lgs: p.send_signal(signal.SIGKILL)
        for p in lgs: p.wait()
        for p in procs: p.send_signal(signal.SIGKILL)
        for p in procs: p.wait()
        if os.environ.get("SB_SCALE_KEEP"): print(f"logs in {d}", file=sys.stderr)
        else: shutil.rmtree(d, ignore_errors=True)

if __name__ == "__main__":
    main()
