//! A slow consumer next to fast ones, on a cluster (2 edges, a router, real
//! NATS): one member of a 200-member group completes the WebSocket
//! handshake and then never reads its socket, while group sends of ~4 KiB
//! go out at 50 msg/s. (On loopback the kernel lets the edge's socket take
//! ~2.5 MB that nobody reads before its 64 KiB queue starts to fill: the
//! send buffer grows with the 64 KiB MSS. That takes ~13 s here, ~27 s
//! with 2 KiB messages.) Its send queue overflows: the edge closes it with
//! 4008 (or, since a client that does not read cannot take the close frame
//! either, cuts its TCP connection after `edge.close_grace`), counts it in
//! `switchboard_slow_consumer_closes_total`, and removes it from presence.
//! Every other member gets every message, in order, exactly once, and
//! nobody waits on the slow one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MEMBERS: usize = 200;
const RATE: u64 = 50;
/// Sends at most this long; stops earlier once the slow consumer is gone
/// and `AFTER` more sends went out.
const MAX_SENDING: Duration = Duration::from_secs(30);
const AFTER: usize = 100;

/// A client that does the handshake and then never reads: a small receive
/// buffer, so the edge's socket fills up quickly.
async fn stalled_client(addr: &str, query: &str) -> (TcpStream, Vec<u8>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut s = socket
        .connect(addr.parse().expect("edge address"))
        .await
        .expect("connect to the edge");
    let req = format!(
        "GET /ws?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write the upgrade request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let head_end = loop {
        let n = s.read(&mut chunk).await.expect("read the upgrade response");
        assert!(n > 0, "edge closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    (s, buf[head_end..].to_vec())
}

/// What a client that finally reads finds in its socket: the text frames,
/// then the close code (`None`: the connection ended without a close
/// frame, or mid-frame).
async fn read_rest(mut s: TcpStream, mut buf: Vec<u8>) -> (usize, Option<u16>) {
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut texts = 0;
    loop {
        // Parse whole frames (server frames are not masked).
        loop {
            if buf.len() < 2 {
                break;
            }
            let (opcode, len7) = (buf[0] & 0x0f, usize::from(buf[1] & 0x7f));
            let (hdr, len) = match len7 {
                126 if buf.len() >= 4 => (4, usize::from(u16::from_be_bytes([buf[2], buf[3]]))),
                127 if buf.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (10, usize::try_from(u64::from_be_bytes(b)).expect("frame length"))
                }
                126 | 127 => break,
                n => (2, n),
            };
            if buf.len() < hdr + len {
                break;
            }
            let payload = buf[hdr..hdr + len].to_vec();
            buf.drain(..hdr + len);
            match opcode {
                0x1 => texts += 1,
                0x8 => {
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return (texts, code);
                }
                _ => {}
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return (texts, None),
            Err(_) => panic!("the slow consumer's connection was neither closed nor cut"),
        }
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A fast member: reads everything until told to stop and the stream is
/// quiet; returns (message index, seq) of every group delivery, in order.
fn spawn_reader(mut ws: Ws, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<(u64, u64)>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            match ws.next_within(Duration::from_millis(500)).await {
                Ok(Some(v)) if v["mode"] == 200 => {
                    let i = v["content"]["i"].as_u64().expect("message index");
                    got.push((i, v["seq"].as_u64().unwrap_or(0)));
                }
                Ok(Some(_)) => {}
                Ok(None) if stop.load(Ordering::Relaxed) => return got,
                Ok(None) => {}
                Err(c) => panic!("a fast member was closed: {c:?}"),
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_in_a_big_group_is_cut_off_and_the_others_get_everything() {
    let c = Cluster::start(
        2,
        1,
        &[
            // 64 KiB (the smallest allowed) keeps the test short.
            ("SWITCHBOARD_EDGE__SEND_QUEUE_BYTES", "65536"),
            // A long grace for the close frame that the slow consumer never
            // takes: presence must not wait for it (it waited for 3 × this
            // before the fix: the writer's grace, the reader's, the linger).
            ("SWITCHBOARD_EDGE__CLOSE_GRACE", "8s"),
            ("SWITCHBOARD_EDGE__RATE_PER_SEC", "1000"),
            ("SWITCHBOARD_EDGE__RATE_BURST", "1000"),
            ("SWITCHBOARD_ROUTER__PRESENCE_NOTICES", "off"),
        ],
    )
    .await;
    let router = c.router_addr(0);
    let (slow, early) = stalled_client(&c.edge_addr(0), "bizCode=d1&clientId=slow&group=big").await;

    // 199 fast members over both edges, opened 20 at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for batch in 0..(MEMBERS - 1).div_ceil(20) {
        let urls: Vec<String> = (batch * 20..((batch + 1) * 20).min(MEMBERS - 1))
            .map(|i| c.url(i % 2, &format!("bizCode=d1&clientId=m{i}&group=big")))
            .collect();
        for (ws, _) in futures_util::future::join_all(urls.iter().map(|u| Ws::join(u))).await {
            readers.push(spawn_reader(ws, stop.clone()));
        }
    }
    eventually!(
        api(&router, "d1", "get_online_list", json!({"groupName": "big"}))
            .await
            .1["data"]["count"]
            == MEMBERS,
        "the group did not fill"
    );

    // One sender (not a member) on edge 1: ~4 KiB payloads at 50/s.
    let (mut sender, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=sender")).await;
    let text = "lorem ipsum dolor sit amet, ".repeat(144);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let mut acked = Vec::new();
    let mut recipients = Vec::new();
    let mut cut_at: Option<(usize, Duration)> = None;
    for i in 0u64.. {
        tick.tick().await;
        let id = i.to_string();
        sender
            .send(&json!({"mode": 200, "msgId": id, "group": "big",
                "content": {"i": i, "from": "sender", "text": text}}))
            .await;
        let reply = sender.recv_mode(2).await;
        assert_eq!(reply["code"], 0, "group send {i}: {reply}");
        acked.push(i);
        recipients.push(reply["data"]["recipients"].as_u64().unwrap_or(0));
        if cut_at.is_none() && i % 10 == 0 {
            let (_, m) = http_get(&c.edge_addr(0), "/metrics").await.unwrap_or_default();
            if metric(&m, "switchboard_slow_consumer_closes_total") >= 1.0 {
                cut_at = Some((acked.len(), started.elapsed()));
            }
        }
        if cut_at.is_some_and(|(n, _)| acked.len() >= n + AFTER) || started.elapsed() > MAX_SENDING {
            break;
        }
    }
    let sending = started.elapsed();
    let (cut_after, cut_time) = cut_at.expect("the slow consumer was never cut off");

    // Presence forgets it at once (not after close_grace); the others are
    // all there.
    eventually!(
        api(&router, "d1", "get_online_list", json!({"groupName": "big"}))
            .await
            .1["data"]["count"]
            == MEMBERS - 1,
        "the slow consumer is still in presence"
    );
    let counted_after_cut = recipients[cut_after..].iter().filter(|n| **n == MEMBERS as u64).count();
    assert_eq!(recipients.first().copied(), Some(MEMBERS as u64), "{recipients:?}");
    assert_eq!(recipients.last().copied(), Some(MEMBERS as u64 - 1), "{recipients:?}");

    // Every fast member got every message, in order, exactly once.
    stop.store(true, Ordering::Relaxed);
    for (m, r) in readers.into_iter().enumerate() {
        let got = r.await.expect("reader");
        let idx: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(idx, acked, "member m{m}: not every message once and in order");
        assert!(
            got.windows(2).all(|w| w[0].1 < w[1].1),
            "member m{m}: seq not increasing"
        );
    }

    // What the slow one finds when it finally reads.
    let (texts, close) = read_rest(slow, early).await;
    assert!(
        close.is_none_or(|code| code == 4008),
        "the slow consumer was closed with {close:?}, not 4008"
    );
    eprintln!(
        "{} group sends of ~{} B at {RATE}/s to {MEMBERS} members over {sending:.1?}; the slow consumer was cut \
         off after {cut_after} sends ({cut_time:.1?}; it had taken {texts} frames into its socket before, then {}); \
         {counted_after_cut} sends after the edge counted it still counted it as a recipient; \
         {} fast members got all {} in order",
        acked.len(),
        text.len() + 40,
        close.map_or("the connection was cut without a close frame".to_owned(), |c| format!(
            "close {c}"
        )),
        MEMBERS - 1,
        acked.len()
    );
}
