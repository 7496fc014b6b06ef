//! The JavaScript SDK (`clients/js`) against our real binary: the SDK is
//! built from its TypeScript (`npm ci` from the lockfile when
//! `node_modules` is missing or stale, then `npm run build`: tsc and the
//! esbuild bundle `dist/switchboard.js`), and its `node --test` suites run
//! against a `standalone` (plus one in JWT mode) and a local cluster (NATS,
//! a router, three edges, nginx). The processes are described to the node
//! tests in `SB_*` environment variables; the node tests kill (`kill -9`),
//! stop (`SIGSTOP`) and drain (`SIGTERM`) them by pid themselves, between
//! their own steps.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

/// The JWT secret of the JWT-mode standalone.
const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-sdk-test-secret";

/// How long one `node --test` run may take before it is killed.
const NODE_PATIENCE: Duration = Duration::from_secs(300);

/// One suite at a time: they kill and stop processes, and 1,000 clients of
/// the cluster suite are load enough for this machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js")
}

/// Runs `program args` in the SDK's directory; its output on failure.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(sdk_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program} (install Node.js >= 18 and npm: scripts/setup.sh): {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{program} {}` failed ({}):\n{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `npm ci` when `node_modules` does not match the lockfile, then the build.
/// Once per test binary.
fn build_sdk() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = sdk_dir();
        let lock = std::fs::read(dir.join("package-lock.json")).map_err(|e| format!("package-lock.json: {e}"))?;
        // npm ci copies the lockfile here; equal means installed from it.
        let installed = std::fs::read(dir.join("node_modules/.package-lock-ci.json")).ok();
        if installed.as_deref() != Some(lock.as_slice()) {
            run("npm", &["ci", "--no-audit", "--no-fund"])?;
            std::fs::write(dir.join("node_modules/.package-lock-ci.json"), &lock)
                .map_err(|e| format!("node_modules stamp: {e}"))?;
        }
        run("npm", &["run", "build"])
    })
}

/// Runs `node --test` on `paths` (relative to `clients/js`) with `env`;
/// panics with the output if a test failed.
async fn node_test(paths: &[&str], env: &[(&str, String)]) {
    if let Err(e) = build_sdk() {
        panic!("building the JS SDK: {e}");
    }
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("--test")
        .arg("--test-concurrency=1")
        .arg("--test-reporter=spec")
        .args(paths)
        .current_dir(sdk_dir())
        .env("SB_API_KEY", API_KEY)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(NODE_PATIENCE, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run node (install Node.js >= 18: scripts/setup.sh): {e}"),
        Err(_) => panic!("node --test {paths:?} ran longer than {NODE_PATIENCE:?}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The spec reporter's lines: each test with its time, the diagnostics
    // (the drain's attempts per second), and the failures in full.
    eprintln!("node --test {paths:?} took {:?}:\n{text}", started.elapsed());
    assert!(out.status.success(), "node --test {paths:?} failed (output above)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_against_standalone() {
    let _serial = SERIAL.lock().await;
    // A 1 s heartbeat, so heartbeats and the dead-connection timeout show
    // within a test.
    let s = Standalone::start(&[("SWITCHBOARD_EDGE__HEARTBEAT", "1s")]).await;
    let jwt = Standalone::start(&[
        ("SWITCHBOARD_AUTH__MODE", "jwt"),
        ("SWITCHBOARD_AUTH__SECRET", JWT_SECRET),
        ("SWITCHBOARD_AUTH__LEEWAY", "0s"),
    ])
    .await;
    let env = [
        ("SB_WS_URL", format!("ws://{}/ws", s.addr())),
        ("SB_API", format!("http://{}", s.addr())),
        ("SB_PID", s.proc.pid().to_string()),
        ("SB_JWT_WS_URL", format!("ws://{}/ws", jwt.addr())),
        ("SB_JWT_API", format!("http://{}", jwt.addr())),
        ("SB_JWT_SECRET", JWT_SECRET.to_owned()),
    ];
    node_test(&["test/unit/", "test/standalone/"], &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_against_a_cluster() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(3, 1, &[]).await;
    let nginx = Nginx::start(&c.edge_ports);
    let edges: Vec<Value> = (0..c.edges.len())
        .map(|i| {
            json!({
                "name": format!("edge{}", i + 1),
                "pid": c.edges[i].pid(),
                "url": format!("ws://{}/ws", c.edge_addr(i)),
            })
        })
        .collect();
    let env = [
        ("SB_WS_URL", format!("ws://127.0.0.1:{}/ws", nginx.port)),
        ("SB_API", format!("http://{}", c.router_addr(0))),
        ("SB_EDGES", Value::Array(edges).to_string()),
    ];
    node_test(&["test/cluster/"], &env).await;
}
