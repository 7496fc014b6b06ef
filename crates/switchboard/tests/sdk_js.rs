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
use std::sync::OnceLock;
use std::time::Duration;

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

/// `npm ci` when `node_modules` does not match the lockfile, then the build.
/// Once per test binary.
fn build_sdk() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = sdk_dir();
        npm_ci(&dir)?;
        run_in(&dir, "npm", &["run", "build"])
    })
}

/// Builds the SDK, then runs `node --test` on `paths` (relative to
/// `clients/js`) with `env`; panics with the output if a test failed.
async fn node_test(paths: &[&str], env: &[(&str, String)]) {
    if let Err(e) = build_sdk() {
        panic!("building the JS SDK: {e}");
    }
    run_node_tests(&sdk_dir(), paths, env, NODE_PATIENCE).await;
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
    // A drain window of 100 ms: a drained edge's 1012s come nearly at once,
    // so the herd test measures the SDK's jitter, not the edge's spreading.
    let c = Cluster::start(3, 1, &[("SWITCHBOARD_EDGE__DRAIN_WINDOW", "100ms")]).await;
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
