//! RFC 6455 conformance and abuse resistance at the socket, with every byte
//! built by hand (as an attacker or a sloppy client library would send
//! them): the opening handshake (§4), fragmentation (§5.4), the close
//! handshake (§5.5.1, §7.4), a ping flood against a client that never
//! reads, and the welcome-first rule in a same-id race (SPEC §2).

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request with a valid key; `extra` lines replace nothing, they add.
fn request(query: &str, lines: &[&str]) -> String {
    let mut r = format!("GET /ws?{query} HTTP/1.1\r\n");
    for l in lines {
        r.push_str(l);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

const GOOD: &[&str] = &[
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

/// A client frame, masked with key 00 00 00 00 (payload unchanged).
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 | opcode } else { opcode }];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A raw TCP client.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: &str) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        Self { s, buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(Duration::from_secs(10), self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("nothing from the server for 10 s"),
        }
    }

    /// The HTTP response head: status and the lowercased head text.
    async fn response(&mut self) -> (u16, String) {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_lowercase();
                self.buf.drain(..end + 4);
                let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                return (status, head);
            }
            assert!(self.fill().await, "connection closed before a response");
        }
    }

    /// Upgrades with `query` and reads the welcome.
    async fn join(addr: &str, query: &str) -> Self {
        let mut c = Self::connect(addr).await;
        c.send(request(query, GOOD).as_bytes()).await;
        let (status, head) = c.response().await;
        assert_eq!(status, 101, "{head}");
        let (op, text) = c.frame().await.expect("welcome");
        assert_eq!(op, 1);
        let v: Value = serde_json::from_slice(&text).expect("json");
        assert_eq!(v["mode"], 0, "welcome first: {v}");
        c
    }

    /// The next server frame (opcode, payload); `None` at EOF.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (len, at) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => (usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4),
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (usize::try_from(u64::from_be_bytes(b)).expect("length"), 10)
                    }
                    n if n < 126 => (usize::from(n), 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let op = self.buf[0] & 0x0F;
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some((op, payload));
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads until the server's close frame; returns its code.
    async fn close_code(&mut self) -> u16 {
        while let Some((op, payload)) = self.frame().await {
            if op == 8 {
                assert!(payload.len() >= 2, "the server always sends a code");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
        panic!("connection ended without a close frame");
    }

    /// The next text frame as JSON.
    async fn json(&mut self) -> Value {
        loop {
            let (op, payload) = self.frame().await.expect("a frame");
            if op == 1 {
                return serde_json::from_slice(&payload).expect("json");
            }
        }
    }
}

#[tokio::test]
async fn the_opening_handshake_follows_rfc6455_section_4() {
    let s = Standalone::start(&[]).await;
    let q = "bizCode=d1&clientId=c1";
    let without = |name: &str| -> Vec<&str> {
        GOOD.iter()
            .copied()
            .filter(|l| !l.to_lowercase().starts_with(name))
            .collect()
    };
    // Versions we do not speak: 426 naming the one we do (§4.4).
    for v in ["8", "12", "14", "abc"] {
        let mut lines = without("sec-websocket-version");
        let version = format!("Sec-WebSocket-Version: {v}");
        lines.push(&version);
        let mut c = Raw::connect(&s.addr()).await;
        c.send(request(q, &lines).as_bytes()).await;
        let (status, head) = c.response().await;
        assert_eq!(status, 426, "version {v}: {head}");
        assert!(head.contains("sec-websocket-version: 13"), "version {v}: {head}");
    }
    // Not an upgrade at all: 426 too.
    let mut c = Raw::connect(&s.addr()).await;
    c.send(request(q, &["Host: x"]).as_bytes()).await;
    let (status, head) = c.response().await;
    assert_eq!(status, 426, "{head}");
    assert!(head.contains("sec-websocket-version: 13"), "{head}");
    // Malformed keys, no Host, HTTP/1.0: 400.
    for key in [
        "",
        "abc",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZR==",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let mut lines = without("sec-websocket-key");
        let k = format!("Sec-WebSocket-Key: {key}");
        lines.push(&k);
        let mut c = Raw::connect(&s.addr()).await;
        c.send(request(q, &lines).as_bytes()).await;
        assert_eq!(c.response().await.0, 400, "key {key:?}");
    }
    let mut c = Raw::connect(&s.addr()).await;
    c.send(request(q, &without("host")).as_bytes()).await;
    assert_eq!(c.response().await.0, 400, "no Host");
    let mut two_hosts = GOOD.to_vec();
    two_hosts.push("Host: other");
    let mut c = Raw::connect(&s.addr()).await;
    c.send(request(q, &two_hosts).as_bytes()).await;
    assert_eq!(c.response().await.0, 400, "two Host headers");
    let mut c = Raw::connect(&s.addr()).await;
    c.send(request("bizCode=d1&clientId=a&clientId=b", GOOD).as_bytes())
        .await;
    assert_eq!(c.response().await.0, 400, "two different clientIds");
    let mut c = Raw::connect(&s.addr()).await;
    c.send(request(q, GOOD).replacen("HTTP/1.1", "HTTP/1.0", 1).as_bytes())
        .await;
    assert_eq!(c.response().await.0, 400, "HTTP/1.0");
    // And a good one still upgrades.
    Raw::join(&s.addr(), q).await;
}

#[tokio::test]
async fn fragmentation_rules_are_enforced_with_1002() {
    let s = Standalone::start(&[]).await;
    let text = |fin, p: &[u8]| frame(fin, 0x1, p);
    let bin = |fin, p: &[u8]| frame(fin, 0x2, p);
    let cont = |fin, p: &[u8]| frame(fin, 0x0, p);
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("continuation with nothing open", vec![cont(true, b"")]),
        ("continuation FIN=0 with nothing open", vec![cont(false, b"x")]),
        (
            "new text while a text is open",
            vec![text(false, b"{"), text(true, b"}")],
        ),
        ("new text FIN=0 while open", vec![text(false, b"{"), text(false, b"}")]),
        ("binary while a text is open", vec![text(false, b"{"), bin(true, b"x")]),
        ("text while a binary is open", vec![bin(false, b"x"), text(true, b"{}")]),
    ];
    for (i, (what, frames)) in cases.into_iter().enumerate() {
        let mut c = Raw::join(&s.addr(), &format!("bizCode=d1&clientId=f{i}")).await;
        c.send(&frames.concat()).await;
        assert_eq!(c.close_code().await, 1002, "{what}");
    }
    // A fragmented binary message gets the answer a single binary frame gets.
    let mut c = Raw::join(&s.addr(), "bizCode=d1&clientId=bin").await;
    c.send(&bin(true, b"ab")).await;
    let single = c.json().await;
    c.send(&[bin(false, b"a"), frame(true, 0x9, b"p"), cont(true, b"b")].concat())
        .await;
    let fragmented = c.json().await;
    assert_eq!(single["mode"], 2);
    assert_eq!(single["code"], 1001);
    assert_eq!(fragmented, single);
    // A fragmented text message with a ping between its fragments works.
    c.send(
        &[
            text(false, br#"{"mode":1,"#),
            frame(true, 0x9, b""),
            cont(true, br#""msgId":"h"}"#),
        ]
        .concat(),
    )
    .await;
    let reply = c.json().await;
    assert_eq!((reply["mode"].as_u64(), reply["msgId"].as_str()), (Some(1), Some("h")));
}

#[tokio::test]
async fn close_frames_are_validated_and_never_answered_with_reserved_codes() {
    let s = Standalone::start(&[]).await;
    let mut n = 0;
    let mut answer = |payload: Vec<u8>| {
        n += 1;
        let addr = s.addr();
        async move {
            let mut c = Raw::join(&addr, &format!("bizCode=d1&clientId=c{n}")).await;
            c.send(&frame(true, 0x8, &payload)).await;
            c.close_code().await
        }
    };
    for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535] {
        assert_eq!(answer(close_payload(bad, b"")).await, 1002, "code {bad}");
    }
    assert_eq!(answer(vec![0x03]).await, 1002, "1-byte close payload");
    assert_eq!(
        answer(close_payload(1000, &[0xCE, 0xBA, 0xE1, 0xBD])).await,
        1007,
        "reason not UTF-8"
    );
    for good in [1000u16, 1001, 1003, 1011, 3000, 4999] {
        assert_eq!(answer(close_payload(good, b"bye")).await, 1000, "code {good}");
    }
    assert_eq!(answer(Vec::new()).await, 1000, "empty close");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_from_a_client_that_never_reads_holds_bounded_memory() {
    let s = Standalone::start(&[]).await;
    let mut c = Raw::join(&s.addr(), "bizCode=d1&clientId=flood").await;
    let before = rss_kib(s.proc.pid());
    // 200,000 pings of 125 bytes (25 MiB), never reading: each pong kept
    // would be ~25 MiB more server memory.
    let ping = frame(true, 0x9, &[b'p'; 125]);
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 1000).collect();
    for _ in 0..200 {
        c.send(&burst).await;
    }
    // The server has read them all once a heartbeat behind them is answered.
    c.send(&frame(true, 0x1, br#"{"mode":1,"msgId":"after"}"#)).await;
    let mut pongs = 0u64;
    loop {
        let (op, payload) = c.frame().await.expect("still connected");
        match op {
            0xA => pongs += 1,
            1 => {
                let v: Value = serde_json::from_slice(&payload).expect("json");
                assert_eq!(v["msgId"], "after", "{v}");
                break;
            }
            other => panic!("unexpected opcode {other}"),
        }
    }
    let after = rss_kib(s.proc.pid());
    assert!(pongs >= 1, "pings are answered");
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "server RSS grew {before} → {after} KiB for 200k unread pongs ({pongs} pongs sent)"
    );
}

/// SPEC §2: the welcome is always the first frame, also for the loser of
/// two simultaneous handshakes with one bizCode+clientId.
async fn same_id_race(addrs: [String; 2], rounds: usize) -> Vec<Raw> {
    let mut open = Vec::new();
    for round in 0..rounds {
        let q = format!("bizCode=d1&clientId=race{round}");
        let (a, b) = tokio::join!(
            first_frame(addrs[0].clone(), q.clone()),
            first_frame(addrs[1].clone(), q.clone())
        );
        for (who, (op, payload, raw)) in [("a", a), ("b", b)] {
            assert_eq!(op, 1, "round {round} {who}: first frame opcode {op} {payload:?}");
            let v: Value = serde_json::from_slice(&payload).expect("json");
            assert_eq!(v["mode"], 0, "round {round} {who}: first frame {v}");
            open.push(raw);
        }
    }
    open
}

async fn first_frame(addr: String, query: String) -> (u8, Vec<u8>, Raw) {
    let mut c = Raw::connect(&addr).await;
    c.send(request(&query, GOOD).as_bytes()).await;
    let (status, head) = c.response().await;
    assert_eq!(status, 101, "{head}");
    let (op, payload) = c.frame().await.expect("a first frame");
    (op, payload, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_comes_first_in_a_same_id_race_on_standalone() {
    let s = Standalone::start(&[]).await;
    let _open = same_id_race([s.addr(), s.addr()], 20).await;
    let addr = s.addr();
    eventually!(
        api(&addr, "d1", "get_online_list", json!({})).await.1["data"]["count"] == 20,
        "one live connection per raced id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_comes_first_in_a_same_id_race_across_edges() {
    let c = Cluster::start(2, 1, &[]).await;
    let _open = same_id_race([c.edge_addr(0), c.edge_addr(1)], 20).await;
    let addr = c.router_addr(0);
    eventually!(
        api(&addr, "d1", "get_online_list", json!({})).await.1["data"]["count"] == 20,
        "one live connection per raced id"
    );
}
