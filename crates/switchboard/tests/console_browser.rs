//! The web console (`/console`) in a real browser: headless Chromium
//! (Debian's `chromium`) driven by `playwright-core` (`clients/console`,
//! pinned in its lockfile; it downloads no browser) against our real
//! binary.
//!
//! - A cluster (NATS, a router, three edges; nginx in front of the first
//!   two): one browser context opens the client view through nginx,
//!   another on the third edge directly, and they chat (unicast, group,
//!   broadcast); the router's admin view shows both online, per group and
//!   per node, sends through the API and closes a client. nginx is stalled
//!   (`SIGSTOP`), the first client's edge killed (`kill -9`) and three
//!   messages sent to it; nginx goes on, and the page shows reconnecting →
//!   connected → recovered with the three messages.
//! - A standalone in JWT mode with an origin allow-list: the client view
//!   connects with a valid token, not with a forged one, and not from an
//!   origin the list does not name; a standalone with the console off
//!   answers 404.
//!
//! The node tests get the processes in `SB_*` variables and kill and stop
//! them by pid themselves. Screenshots of each step go to
//! `target/console-shots/`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

/// How long one `node --test` run may take before it is killed.
const NODE_PATIENCE: Duration = Duration::from_secs(150);

/// The JWT secret of the JWT-mode standalone.
const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-console-secret";

/// One browser at a time: each test's steps kill and stop processes, and
/// two browsers at once are too much for two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/console")
}

/// `target/console-shots`, emptied once per test binary.
fn shots_dir() -> PathBuf {
    static MADE: OnceLock<PathBuf> = OnceLock::new();
    MADE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../console-shots");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    })
    .clone()
}

/// Debian's Chromium (`SB_CHROMIUM` names another).
fn chromium() -> String {
    let path = std::env::var("SB_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "{path} not found: `apt-get install -y chromium` (or run scripts/setup.sh)"
    );
    path
}

/// Installs playwright-core from the lockfile when needed, then runs the
/// node test `file` with `env`.
async fn browser_test(file: &str, env: &[(&str, String)]) {
    let dir = tests_dir();
    if let Err(e) = npm_ci(&dir) {
        panic!("installing the console tests' packages: {e}");
    }
    let mut env = env.to_vec();
    env.push(("SB_CHROMIUM", chromium()));
    env.push(("SB_SHOTS", shots_dir().display().to_string()));
    run_node_tests(&dir, &[file], &env, NODE_PATIENCE).await;
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn token(secret: &str, client: &str) -> String {
    let claims = json!({"sub": client, "biz": "d1", "groups": ["room"], "exp": now() + 3600});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_on_a_cluster() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(
        3,
        1,
        &[
            ("SWITCHBOARD_EDGE__CONSOLE", "true"),
            ("SWITCHBOARD_ROUTER__CONSOLE", "true"),
        ],
    )
    .await;
    let nginx = Nginx::start(&c.edge_ports[..2]);
    let edges: Vec<Value> = (0..c.edges.len())
        .map(|i| {
            json!({
                "name": format!("edge{}", i + 1),
                "pid": c.edges[i].pid(),
                "http": format!("http://{}", c.edge_addr(i)),
            })
        })
        .collect();
    let env = [
        ("SB_NGINX", format!("http://127.0.0.1:{}", nginx.port)),
        ("SB_NGINX_GROUP", nginx.process_group().to_string()),
        ("SB_ROUTER", format!("http://{}", c.router_addr(0))),
        ("SB_EDGES", Value::Array(edges).to_string()),
    ];
    browser_test("test/cluster.test.mjs", &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_keeps_jwt_and_origin_checks() {
    let _serial = SERIAL.lock().await;
    // Ports first: the allow-list names the console's own origin.
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let _s = Standalone::start_on(
        port,
        &[
            ("SWITCHBOARD_AUTH__MODE", "jwt"),
            ("SWITCHBOARD_AUTH__SECRET", JWT_SECRET),
            ("SWITCHBOARD_EDGE__ALLOWED_ORIGINS", &format!("[\"{origin}\"]")),
        ],
    )
    .await;
    let off = Standalone::start(&[("SWITCHBOARD_STANDALONE__CONSOLE", "false")]).await;
    let (status, _) = http_get(&off.addr(), "/console/").await.unwrap_or_default();
    assert_eq!(status, 404, "standalone.console = false serves no console");
    let env = [
        ("SB_CONSOLE", format!("{origin}/console/")),
        // The same server under another origin (a name, not the address).
        ("SB_OTHER_ORIGIN_CONSOLE", format!("http://localhost:{port}/console/")),
        ("SB_TOKEN", token(JWT_SECRET, "alice")),
        (
            "SB_FORGED_TOKEN",
            token("another-secret-of-32-bytes-or-more!!", "alice"),
        ),
    ];
    browser_test("test/security.test.mjs", &env).await;
}
