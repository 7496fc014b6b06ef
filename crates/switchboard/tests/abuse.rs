//! Abuse resistance before the upgrade: silent and slowloris connections
//! time out, connections in progress are capped (429), the optional cap per
//! client address (with trusted proxies), the open-files limit raised at
//! start, and a process out of file descriptors that keeps its log readable
//! and serves again once descriptors are free.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until EOF (or a reset); how long it took. Panics after 10 s.
async fn time_to_close(s: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection still open after 10 s"),
        }
    }
}

async fn metric(addr: &str, name: &str) -> u64 {
    let (_, text) = http_get(addr, "/metrics").await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        .map_or(0, |v| v as u64)
}

/// The first line and headers of a response (lowercased).
async fn response_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).to_lowercase()
}

const FAST_TIMEOUTS: &[(&str, &str)] = &[
    ("SWITCHBOARD_HTTP__HEADER_READ_TIMEOUT", "1s"),
    ("SWITCHBOARD_HTTP__HANDSHAKE_TIMEOUT", "2s"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slowloris_connections_are_closed_by_the_header_timeout() {
    let s = Standalone::start(FAST_TIMEOUTS).await;
    let addr = s.addr();
    // Silent after the accept.
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    // Half a request line, then nothing.
    let mut half = TcpStream::connect(&addr).await.expect("connect");
    half.write_all(b"GET /ws?bizCode=x HTTP/1.1\r\n").await.expect("write");
    // One byte every 200 ms, forever.
    let mut drip = TcpStream::connect(&addr).await.expect("connect");
    let dripping = tokio::spawn(async move {
        let start = Instant::now();
        for b in b"GET /ws?bizCode=x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if drip.write_all(&[*b]).await.is_err() {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the server read a dripped request for {:?}", start.elapsed());
    });
    for (what, s) in [("silent", &mut silent), ("half a request", &mut half)] {
        let took = time_to_close(s).await;
        assert!(took < Duration::from_secs(5), "{what}: closed after {took:?}");
    }
    let took = dripping.await.expect("drip task");
    assert!(took < Duration::from_secs(5), "slowloris: cut after {took:?}");
    assert!(metric(&addr, "switchboard_http_timeouts_total").await >= 3);
    // A real client is served as always.
    let (_ws, welcome) = Ws::join(&s.url("bizCode=d1&clientId=real")).await;
    assert_eq!(welcome["mode"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_progress_are_capped_with_429_and_real_clients_get_in_after_the_timeout() {
    let mut env = FAST_TIMEOUTS.to_vec();
    env.push(("SWITCHBOARD_HTTP__MAX_PENDING_CONNECTIONS", "8"));
    let s = Standalone::start(&env).await;
    let addr = s.addr();
    let mut hogs = Vec::new();
    for _ in 0..8 {
        hogs.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&addr).await.expect("connect");
    let head = response_head(&mut extra).await;
    assert!(head.starts_with("http/1.1 429"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    // Once the hogs have timed out, clients are served again.
    for h in &mut hogs {
        time_to_close(h).await;
    }
    let (_ws, welcome) = Ws::join(&s.url("bizCode=d1&clientId=after")).await;
    assert_eq!(welcome["mode"], 0);
    assert!(metric(&addr, "switchboard_http_connections_refused_total").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped_and_trusted_proxies_name_the_client() {
    let s = Standalone::start(&[
        ("SWITCHBOARD_EDGE__MAX_CONNECTIONS_PER_ADDRESS", "2"),
        ("SWITCHBOARD_EDGE__TRUSTED_PROXIES", "[\"127.0.0.2\"]"),
    ])
    .await;
    let url = |id: &str| s.url(&format!("bizCode=d1&clientId={id}"));
    let (a, _) = Ws::join(&url("a")).await;
    let (_b, _) = Ws::join(&url("b")).await;
    match Ws::connect(&url("c")).await {
        Err((status, body)) => {
            assert_eq!(status, 429, "{body}");
            assert!(body.contains("1005"), "{body}");
        }
        Ok(_) => panic!("a third connection from one address was admitted"),
    }
    // A closed connection gives its slot back.
    a.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let _c = loop {
        match Ws::connect(&url("c")).await {
            Ok(ws) => break ws,
            Err(e) => assert!(Instant::now() < deadline, "the slot never came back: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // X-Forwarded-For from an untrusted peer (127.0.0.1) is ignored...
    let spoofed = Ws::connect_with(&url("d"), &[("X-Forwarded-For", "9.9.9.9")]).await;
    assert_eq!(spoofed.err().map(|e| e.0), Some(429));
    // ...and names the client when the peer is a trusted proxy.
    let port = s.port;
    let via = |id: &'static str, xff: &'static str| async move {
        // From source address 127.0.0.2, the trusted proxy.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 2], 0).into()).expect("bind 127.0.0.2");
        let mut c = socket.connect(([127, 0, 0, 1], port).into()).await.expect("connect");
        let req = format!(
            "GET /ws?bizCode=d1&clientId={id} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Forwarded-For: {xff}\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.expect("write");
        let head = response_head(&mut c).await;
        (head, c)
    };
    let (h1, _c1) = via("p1", "1.1.1.1").await;
    let (h2, _c2) = via("p2", "1.1.1.1, 127.0.0.2").await;
    let (h3, _c3) = via("p3", "1.1.1.1").await;
    let (h4, _c4) = via("p4", "2.2.2.2").await;
    assert!(h1.starts_with("http/1.1 101"), "{h1}");
    assert!(h2.starts_with("http/1.1 101"), "{h2}");
    assert!(h3.starts_with("http/1.1 429"), "{h3}");
    assert!(h3.contains("retry-after"), "{h3}");
    assert!(h4.starts_with("http/1.1 101"), "{h4}");
}

fn env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("SWITCHBOARD_API_KEY".to_owned(), API_KEY.to_owned());
    env
}

/// `switchboard standalone` under `prlimit --nofile=<soft>:<hard>`.
async fn standalone_with_nofile(limit: &str) -> (Proc, u16) {
    let port = free_port();
    let mut env = env();
    env.insert("SWITCHBOARD_STANDALONE__LISTEN".into(), format!("127.0.0.1:{port}"));
    let bin = bin().to_str().expect("utf-8 path").to_owned();
    let proc = Proc::spawn(
        "standalone",
        Path::new("prlimit"),
        &[&format!("--nofile={limit}"), &bin, "standalone"],
        &env,
    );
    wait_ready(&format!("127.0.0.1:{port}")).await;
    (proc, port)
}

fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("Max open files")
}

#[tokio::test]
async fn the_soft_open_files_limit_is_raised_to_the_hard_limit() {
    let (proc, _) = standalone_with_nofile("256:4096").await;
    assert_eq!(soft_nofile(proc.pid()), 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_log_stays_quiet_and_service_resumes() {
    // Hard limit 64: it cannot be raised; 40 clients and 40 more
    // connections exhaust it.
    let (proc, port) = standalone_with_nofile("64:64").await;
    let addr = format!("127.0.0.1:{port}");
    let mut held = Vec::new();
    for i in 0..40 {
        let (ws, _) = Ws::join(&format!("ws://{addr}/ws?bizCode=d1&clientId=h{i}")).await;
        held.push(ws);
    }
    // Connections past the limit wait in the accept queue while accept fails.
    let mut waiting = Vec::new();
    for _ in 0..40 {
        waiting.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let warnings = proc.log().matches("accept failed").count();
    assert!(warnings >= 1, "accept errors are logged");
    assert!(warnings <= 5, "{warnings} accept warnings in ~2 s: not rate-limited");
    drop(waiting);
    drop(held);
    // Descriptors come back; the process serves again.
    eventually!(
        Ws::connect(&format!("ws://{addr}/ws?bizCode=d1&clientId=back"))
            .await
            .is_ok(),
        "served again after descriptors came back"
    );
    assert!(metric(&addr, "switchboard_accept_errors_total").await >= 1);
}

#[tokio::test]
async fn connections_per_biz_code_are_capped_without_touching_other_tenants() {
    let s = Standalone::start(&[("SWITCHBOARD_EDGE__MAX_CONNECTIONS_PER_BIZ", "2")]).await;
    let (_a, _) = Ws::join(&s.url("bizCode=big&clientId=a")).await;
    let (b, _) = Ws::join(&s.url("bizCode=big&clientId=b")).await;
    let refused = Ws::connect(&s.url("bizCode=big&clientId=c")).await.err();
    assert!(
        refused
            .as_ref()
            .is_some_and(|(status, body)| *status == 429 && body.contains("1005")),
        "{refused:?}"
    );
    // Another tenant is not affected.
    let (_other, welcome) = Ws::join(&s.url("bizCode=small&clientId=a")).await;
    assert_eq!(welcome["mode"], 0);
    b.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Ws::connect(&s.url("bizCode=big&clientId=c")).await.is_err() {
        assert!(Instant::now() < deadline, "the bizCode slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_never_comes_on_a_keep_alive_connection_times_out() {
    let s = Standalone::start(FAST_TIMEOUTS).await;
    let mut c = TcpStream::connect(s.addr()).await.expect("connect");
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let head = response_head(&mut c).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // A second request whose body never arrives.
    let req = format!(
        "POST /api/websocket/get_online_list HTTP/1.1\r\nHost: x\r\nsystemId: d1\r\n\
         Authorization: Bearer {API_KEY}\r\nContent-Length: 100\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await.expect("write");
    let took = time_to_close(&mut c).await;
    assert!(
        took < Duration::from_secs(5),
        "a stalled body held the connection {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_their_responses_do_not_hold_the_pending_cap() {
    let mut env = FAST_TIMEOUTS.to_vec();
    env.push(("SWITCHBOARD_HTTP__MAX_PENDING_CONNECTIONS", "4"));
    let s = Standalone::start(&env).await;
    let req = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n".repeat(100);
    let mut hogs = Vec::new();
    for _ in 0..4 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut c = socket.connect(s.addr().parse().expect("addr")).await.expect("connect");
        // Pipeline requests, never reading, until the server stops taking them.
        for _ in 0..2000 {
            match tokio::time::timeout(Duration::from_millis(300), c.write_all(&req)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        hogs.push(c);
    }
    // The server's writes to them are stuck; within the handshake timeout
    // (2 s here) they are dropped and a real client gets in.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        match Ws::connect(&s.url("bizCode=d1&clientId=real")).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "still locked out: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(hogs);
}
