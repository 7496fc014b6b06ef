//! A noisy tenant: each bizCode's own limits on every edge (`set_limits`:
//! connections, sends/s), off by default and set only with a global API
//! key, and the API's rate limit per key and bizCode (SPEC §3: 429/1005).
//! The noisy bizCode is refused (429 + `Retry-After` on the handshake,
//! 1005 on sends) while the quiet one's sends all succeed; limits apply
//! per edge on a cluster, and a change takes effect within seconds.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A global key (the operator's) next to the test key, and a key scoped to
/// the noisy bizCode (its backend's).
const SCOPED_KEY: &str = "noisy-backend-key-0123456789";

/// Fast limit refreshes, and per-connection limits out of the way: every
/// refusal here is a bizCode's.
const ENV: &[(&str, &str)] = &[
    ("SWITCHBOARD_EDGE__BIZ_LIMITS_REFRESH", "300ms"),
    ("SWITCHBOARD_EDGE__RATE_PER_SEC", "100000"),
    ("SWITCHBOARD_EDGE__RATE_BURST", "100000"),
    (
        "SWITCHBOARD_API__KEYS",
        r#"[{"key":"noisy-backend-key-0123456789","biz_codes":["noisy"]}]"#,
    ),
];

/// How long a limit change may take to reach the edges (refresh + the
/// routers' cache, with room for a loaded machine).
const TAKES_EFFECT: Duration = Duration::from_secs(5);

/// Sends one raw HTTP/1.1 request and reads the answer's head (lowercased)
/// and body.
async fn raw(addr: &str, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return (head, body);
            }
        }
        assert!(Instant::now() < deadline, "no whole answer to {request}");
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => panic!("connection ended before the answer: {}", String::from_utf8_lossy(&buf)),
        }
    }
}

/// The answer to a WebSocket handshake for `query` (head, body).
async fn handshake(addr: &str, query: &str) -> (String, String) {
    let req = format!(
        "GET /ws?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    raw(addr, &req).await
}

/// Asserts a refusal is 429 with `Retry-After` and a `{code: 1005, msg}` body.
fn assert_429(head: &str, body: &str) {
    assert!(head.starts_with("http/1.1 429"), "{head}");
    assert!(
        head.lines().any(|l| l.starts_with("retry-after:")),
        "no Retry-After: {head}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(v["code"], 1005, "{body}");
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// A counter's value in a process's `/metrics` (0 when absent).
async fn metric(addr: &str, series: &str) -> u64 {
    let (_, text) = http_get(addr, "/metrics").await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok()))
        .map_or(0, |v| v as u64)
}

async fn set_limits(api_addr: &str, biz: &str, body: Value) -> Value {
    let (status, v) = api(api_addr, biz, "set_limits", body).await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

/// Pipelines `n` unicasts to `target` and reads their replies' codes.
async fn flood(ws: &mut Ws, target: &str, n: usize) -> Vec<u64> {
    for i in 0..n {
        let f = send_frame(100, &format!("f{i}"), json!({"targetClientId": target, "content": i}));
        ws.send(&f).await;
    }
    let mut codes = Vec::with_capacity(n);
    for _ in 0..n {
        codes.push(ws.recv_mode(2).await["code"].as_u64().unwrap_or(u64::MAX));
    }
    codes
}

/// The quiet tenant: `n` unicasts from `a` to `b`, one at a time; every
/// reply must be code 0 and every message delivered, in order.
async fn quiet_sends(a: &mut Ws, b: &mut Ws, n: usize) {
    for i in 0..n {
        let f = send_frame(100, &format!("q{i}"), json!({"targetClientId": "q2", "content": i}));
        a.send(&f).await;
        let r = a.recv_mode(2).await;
        assert_eq!(
            (r["code"].clone(), r["data"]["recipients"].clone()),
            (json!(0), json!(1)),
            "{r}"
        );
    }
    for i in 0..n {
        assert_eq!(b.recv_mode(100).await["content"], i, "quiet delivery {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_tenant_is_refused_and_the_quiet_one_is_not_disturbed() {
    let s = Standalone::start(ENV).await;
    let addr = s.addr();

    // Off by default: no limits stored, many connections and sends pass.
    let (status, v) = api(&addr, "calm", "get_limits", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"],
        json!({"maxConnections": 0, "sendsPerSec": 0, "sendsBurst": 0})
    );
    let mut calm = Vec::new();
    for i in 0..5 {
        calm.push(Ws::join(&s.url(&format!("bizCode=calm&clientId=c{i}"))).await.0);
    }
    let codes = flood(&mut calm[0], "c1", 200).await;
    assert!(codes.iter().all(|&c| c == 0), "{codes:?}");

    // The noisy bizCode's own backend cannot raise (or set) its limits; it
    // may read them.
    let body = json!({"maxConnections": 1000000});
    let (status, v) = api_as(SCOPED_KEY, &addr, "noisy", "set_limits", body).await;
    assert_eq!((status, v["code"].clone()), (403, json!(403)), "{v}");
    let (status, _) = api_as(SCOPED_KEY, &addr, "noisy", "get_limits", json!({})).await;
    assert_eq!(status, 200);
    let (status, v) = api(&addr, "noisy", "set_limits", json!({"sendsBurst": 5})).await;
    assert_eq!((status, v["code"].clone()), (400, json!(1001)), "{v}");

    // The operator sets them.
    let set = set_limits(
        &addr,
        "noisy",
        json!({"maxConnections": 3, "sendsPerSec": 10, "sendsBurst": 10}),
    )
    .await;
    assert_eq!(set, json!({"maxConnections": 3, "sendsPerSec": 10, "sendsBurst": 10}));
    let (_, v) = api_as(SCOPED_KEY, &addr, "noisy", "get_limits", json!({})).await;
    assert_eq!(v["data"], set);

    // Connections: three, then 429 with Retry-After (the edge asks for the
    // limits of a bizCode new to it before the first handshake).
    let sink = eventually_joined(&s.url("bizCode=noisy&clientId=sink")).await;
    let (mut n1, _) = Ws::join(&s.url("bizCode=noisy&clientId=n1")).await;
    let (mut n2, _) = Ws::join(&s.url("bizCode=noisy&clientId=n2")).await;
    let (head, body) = handshake(&addr, "bizCode=noisy&clientId=n3").await;
    assert_429(&head, &body);

    // Sends: the two noisy connections share one bucket (10/s, burst 10),
    // while the quiet tenant sends away.
    let (mut q1, _) = Ws::join(&s.url("bizCode=quiet&clientId=q1")).await;
    let (mut q2, _) = Ws::join(&s.url("bizCode=quiet&clientId=q2")).await;
    let started = Instant::now();
    let noisy = tokio::spawn(async move {
        let a = flood(&mut n1, "sink", 150).await;
        let b = flood(&mut n2, "sink", 150).await;
        (n1, n2, [a, b].concat())
    });
    quiet_sends(&mut q1, &mut q2, 100).await;
    let (n1, mut n2, codes) = noisy.await.expect("flood");
    let secs = started.elapsed().as_secs_f64();
    let passed = codes.iter().filter(|&&c| c == 0).count();
    let refused = codes.iter().filter(|&&c| c == 1005).count();
    assert_eq!(passed + refused, codes.len(), "only 0 or 1005: {codes:?}");
    assert!(
        passed >= 10 && passed as f64 <= 10.0 + 10.0 * secs + 2.0,
        "{passed} passed in {secs:.2}s"
    );
    assert_eq!(
        metric(&addr, r#"switchboard_biz_limit_refusals_total{kind="sends"}"#).await,
        refused as u64
    );
    assert_eq!(
        metric(&addr, r#"switchboard_biz_limit_refusals_total{kind="connections"}"#).await,
        1
    );

    // Raised: a fourth connection gets in and sends pass, within seconds.
    let changed = Instant::now();
    set_limits(&addr, "noisy", json!({"maxConnections": 4})).await;
    let n4 = eventually_joined(&s.url("bizCode=noisy&clientId=n4")).await;
    let codes = flood(&mut n2, "sink", 50).await;
    assert!(codes.iter().all(|&c| c == 0), "{codes:?}");
    assert!(changed.elapsed() < TAKES_EFFECT, "took {:?}", changed.elapsed());
    let (head, body) = handshake(&addr, "bizCode=noisy&clientId=n5").await;
    assert_429(&head, &body);

    // Removed: every limit off again.
    let changed = Instant::now();
    let off = set_limits(&addr, "noisy", json!({"maxConnections": null, "sendsPerSec": 0})).await;
    assert_eq!(off, json!({"maxConnections": 0, "sendsPerSec": 0, "sendsBurst": 0}));
    let mut more = Vec::new();
    for i in 5..9 {
        more.push(eventually_joined(&s.url(&format!("bizCode=noisy&clientId=n{i}"))).await);
    }
    assert!(changed.elapsed() < TAKES_EFFECT, "took {:?}", changed.elapsed());
    drop((sink, n1, n4, more, calm));
}

/// Joins, trying again while the handshake is refused with 429 (a limit
/// change not yet seen by the edge), within patience.
async fn eventually_joined(url: &str) -> Ws {
    let deadline = Instant::now() + switchboard_testkit::patience();
    loop {
        match Ws::connect(url).await {
            Ok(mut ws) => {
                assert_eq!(ws.recv().await["mode"], 0, "welcome first");
                return ws;
            }
            Err((429, _)) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{url} refused: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_limits_apply_per_edge() {
    let c = Cluster::start(2, 1, ENV).await;
    let api_addr = c.router_addr(0);
    set_limits(
        &api_addr,
        "noisy",
        json!({"maxConnections": 2, "sendsPerSec": 2, "sendsBurst": 4}),
    )
    .await;

    // Two connections per edge, the third on each refused.
    let mut held = Vec::new();
    for edge in 0..2 {
        for i in 0..2 {
            held.push(
                Ws::join(&c.url(edge, &format!("bizCode=noisy&clientId=n{edge}{i}")))
                    .await
                    .0,
            );
        }
        let (head, body) = handshake(&c.edge_addr(edge), &format!("bizCode=noisy&clientId=x{edge}")).await;
        assert_429(&head, &body);
    }
    // Each edge has its own sends bucket: a burst of 4 on each.
    let (mut q1, _) = Ws::join(&c.url(0, "bizCode=quiet&clientId=q1")).await;
    let (mut q2, _) = Ws::join(&c.url(1, "bizCode=quiet&clientId=q2")).await;
    let mut on_edge1 = held.pop().expect("a noisy client on edge 2");
    let mut on_edge0 = held.swap_remove(0);
    let started = Instant::now();
    let noisy = tokio::spawn(async move {
        let a = flood(&mut on_edge0, "n10", 40).await;
        let b = flood(&mut on_edge1, "n01", 40).await;
        (on_edge0, on_edge1, a, b)
    });
    quiet_sends(&mut q1, &mut q2, 60).await;
    let (_a, _b, a, b) = noisy.await.expect("flood");
    let secs = started.elapsed().as_secs_f64();
    for codes in [&a, &b] {
        let passed = codes.iter().filter(|&&c| c == 0).count();
        assert!(codes.iter().all(|&c| c == 0 || c == 1005), "only 0 or 1005: {codes:?}");
        assert!(
            passed >= 4 && passed as f64 <= 4.0 + 2.0 * secs + 1.0,
            "{passed} passed in {secs:.2}s: {codes:?}"
        );
    }
    for (edge, codes) in [&a, &b].into_iter().enumerate() {
        let addr = c.edge_addr(edge);
        let refused = codes.iter().filter(|&&c| c == 1005).count() as u64;
        let sends = metric(&addr, r#"switchboard_biz_limit_refusals_total{kind="sends"}"#).await;
        let conns = metric(&addr, r#"switchboard_biz_limit_refusals_total{kind="connections"}"#).await;
        assert_eq!((sends, conns), (refused, 1), "edge {edge}");
    }

    // A raise reaches both edges (through the router's answers) within seconds.
    let changed = Instant::now();
    set_limits(&api_addr, "noisy", json!({"maxConnections": 3})).await;
    let _x0 = eventually_joined(&c.url(0, "bizCode=noisy&clientId=x0")).await;
    let _x1 = eventually_joined(&c.url(1, "bizCode=noisy&clientId=x1")).await;
    assert!(changed.elapsed() < TAKES_EFFECT, "took {:?}", changed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_rate_limit_is_per_key_and_biz_code() {
    let mut env = ENV.to_vec();
    env.extend([
        ("SWITCHBOARD_API__RATE_PER_SEC", "5"),
        ("SWITCHBOARD_API__RATE_BURST", "10"),
    ]);
    let s = Standalone::start(&env).await;
    let addr = s.addr();
    let call = |key: &'static str, biz: &'static str| {
        let addr = addr.clone();
        async move {
            let req = format!(
                "POST /api/websocket/get_online_list HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
                 systemId: {biz}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
            raw(&addr, &req).await
        }
    };
    // A flood over 5/s with a burst of 10: refused with 429/1005 and
    // Retry-After once the burst is spent.
    let started = Instant::now();
    let mut passed = 0;
    let mut limited = 0;
    for _ in 0..40 {
        let (head, body) = call(API_KEY, "noisy").await;
        if head.starts_with("http/1.1 200") {
            passed += 1;
        } else {
            assert_429(&head, &body);
            limited += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(
        passed >= 10 && passed as f64 <= 10.0 + 5.0 * secs + 1.0,
        "{passed} passed in {secs:.2}s"
    );
    // Another bizCode with the same key, and the same bizCode with another
    // key, have buckets of their own.
    for _ in 0..10 {
        assert!(call(API_KEY, "quiet").await.0.starts_with("http/1.1 200"));
        assert!(call(SCOPED_KEY, "noisy").await.0.starts_with("http/1.1 200"));
    }
    assert_eq!(metric(&addr, "switchboard_api_rate_limited_total").await, limited);
}
