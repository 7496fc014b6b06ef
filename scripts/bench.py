#!/usr/bin/env python3
"""Switchboard benchmark suite.

Starts a real cluster on 127.0.0.1 (nats-server, one router, two edges, all
release builds), runs the load generator scenarios with several loadgen
processes, samples the server processes' RSS and CPU (utime+stime from
/proc) around each scenario, and writes docs/benchmarks.md with the medians
of --runs runs, the exact commands and the machine.

    python3 scripts/bench.py                # full suite, 3 runs
    python3 scripts/bench.py --quick        # smaller, for a smoke check
"""
import argparse, json, os, platform, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SB_BIN") or os.path.join(ROOT, "target/release/switchboard")
LG = os.environ.get("SB_LOADGEN") or os.path.join(ROOT, "target/release/switchboard-loadgen")
KEY = "bench-key-0123456789abcdef"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

_next_port = [20000 + os.getpid() % 5000]
def free_port():
    """A port below the ephemeral range (outgoing connections cannot take it)."""
    while True:
        _next_port[0] += 1
        p = _next_port[0]
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p)); return p
        except OSError: continue
        finally: s.close()

def wait_http(port, path="/readyz", timeout=20):
    import urllib.request
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status == 200: return
        except Exception: time.sleep(0.05)
    raise RuntimeError(f"port {port} not ready")

def metric_mean_us(port, name):
    """Mean of a Prometheus histogram on an edge, in µs (None if absent)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    vals = {}
    for line in text.splitlines():
        for suffix in ("_sum", "_count"):
            if line.startswith(name + suffix + " "):
                vals[suffix] = float(line.split()[-1])
    if not vals.get("_count"): return None
    return vals["_sum"] / vals["_count"] * 1e6

def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK

def rss_bytes(pid):
    return int(open(f"/proc/{pid}/statm").read().split()[1]) * PAGE

class Cluster:
    def __init__(self, env_extra):
        self.dir = tempfile.mkdtemp(prefix="sb-bench-")
        self.procs = []
        self.nats_port = free_port()
        self.router_port = free_port()
        self.edge_ports = [free_port(), free_port()]
        self.nats = self.spawn("nats", ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.nats_port), "--store_dir", os.path.join(self.dir, "js")], {})
        t = time.time()
        while True:
            try: socket.create_connection(("127.0.0.1", self.nats_port), 0.2).close(); break
            except OSError:
                if time.time() - t > 10: raise
                time.sleep(0.05)
        env = {"SWITCHBOARD_NATS__URL": f"nats://127.0.0.1:{self.nats_port}", "SWITCHBOARD_API_KEY": KEY,
               "SWITCHBOARD_LOG__LEVEL": "warn", **env_extra}
        self.router = self.spawn("router", [BIN, "router"], {**env, "SWITCHBOARD_ROUTER__LISTEN": f"127.0.0.1:{self.router_port}"})
        wait_http(self.router_port)
        self.edges = []
        for i, p in enumerate(self.edge_ports):
            self.edges.append(self.spawn(f"edge{i+1}", [BIN, "edge"], {**env, "SWITCHBOARD_EDGE__LISTEN": f"127.0.0.1:{p}", "SWITCHBOARD_EDGE__NODE_NAME": f"edge{i+1}"}))
        for p in self.edge_ports: wait_http(p)

    def spawn(self, name, cmd, env):
        log = open(os.path.join(self.dir, name + ".log"), "w")
        p = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=log, preexec_fn=raise_nofile)
        self.procs.append(p); return p

    def targets(self):
        return ",".join(f"ws://127.0.0.1:{p}/ws" for p in self.edge_ports)

    def stop(self):
        for p in reversed(self.procs):
            p.send_signal(signal.SIGKILL)
        for p in self.procs: p.wait()
        if os.environ.get("SB_BENCH_KEEP"): print(f"  logs kept in {self.dir}", file=sys.stderr)
        else: shutil.rmtree(self.dir, ignore_errors=True)

def raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))

def loadgen(args, procs=1, wait_ready=None):
    """Runs `procs` loadgen processes with distinct prefixes and sources; returns their JSON reports."""
    ps = []
    for i in range(procs):
        src = ",".join(f"127.0.0.{2 + 4 * i + k}" for k in range(4))
        cmd = [LG] + args + ["--prefix", f"p{i}", "--sources", src]
        ps.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=raise_nofile))
    if wait_ready is not None:
        # idle: wait until every process printed READY, then let the caller sample.
        for p in ps:
            for line in p.stderr:
                if line.startswith("READY"): break
        wait_ready()
    return reports(ps)

def reports(ps):
    """Waits for loadgen processes; returns their JSON reports."""
    out = []
    for p in ps:
        so, se = p.communicate(timeout=900)
        line = [l for l in so.splitlines() if l.startswith("{")]
        if not line: raise RuntimeError(f"loadgen failed: {se[-2000:]}")
        out.append(json.loads(line[-1]))
    return out

def pct(d, k): return (d or {}).get(k)

def run_suite(a):
    base_env = {"SWITCHBOARD_EDGE__RATE_PER_SEC": "1000000", "SWITCHBOARD_EDGE__RATE_BURST": "1000000",
                "SWITCHBOARD_EDGE__HEARTBEAT": "600s", "SWITCHBOARD_ROUTER__PRESENCE_NOTICES": "off"}
    res = {}
    for name, section in SECTIONS:
        if a.only and name not in a.only: continue
        c = Cluster({**base_env, **SECTION_ENV.get(name, {})})
        try: section(a, c, res)
        finally: c.stop()
    return res

def idle_section(a, c, res):
    """Idle memory and CPU, connect rate."""
    t = c.targets()
    before = [rss_bytes(e.pid) for e in c.edges]
    n_per_proc = a.idle // a.procs
    sample = {}
    def at_ready():
        time.sleep(2)
        sample["rss"] = [rss_bytes(e.pid) for e in c.edges]
        cpu0 = [cpu_seconds(e.pid) for e in c.edges]; t0 = time.time()
        time.sleep(a.idle_window)
        cpu1 = [cpu_seconds(e.pid) for e in c.edges]; dt = time.time() - t0
        sample["idle_cpu_us_per_conn_s"] = sum(cpu1[i] - cpu0[i] for i in range(2)) / dt / a.idle * 1e6
    reps = loadgen(["idle", "--targets", t, "--biz", "idle", "--connections", str(n_per_proc), "--hold", f"{a.idle_window + 4}s"], a.procs, at_ready)
    conns = sum(r["connections"] for r in reps)
    per_edge = conns / 2
    res["mem_per_conn_kib"] = statistics.mean((sample["rss"][i] - before[i]) / per_edge / 1024 for i in range(2))
    res["idle_cpu_us"] = sample["idle_cpu_us_per_conn_s"]
    res["idle_conns"] = conns
    res["connect_rate"] = sum(r["connects_per_sec"] for r in reps)
    res["idle_failures"] = sum(r["failures"] for r in reps)

def rate_section(a, c, res):
    """Connect latency at a fixed rate (5k/s total)."""
    per = a.connect_rate // a.procs
    reps = loadgen(["idle", "--targets", c.targets(), "--biz", "rate", "--connections", str(per * a.connect_secs), "--rate", str(per), "--hold", "1s"], a.procs)
    res["connect_p99_ms_at_rate"] = max(pct(r["connect_to_welcome"], "p99_us") for r in reps) / 1000
    res["connect_p50_ms_at_rate"] = statistics.median(pct(r["connect_to_welcome"], "p50_us") for r in reps) / 1000
    res["connect_max_ms_at_rate"] = max(pct(r["connect_to_welcome"], "max_us") for r in reps) / 1000
    res["connect_seconds_at_rate"] = max(r["connect_seconds"] for r in reps)

def register(c, biz, history):
    """Registers `biz` with history on or off (SPEC §7) through the router's API."""
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{c.router_port}/api/websocket/register",
                                 data=json.dumps({"systemId": biz, "history": history}).encode(),
                                 headers={"Authorization": f"Bearer {KEY}", "systemId": biz, "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()

def messages_section(a, c, res):
    """Unicast at 1k/s, fan-out, broadcast, unicast throughput: one cluster,
    history off for these bizCodes (the figures before SPEC §7)."""
    for biz in ["uni", "fan", "fanq", "bc"] + [f"tp{r}" for r in a.tput_rates]:
        register(c, biz, False)
    t = c.targets()
    want = lambda name: not a.only_msg or name in a.only_msg
    if want("unicast"):
        u = loadgen(["unicast", "--targets", t, "--biz", "uni", "--pairs", "50", "--rate", "1000", "--duration", f"{a.secs}s"])[0]
        res["unicast"] = u["latency"]; res["unicast_lost"] = u["lost"] + (u["sent"] - u["accepted"])
        # The senders' edge: client send -> router's answer, through NATS.
        res["unicast_edge_rtt_us"] = metric_mean_us(c.edge_ports[0], "switchboard_send_duration_seconds")
    if want("fanout"):
        cpu0 = sum(cpu_seconds(e.pid) for e in c.edges)
        f = loadgen(["fanout", "--targets", t, "--biz", "fan", "--groups", str(a.groups), "--group-size", str(a.group_size), "--rate", str(a.fan_rate), "--duration", f"{a.secs}s"])[0]
        cpu1 = sum(cpu_seconds(e.pid) for e in c.edges)
        res["fanout_deliveries"] = f["deliveries"]; res["fanout_lost"] = f["lost"]
        # Coalesced: 16 members of a group send at once, so 16 frames queue
        # for every member and go out in one write.
        cpu2 = sum(cpu_seconds(e.pid) for e in c.edges)
        fq = loadgen(["fanout", "--targets", t, "--biz", "fanq", "--groups", str(a.groups), "--group-size", str(a.group_size), "--senders-per-group", "16", "--burst", "16", "--rate", str(a.fan_rate * 5), "--duration", f"{a.secs}s"])[0]
        cpu3 = sum(cpu_seconds(e.pid) for e in c.edges)
        res["fanout_queued_per_edge_cpu_s"] = fq["deliveries"] / max(cpu3 - cpu2, 1e-9)
        res["fanout_queued_lost"] = fq["lost"]
        res["fanout_per_edge_cpu_s"] = f["deliveries"] / max(cpu1 - cpu0, 1e-9)
        res["fanout_latency"] = f["latency"]
    if want("broadcast"):
        b = loadgen(["broadcast", "--targets", t, "--biz", "bc", "--clients", str(a.bc_clients), "--repetitions", str(a.bc_reps), "--rate", "12", "--connect-concurrency", "512"])[0]
        res["broadcast"] = b["time_to_last_delivery"]; res["broadcast_rate"] = b["broadcasts_per_sec"]; res["broadcast_incomplete"] = b["incomplete"]
    if want("tput"):
        import resource
        best = 0
        servers = {"nats": [c.nats], "router": [c.router], "edges": c.edges}
        for rate in a.tput_rates:
            cpu0 = {k: sum(cpu_seconds(p.pid) for p in ps) for k, ps in servers.items()}
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = loadgen(["unicast", "--targets", t, "--biz", f"tp{rate}", "--pairs", "200", "--rate", str(rate), "--duration", f"{max(3, a.secs // 2)}s"])[0]
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            ok = r["lost"] == 0 and r["accepted"] == r["sent"] and r["latency"] and r["latency"]["p99_us"] <= 10000
            print(f"  throughput {rate}/s: p99 {pct(r['latency'],'p99_us')} us lost {r['lost']} -> {'ok' if ok else 'over'}", file=sys.stderr)
            if ok:
                best = rate
                # CPU per routed message, per process kind (loadgen included:
                # it shares the cores), at the best rate that passed.
                per = {k: (sum(cpu_seconds(p.pid) for p in ps) - cpu0[k]) / r["sent"] * 1e6 for k, ps in servers.items()}
                per["loadgen"] = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / r["sent"] * 1e6
                res["tput_cpu_us_per_msg"] = per
            else: break
        res["unicast_tput"] = best

def churn_section(a, c, res):
    rss0 = [rss_bytes(e.pid) for e in c.edges]
    ch = loadgen(["churn", "--targets", c.targets(), "--biz", "churn", "--pool", str(a.churn_pool), "--rate", str(a.churn_rate), "--duration", f"{a.churn_secs}s", "--api", f"http://127.0.0.1:{c.router_port}", "--api-key", KEY])[0]
    rss1 = [rss_bytes(e.pid) for e in c.edges]
    res["churn_drift"] = ch["presence_drift"]; res["churn_connects"] = ch["connects"]
    res["churn_rss_growth_mib"] = (sum(rss1) - sum(rss0)) / 2**20
    res["churn_failures"] = ch["failures"]

def listen_overflows():
    """The kernel's count of connections dropped by a full accept queue (all sockets)."""
    try: out = subprocess.run(["nstat", "-az", "TcpExtListenOverflows"], capture_output=True, text=True).stdout
    except OSError: return None
    for line in out.splitlines():
        if line.startswith("TcpExtListenOverflows"): return int(line.split()[1])
    return None

def storm_section(a, c, res):
    """An edge killed under its clients: they reconnect to the other edge."""
    overflows0 = listen_overflows()
    e1, e2 = (f"ws://127.0.0.1:{p}/ws" for p in c.edge_ports)
    # Edge 1 is listed twice: it gets two thirds of the clients (the
    # storm), edge 2 the rest and every reconnect.
    st = loadgen(["storm", "--targets", f"{e1},{e1},{e2}", "--biz", "storm", "--clients", str(a.storm_clients),
                  "--kill", f"kill -9 {c.edges[0].pid}", "--backoff-base", a.storm_backoff,
                  "--api", f"http://127.0.0.1:{c.router_port}", "--api-key", KEY])[0]
    res["storm_dropped"] = st["dropped_clients"]
    res["storm_registered_ms"] = st["all_registered_after_first_attempt_ms"]
    res["storm_reachable_ms"] = st["all_reachable_after_first_attempt_ms"]
    res["storm_own_max_ms"] = pct(st["own_first_attempt_to_reachable"], "max_us") / 1000
    res["storm_connect_p99_ms"] = pct(st["reconnect_connect_to_welcome"], "p99_us") / 1000
    res["storm_failed_attempts"] = st["attempts_refused"] + st["attempts_timed_out"] + st["attempts_failed_otherwise"]
    if st.get("first_other_failure"): res["storm_first_failure"] = st["first_other_failure"][:200]
    res["storm_drift"] = st["presence_drift"]
    res["storm_probes_lost"] = st["probes_lost"]
    res["storm_problems"] = st["problems"]
    overflows1 = listen_overflows()
    # Machine-wide: other work on the box counts too.
    res["storm_listen_overflows"] = None if overflows0 is None or overflows1 is None else overflows1 - overflows0

def history_section(a, c, res):
    """The same message scenarios with history on (SPEC §7: every send
    appended to the partition log in JetStream before it is acknowledged),
    and a recovery: a client that missed 1,000 entries reconnects with
    `recover`; time from the upgrade request to its last replayed frame."""
    t = c.targets()
    u = loadgen(["unicast", "--targets", t, "--biz", "huni", "--pairs", "50", "--rate", "1000", "--duration", f"{a.secs}s"])[0]
    res["h_unicast"] = u["latency"]; res["h_unicast_lost"] = u["lost"] + (u["sent"] - u["accepted"])
    cpu0 = sum(cpu_seconds(e.pid) for e in c.edges)
    f = loadgen(["fanout", "--targets", t, "--biz", "hfan", "--groups", str(a.groups), "--group-size", str(a.group_size), "--rate", str(a.fan_rate), "--duration", f"{a.secs}s"])[0]
    cpu1 = sum(cpu_seconds(e.pid) for e in c.edges)
    res["h_fanout_per_edge_cpu_s"] = f["deliveries"] / max(cpu1 - cpu0, 1e-9); res["h_fanout_lost"] = f["lost"]
    b = loadgen(["broadcast", "--targets", t, "--biz", "hbc", "--clients", str(a.bc_clients), "--repetitions", str(a.bc_reps), "--rate", "12", "--connect-concurrency", "512"])[0]
    res["h_broadcast"] = b["time_to_last_delivery"]; res["h_broadcast_incomplete"] = b["incomplete"]
    best = 0
    servers = {"nats": [c.nats], "router": [c.router], "edges": c.edges}
    for rate in a.tput_rates:
        cpu0 = {k: sum(cpu_seconds(p.pid) for p in ps) for k, ps in servers.items()}
        r = loadgen(["unicast", "--targets", t, "--biz", f"htp{rate}", "--pairs", "200", "--rate", str(rate), "--duration", f"{max(3, a.secs // 2)}s"])[0]
        ok = r["lost"] == 0 and r["accepted"] == r["sent"] and r["latency"] and r["latency"]["p99_us"] <= 10000
        print(f"  history on, throughput {rate}/s: p99 {pct(r['latency'],'p99_us')} us lost {r['lost']} -> {'ok' if ok else 'over'}", file=sys.stderr)
        if ok:
            best = rate
            res["h_tput_cpu_us_per_msg"] = {k: (sum(cpu_seconds(p.pid) for p in ps) - cpu0[k]) / r["sent"] * 1e6 for k, ps in servers.items()}
        else: break
    res["h_unicast_tput"] = best
    res["h_recovery_ms"] = recovery_time_ms(c, 1000)

def recovery_time_ms(c, missed):
    """A client leaves, `missed` unicasts are sent to it through the API, it
    comes back with `recover`: ms from the upgrade request to the last
    replayed frame (a Python client: its own parsing is included)."""
    import asyncio, urllib.request
    import websockets
    url = f"ws://127.0.0.1:{c.edge_ports[1]}/ws?bizCode=hrec&clientId=back"
    def send(i):
        req = urllib.request.Request(f"http://127.0.0.1:{c.router_port}/api/websocket/send_to_client",
                                     data=json.dumps({"clientId": "back", "data": i}).encode(),
                                     headers={"Authorization": f"Bearer {KEY}", "systemId": "hrec", "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()
    async def run():
        ws = await websockets.connect(url)
        w = json.loads(await ws.recv())["data"]
        await ws.close()
        await asyncio.sleep(0.3)
        for i in range(missed): send(i)
        t0 = time.perf_counter()
        ws = await websockets.connect(url + f"&recover={w['seq']}&epoch={w['epoch']}", max_size=None)
        welcome = json.loads(await ws.recv())
        assert welcome["data"].get("recovered") is True, welcome
        n = 0
        while n < missed:
            json.loads(await ws.recv()); n += 1
        took = (time.perf_counter() - t0) * 1000
        await ws.close()
        return took
    return asyncio.run(run())

def tenants_section(a, c, res):
    """A noisy tenant (per-bizCode limits): the quiet tenant's unicast latency
    (50 pairs across the two edges, 1k msg/s) alone, next to a tenant
    flooding at 5k sends/s (SB_BENCH_FLOOD_RATE) over its own sends limit
    (set_limits: 1,000/s per edge, the rest refused with 1005 at the edge),
    and next to the same flood with no limit; the servers' CPU in each. At
    20k/s on 2 cores the flooding load generator itself saturates the
    machine and the quiet p99 says more about it than about the gateway."""
    import urllib.request
    def set_limits(biz, limits):
        req = urllib.request.Request(f"http://127.0.0.1:{c.router_port}/api/websocket/set_limits", data=json.dumps(limits).encode(),
                                     headers={"Authorization": f"Bearer {KEY}", "systemId": biz, "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()
    t, secs = c.targets(), f"{a.secs}s"
    quiet = lambda biz: [LG, "unicast", "--targets", t, "--biz", biz, "--pairs", "50", "--rate", "1000", "--duration", secs, "--prefix", "q", "--sources", "127.0.0.2,127.0.0.3"]
    rate = os.environ.get("SB_BENCH_FLOOD_RATE", "5000")
    flood = lambda biz: [LG, "unicast", "--targets", t, "--biz", biz, "--pairs", "50", "--rate", rate, "--duration", secs, "--prefix", "n", "--sources", "127.0.0.6,127.0.0.7"]
    servers = [c.nats, c.router] + c.edges
    def together(*cmds):
        cpu0 = sum(cpu_seconds(p.pid) for p in servers)
        ps = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=raise_nofile) for cmd in cmds]
        out = reports(ps)
        out[0]["server_cpu_s"] = sum(cpu_seconds(p.pid) for p in servers) - cpu0
        return out
    set_limits("noisy", {"sendsPerSec": 1000})
    alone = together(quiet("quiet0"))[0]
    q1, n1 = together(quiet("quiet1"), flood("noisy"))
    q2, n2 = together(quiet("quiet2"), flood("loud"))
    res["tenants_quiet_alone"] = alone["latency"]; res["tenants_quiet_limited_flood"] = q1["latency"]; res["tenants_quiet_unlimited_flood"] = q2["latency"]
    res["tenants_quiet_errors"] = sum(r["send_errors"] + r["lost"] for r in [alone, q1, q2])
    res["tenants_flood_accepted"] = {"limited": n1["accepted"], "unlimited": n2["accepted"], "sent": n1["sent"]}
    res["tenants_server_cpu_s"] = {"alone": alone["server_cpu_s"], "limited": q1["server_cpu_s"], "unlimited": q2["server_cpu_s"]}
    print(f"  noisy tenant: quiet p99 {pct(alone['latency'], 'p99_us')} us alone, {pct(q1['latency'], 'p99_us')} us next to a limited flood "
          f"({n1['accepted']} of {n1['sent']} accepted), {pct(q2['latency'], 'p99_us')} us next to an unlimited one ({n2['accepted']} of {n2['sent']}); "
          f"quiet errors+lost {res['tenants_quiet_errors']}; server CPU-s {res['tenants_server_cpu_s']}", file=sys.stderr)

def slow_section(a, c, res):
    """A member that never reads next to fast ones: one group of 200 (history
    on), ~4 KiB group sends at 50/s, the 199 readers' delivery latency
    without and with the 200th member stalled (its send queue, 64 KiB
    here, overflows after the ~2.5 MB the kernel takes on loopback: 4008)."""
    t = c.targets()
    common = ["fanout", "--targets", t, "--groups", "1", "--group-size", "199", "--rate", "50", "--size", "4096", "--duration", f"{a.slow_secs}s"]
    base = loadgen(common + ["--biz", "slow0"])[0]
    slow = loadgen(common + ["--biz", "slow1", "--stalled", "1"])[0]
    res["slow_base_latency"] = base["latency"]; res["slow_latency"] = slow["latency"]
    res["slow_lost"] = base["lost"] + slow["lost"]
    res["slow_stalled_end"] = {k: slow.get(k) for k in ["stalled_closed_4008", "stalled_cut", "stalled_open", "stalled_closed_other"]}
    print(f"  slow consumer: readers' p99 {pct(base['latency'], 'p99_us')} us without, {pct(slow['latency'], 'p99_us')} us with; stalled member {res['slow_stalled_end']}", file=sys.stderr)

# Settings of one section's cluster on top of the suite's.
SECTION_ENV = {"slow": {"SWITCHBOARD_EDGE__SEND_QUEUE_BYTES": "65536"}}

SECTIONS = [("idle", idle_section), ("rate", rate_section), ("messages", messages_section), ("history", history_section), ("churn", churn_section), ("storm", storm_section), ("slow", slow_section)]
SECTIONS.append(("tenants", tenants_section))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/benchmarks.md"))
    ap.add_argument("--only", default="", help="comma-separated sections (idle,rate,messages,history,churn,storm,slow) or message scenarios (unicast,fanout,broadcast,tput); prints results, writes no table")
    ap.add_argument("--no-build", action="store_true", help="use the binaries as they are (SB_BIN, SB_LOADGEN)")
    a = ap.parse_args()
    only = [x for x in a.only.split(",") if x]
    msg = {"unicast", "fanout", "broadcast", "tput"}
    a.only_msg = [x for x in only if x in msg]
    a.only = sorted({("messages" if x in msg else x) for x in only})
    a.procs = 2
    if a.quick:
        a.idle, a.idle_window, a.connect_rate, a.connect_secs, a.secs = 2000, 3, 2000, 2, 3
        a.groups, a.group_size, a.fan_rate, a.bc_clients, a.bc_reps = 5, 50, 100, 500, 10
        a.tput_rates, a.churn_pool, a.churn_rate, a.churn_secs = [2000, 5000], 200, 200, 5
        a.storm_clients, a.storm_backoff = 1500, "1s"
        a.slow_secs = 10
    else:
        a.idle, a.idle_window, a.connect_rate, a.connect_secs, a.secs = 30000, 10, 5000, 4, 10
        a.groups, a.group_size, a.fan_rate, a.bc_clients, a.bc_reps = 10, 100, 200, 10000, 30
        a.tput_rates, a.churn_pool, a.churn_rate, a.churn_secs = [5000, 10000, 15000, 20000, 25000, 30000, 40000, 50000], 3000, 3000, 60
        a.storm_clients, a.storm_backoff = 15000, "1s"
        a.slow_secs = 20
    if not a.no_build: subprocess.run(["cargo", "build", "--release", "-q", "-p", "switchboard", "-p", "switchboard-loadgen"], cwd=ROOT, check=True)
    runs = []
    for i in range(a.runs):
        print(f"== run {i+1}/{a.runs}", file=sys.stderr)
        r = run_suite(a); runs.append(r)
        print(json.dumps(r), file=sys.stderr)
    if not a.only: write(a, runs)

def med(runs, f):
    vals = [f(r) for r in runs]
    vals = [v for v in vals if v is not None]
    return (statistics.median(vals) if vals else None), vals

def fmt(v, unit="", nd=1):
    if v is None: return "n/a"
    if isinstance(v, float): return f"{v:,.{nd}f}{unit}"
    return f"{v:,}{unit}"

def write(a, runs):
    cpu = "unknown"
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"): cpu = l.split(":", 1)[1].strip(); break
    rows = []
    def row(metric, target, f, unit="", nd=1):
        m, vals = med(runs, f)
        rows.append(f"| {metric} | {target} | **{fmt(m, unit, nd)}** | {' / '.join(fmt(v, unit, nd) for v in vals)} |")
    row("memory per idle connection (edge RSS delta / conns per edge)", "≤ 6 KiB (stretch 4)", lambda r: r["mem_per_conn_kib"], " KiB", 2)
    row("idle CPU per connection", "≤ 1 µs/conn/s", lambda r: r["idle_cpu_us"], " µs/conn/s", 3)
    row(f"connect rate to welcome ({a.idle:,} conns, {a.procs} loadgens)", "≥ 10,000/s", lambda r: r["connect_rate"], "/s", 0)
    row(f"connect→welcome p99 at {a.connect_rate:,} offered connects/s", "≤ 50 ms", lambda r: r["connect_p99_ms_at_rate"], " ms", 1)
    row("unicast across two edges at 1k msg/s: p50", "≤ 250 µs", lambda r: pct(r["unicast"], "p50_us"), " µs", 0)
    row("… p99", "≤ 1 ms", lambda r: pct(r["unicast"], "p99_us"), " µs", 0)
    row("… p99.9", "≤ 5 ms", lambda r: pct(r["unicast"], "p999_us"), " µs", 0)
    row("… of which the sending edge's round trip to a router and back over NATS (mean)", "", lambda r: r.get("unicast_edge_rtt_us"), " µs", 0)
    row(f"group fan-out ({a.groups}×{a.group_size}, {a.fan_rate} sends/s): deliveries per edge CPU-second", "≥ 150k (≥ 500k coalesced)", lambda r: r["fanout_per_edge_cpu_s"], "", 0)
    row(f"… same at {a.fan_rate * 5} sends/s in bursts of 16 (16 members of a group send at once: frames queue up, writes coalesce)", "≥ 500k", lambda r: r["fanout_queued_per_edge_cpu_s"], "", 0)
    row(f"broadcast to {a.bc_clients:,} clients over 2 edges: time to last delivery p50", "≤ 75 ms", lambda r: pct(r["broadcast"], "p50_us") and pct(r["broadcast"], "p50_us") / 1000, " ms", 1)
    row("… p99", "≤ 150 ms", lambda r: pct(r["broadcast"], "p99_us") and pct(r["broadcast"], "p99_us") / 1000, " ms", 1)
    row("… broadcasts/s sustained", "≥ 10/s", lambda r: r["broadcast_rate"], "/s", 1)
    row("routed unicast throughput with p99 ≤ 10 ms, no loss", "≥ 50k msg/s", lambda r: r["unicast_tput"], " msg/s", 0)
    row("… CPU per routed message at that rate, all processes (loadgen + edges + nats + router)", "≤ 40 µs (2 cores / 50k)", lambda r: r.get("tput_cpu_us_per_msg") and sum(r["tput_cpu_us_per_msg"].values()), " µs", 0)
    for k in ["loadgen", "edges", "nats", "router"]:
        row(f"… of which {k}", "", lambda r, k=k: r.get("tput_cpu_us_per_msg") and r["tput_cpu_us_per_msg"][k], " µs", 0)
    row("history on (SPEC §7): unicast across two edges at 1k msg/s: p50", "≤ append floor + 0.3 ms", lambda r: pct(r.get("h_unicast"), "p50_us"), " µs", 0)
    row("… p99", "", lambda r: pct(r.get("h_unicast"), "p99_us"), " µs", 0)
    row(f"… group fan-out ({a.groups}×{a.group_size}, {a.fan_rate} sends/s): deliveries per edge CPU-second", "", lambda r: r.get("h_fanout_per_edge_cpu_s"), "", 0)
    row(f"… broadcast to {a.bc_clients:,} clients: time to last delivery p50", "", lambda r: pct(r.get("h_broadcast"), "p50_us") and pct(r.get("h_broadcast"), "p50_us") / 1000, " ms", 1)
    row("… routed unicast throughput with p99 ≤ 10 ms, no loss", "≥ 70 % of history off", lambda r: r.get("h_unicast_tput"), " msg/s", 0)
    row("… recovery: a client that missed 1,000 entries, upgrade → last replayed frame (Python client)", "≤ 50 ms", lambda r: r.get("h_recovery_ms"), " ms", 1)
    row(f"churn {a.churn_rate:,} connects/s + {a.churn_rate:,} disconnects/s for {a.churn_secs}s: presence drift", "0", lambda r: r["churn_drift"], "", 0)
    row("… edge RSS growth over the churn", "flat", lambda r: r["churn_rss_growth_mib"], " MiB", 1)
    storm = a.storm_clients * 2 // 3
    row(f"storm: {storm:,} clients of a killed edge reconnect (full-jitter backoff, base {a.storm_backoff}): all registered, from the first reconnect attempt", "", lambda r: r["storm_registered_ms"], " ms", 0)
    row("… all reachable again (an API probe arrived), from the first reconnect attempt", "≤ 5 s", lambda r: r["storm_reachable_ms"], " ms", 0)
    row("… slowest client, its own first attempt → reachable", "≤ 5 s", lambda r: r["storm_own_max_ms"], " ms", 0)
    row("… connect→welcome p99 of the reconnects", "", lambda r: r["storm_connect_p99_ms"], " ms", 1)
    row("… failed reconnect attempts", "", lambda r: r["storm_failed_attempts"], "", 0)
    row("… presence drift after the dead edge is purged", "0", lambda r: r["storm_drift"], "", 0)
    row("… listen queue overflows during the storm (nstat, machine-wide; each a 1 s SYN retry)", "0", lambda r: r.get("storm_listen_overflows"), "", 0)
    losses = sum(r["unicast_lost"] + r["fanout_lost"] + r["fanout_queued_lost"] + r["broadcast_incomplete"] + r["idle_failures"] + r["churn_failures"] for r in runs)
    cmd = "python3 scripts/bench.py" + (" --quick" if a.quick else "") + (f" --runs {a.runs}" if a.runs != 3 else "")
    text = f"""# Benchmarks

Measured with `{cmd}` on {time.strftime('%Y-%m-%d')}: medians of {a.runs} runs
(each run's value after the bold median). Everything ran on one machine:
{os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB,
{platform.system()} {platform.release()}, loopback only. nats-server, one
router, two edges (release builds) and {a.procs} load generator processes
share those {os.cpu_count()} cores, so latency figures include the load
generator's own CPU contention.

Set-up per scenario: a fresh cluster (`nats-server -js`, `switchboard router`,
two `switchboard edge`), rate limits raised
(`SWITCHBOARD_EDGE__RATE_PER_SEC=1000000`), presence notices off, heartbeat
600 s. Memory is the edges' RSS delta divided by the connections each edge
holds; CPU is utime+stime from `/proc/<pid>/stat` over the measured window.
Loss across all runs: {losses} (accepted-but-undelivered unicasts and
fan-out deliveries + incomplete broadcasts + failed connects); storm probes
the API counted as delivered that never arrived: {sum(r.get("storm_probes_lost", 0) for r in runs)}. The load
generator compares deliveries with what the gateway acknowledged (mode-2
replies and their `recipients`); sends it could not get accepted in time
under overload are reported as saturation, not as loss.

| metric | target | median | runs |
|---|---|---|---|
""" + "\n".join(rows) + f"""

Commands the suite runs (per run; `T` = both edges' ws URLs, each loadgen
process gets its own `--prefix` and four 127.0.0.x `--sources`):

```
switchboard-loadgen idle --targets T --connections {a.idle // a.procs} --hold {a.idle_window + 4}s        # ×{a.procs}
switchboard-loadgen idle --targets T --connections {a.connect_rate // a.procs * a.connect_secs} --rate {a.connect_rate // a.procs}   # ×{a.procs}
switchboard-loadgen unicast --targets T --pairs 50 --rate 1000 --duration {a.secs}s
switchboard-loadgen fanout --targets T --groups {a.groups} --group-size {a.group_size} --rate {a.fan_rate} --duration {a.secs}s
switchboard-loadgen fanout --targets T --groups {a.groups} --group-size {a.group_size} --senders-per-group 16 --burst 16 --rate {a.fan_rate * 5} --duration {a.secs}s
switchboard-loadgen broadcast --targets T --clients {a.bc_clients} --repetitions {a.bc_reps} --rate 12
switchboard-loadgen unicast --targets T --pairs 200 --rate R --duration {max(3, a.secs // 2)}s   # R in {a.tput_rates}, until p99 > 10 ms
switchboard-loadgen churn --targets T --pool {a.churn_pool} --rate {a.churn_rate} --duration {a.churn_secs}s --api http://127.0.0.1:ROUTER
switchboard-loadgen storm --targets E1,E1,E2 --clients {a.storm_clients} --kill "kill -9 EDGE1" --backoff-base {a.storm_backoff} --api http://127.0.0.1:ROUTER
```

Raw results (one JSON object per run):

```
""" + "\n".join(json.dumps(r) for r in runs) + "\n```\n"
    open(a.out, "w").write(text)
    print(text)

if __name__ == "__main__":
    main()
