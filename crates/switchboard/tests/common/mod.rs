//! Shared set-up for the process tests: a real NATS, our real binary as
//! routers and edges (or standalone), real WebSocket clients.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::collections::BTreeMap;
use std::path::Path;

pub mod fleet;

pub use serde_json::{json, Value};
pub use switchboard_testkit::{
    cluster_url, eventually, free_port, http_get, http_post, wait_ready, NatsServer, Nginx, Proc, Ws, ADMIN_USER,
    EDGE_USER, ROUTER_USER,
};

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_switchboard"))
}

/// The API key every test process accepts.
pub const API_KEY: &str = "test-api-key-0123456789abcdef";

fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("SWITCHBOARD_API_KEY".into(), API_KEY.into());
    env.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

/// Calls `POST /api/websocket/<call>` on `addr` as tenant `biz` with the
/// test API key; returns (status, JSON body).
pub async fn api(addr: &str, biz: &str, call: &str, body: Value) -> (u16, Value) {
    api_as(API_KEY, addr, biz, call, body).await
}

/// [`api`] with another API key.
pub async fn api_as(key: &str, addr: &str, biz: &str, call: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    api_with(
        addr,
        call,
        &[("systemId", biz), ("Authorization", &auth)],
        &body.to_string(),
    )
    .await
}

/// Calls the API with exactly these headers and this raw body.
pub async fn api_with(addr: &str, call: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let (status, text) = switchboard_testkit::http_post(addr, &format!("/api/websocket/{call}"), headers, body)
        .await
        .unwrap_or_else(|e| panic!("POST {call} to {addr}: {e}"));
    let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
    (status, v)
}

/// A NATS server, routers and edges, all real processes.
pub struct Cluster {
    pub nats: NatsServer,
    pub routers: Vec<Proc>,
    pub router_ports: Vec<u16>,
    pub edges: Vec<Proc>,
    pub edge_ports: Vec<u16>,
    /// Processes replaced by [`Cluster::replace_edge`].
    pub retired: Vec<Proc>,
    env: BTreeMap<String, String>,
}

impl Cluster {
    /// Starts NATS, `routers` routers and `edges` edges with `extra` env,
    /// and waits until every process is ready.
    pub async fn start(edges: usize, routers: usize, extra: &[(&str, &str)]) -> Self {
        // NATS runs as the Helm chart runs it: edges and routers log in as
        // their own users with the chart's least-privilege permissions.
        Self::on(NatsServer::start_secured(), edges, routers, extra).await
    }

    /// [`Cluster::start`] on a NATS server already running.
    pub async fn on(nats: NatsServer, edges: usize, routers: usize, extra: &[(&str, &str)]) -> Self {
        let mut env = env_of(extra);
        // A test may name several servers (a NATS cluster).
        env.entry("SWITCHBOARD_NATS__URL".into()).or_insert_with(|| nats.url());
        let mut c = Self {
            nats,
            routers: Vec::new(),
            router_ports: Vec::new(),
            edges: Vec::new(),
            edge_ports: Vec::new(),
            retired: Vec::new(),
            env,
        };
        for _ in 0..routers {
            c.add_router().await;
        }
        for _ in 0..edges {
            c.add_edge().await;
        }
        c
    }

    pub async fn add_router(&mut self) -> usize {
        self.add_router_with(&[]).await
    }

    /// [`Cluster::add_router`] with `extra` env for this router only (e.g.
    /// its own NATS URL).
    pub async fn add_router_with(&mut self, extra: &[(&str, &str)]) -> usize {
        let port = free_port();
        let mut env = self.env.clone();
        env.extend(self.nats.env_for(ROUTER_USER));
        // The URL the test chose (several servers of a NATS cluster).
        env.insert(
            "SWITCHBOARD_NATS__URL".into(),
            self.env["SWITCHBOARD_NATS__URL"].clone(),
        );
        env.insert("SWITCHBOARD_ROUTER__LISTEN".into(), format!("127.0.0.1:{port}"));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let i = self.routers.len();
        let p = Proc::spawn(&format!("router{}", i + 1), bin(), &["router"], &env);
        wait_ready(&format!("127.0.0.1:{port}")).await;
        self.routers.push(p);
        self.router_ports.push(port);
        i
    }

    pub async fn add_edge(&mut self) -> usize {
        self.add_edge_with(&[]).await
    }

    /// [`Cluster::add_edge`] with `extra` env for this edge only (e.g. its
    /// own NATS URL).
    pub async fn add_edge_with(&mut self, extra: &[(&str, &str)]) -> usize {
        let port = free_port();
        let i = self.edges.len();
        let p = self.spawn_edge(i, port, extra);
        wait_ready(&format!("127.0.0.1:{port}")).await;
        self.edges.push(p);
        self.edge_ports.push(port);
        i
    }

    fn spawn_edge(&self, i: usize, port: u16, extra: &[(&str, &str)]) -> Proc {
        let mut env = self.env.clone();
        env.extend(self.nats.env_for(EDGE_USER));
        env.insert(
            "SWITCHBOARD_NATS__URL".into(),
            self.env["SWITCHBOARD_NATS__URL"].clone(),
        );
        env.insert("SWITCHBOARD_EDGE__LISTEN".into(), format!("127.0.0.1:{port}"));
        env.insert("SWITCHBOARD_EDGE__NODE_NAME".into(), format!("edge{}", i + 1));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Proc::spawn(&format!("edge{}", i + 1), bin(), &["edge"], &env)
    }

    /// Replaces edge `i` as a rolling update does: SIGTERM (it drains and
    /// exits), then a new edge process on the same port (so a load
    /// balancer in front needs no change), ready. The old process's log is
    /// kept in `retired` (printed if the test fails). Returns the old
    /// process's exit status.
    pub async fn replace_edge(
        &mut self,
        i: usize,
        exit_patience: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        self.edges[i].signal("TERM");
        // Polled, so the test's other tasks run meanwhile.
        let deadline = std::time::Instant::now() + exit_patience;
        let status = loop {
            if let Some(status) = self.edges[i].wait_exit(std::time::Duration::ZERO) {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let port = self.edge_ports[i];
        // The port is free once the old process is gone.
        let p = self.spawn_edge(i, port, &[]);
        wait_ready(&format!("127.0.0.1:{port}")).await;
        let old = std::mem::replace(&mut self.edges[i], p);
        self.retired.push(old);
        status
    }

    /// `ws://127.0.0.1:<port of edge i>/ws?<query>`.
    pub fn url(&self, edge: usize, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?{query}", self.edge_ports[edge])
    }

    pub fn edge_addr(&self, edge: usize) -> String {
        format!("127.0.0.1:{}", self.edge_ports[edge])
    }

    pub fn router_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.router_ports[i])
    }
}

/// Every process of a cluster test ran with the chart's NATS permissions:
/// none of them may have been denied a publish or subscribe.
impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for p in self.routers.iter().chain(&self.edges).chain(&self.retired) {
            let log = p.log();
            if let Some(line) = log.lines().find(|l| l.contains("NATS denied a publish or subscribe")) {
                panic!("a process lacked a NATS permission: {line}");
            }
        }
    }
}

/// One `switchboard standalone` process.
pub struct Standalone {
    pub proc: Proc,
    pub port: u16,
}

impl Standalone {
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        Self::start_on(free_port(), extra).await
    }

    /// [`Standalone::start`] on `port` (chosen first, e.g. for an origin
    /// allow-list that names it).
    pub async fn start_on(port: u16, extra: &[(&str, &str)]) -> Self {
        let mut env = env_of(extra);
        env.insert("SWITCHBOARD_STANDALONE__LISTEN".into(), format!("127.0.0.1:{port}"));
        let proc = Proc::spawn("standalone", bin(), &["standalone"], &env);
        wait_ready(&format!("127.0.0.1:{port}")).await;
        Self { proc, port }
    }

    pub fn url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?{query}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Where clients connect: one base URL per "edge" (standalone repeats one).
#[derive(Clone)]
pub struct Target {
    pub bases: Vec<String>,
}

impl Target {
    pub fn cluster(c: &Cluster) -> Self {
        Self {
            bases: c.edge_ports.iter().map(|p| format!("ws://127.0.0.1:{p}/ws")).collect(),
        }
    }

    pub fn standalone(s: &Standalone, n: usize) -> Self {
        Self {
            bases: vec![format!("ws://127.0.0.1:{}/ws", s.port); n],
        }
    }

    pub fn url(&self, edge: usize, query: &str) -> String {
        format!("{}?{query}", self.bases[edge % self.bases.len()])
    }

    pub async fn join(&self, edge: usize, query: &str) -> (Ws, Value) {
        Ws::join(&self.url(edge, query)).await
    }
}

pub fn send_frame(mode: u64, msg_id: &str, extra: Value) -> Value {
    let mut v = json!({"mode": mode, "msgId": msg_id});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

/// Runs `program args` in `dir`; its output on failure.
pub fn run_in(dir: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program} (install Node.js >= 18 and npm: scripts/setup.sh): {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{program} {}` in {} failed ({}):\n{}\n{}",
        args.join(" "),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `npm ci` in `dir` unless its `node_modules` was installed from the
/// lockfile as it is now (npm ci's copy of it is kept as a stamp).
pub fn npm_ci(dir: &Path) -> Result<(), String> {
    let lock = std::fs::read(dir.join("package-lock.json")).map_err(|e| format!("package-lock.json: {e}"))?;
    let stamp = dir.join("node_modules/.package-lock-ci.json");
    if std::fs::read(&stamp).ok().as_deref() == Some(lock.as_slice()) {
        return Ok(());
    }
    run_in(dir, "npm", &["ci", "--no-audit", "--no-fund"])?;
    std::fs::write(&stamp, &lock).map_err(|e| format!("node_modules stamp: {e}"))
}

/// The node test files `paths` name, relative to `dir`: a file as given, a
/// directory's `*.test.mjs` files (not its subdirectories), sorted. Node
/// takes no directory from 21 on (its arguments became globs), so files
/// are always named.
fn node_test_files(dir: &Path, paths: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    for path in paths {
        let full = dir.join(path);
        if !full.is_dir() {
            files.push((*path).to_owned());
            continue;
        }
        let entries = std::fs::read_dir(&full).unwrap_or_else(|e| panic!("cannot list {}: {e}", full.display()));
        let mut found: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".test.mjs"))
            .map(|name| format!("{}/{name}", path.trim_end_matches('/')))
            .collect();
        assert!(!found.is_empty(), "no *.test.mjs in {}", full.display());
        found.sort();
        files.extend(found);
    }
    files
}

/// Runs `node --test` (the spec reporter) on the test files of `paths`
/// (see [`node_test_files`]) in `dir`, one file per run, one run at a time
/// (so it needs no `--test-concurrency`, which Node 18 lacks), with `env`
/// and the test API key in `SB_API_KEY`; prints each run's output and
/// panics if a test failed or all of them took longer than `patience`.
pub async fn run_node_tests(dir: &Path, paths: &[&str], env: &[(&str, String)], patience: std::time::Duration) {
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    for file in node_test_files(dir, paths) {
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg("--test")
            .arg("--test-reporter=spec")
            .arg(&file)
            .current_dir(dir)
            .env("SB_API_KEY", API_KEY)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let file_started = std::time::Instant::now();
        let left = patience.saturating_sub(started.elapsed());
        let out = match tokio::time::timeout(left, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => panic!("cannot run node (install Node.js >= 18: scripts/setup.sh): {e}"),
            Err(_) => panic!("node --test {paths:?} ran longer than {patience:?} (at {file})"),
        };
        // The spec reporter's lines: each test with its time, the
        // diagnostics, and the failures in full.
        eprintln!(
            "node --test {file} took {:?}:\n{}{}",
            file_started.elapsed(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            failed.push(file);
        }
    }
    assert!(failed.is_empty(), "node --test failed in {failed:?} (output above)");
}
