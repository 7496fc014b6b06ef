//! Every error code and limit of SPEC §2, on a real cluster and on
//! standalone: bad frames keep the connection usable, oversize frames,
//! offline and cross-bizCode targets, rate limiting and abuse, handshake
//! refusals, idle timeout, slow consumers.

mod common;

use std::time::{Duration, Instant};

use common::*;

const LIMITS: &[(&str, &str)] = &[
    ("SWITCHBOARD_EDGE__RATE_PER_SEC", "5"),
    ("SWITCHBOARD_EDGE__RATE_BURST", "10"),
    ("SWITCHBOARD_EDGE__ABUSE_LIMIT", "20"),
];

async fn reply_to(c: &mut Ws, frame: &str) -> Value {
    c.send_text(frame).await;
    c.recv_mode(2).await
}

async fn errors_and_limits(t: &Target) {
    let (mut a, _) = t.join(0, "bizCode=d1&clientId=a").await;
    let (mut x, _) = t.join(1, "bizCode=d2&clientId=x").await;

    // 1001: not JSON, not an object, missing / wrong-typed fields; the
    // connection stays usable after each.
    let r = reply_to(&mut a, "not json").await;
    assert_eq!((r["code"].clone(), r["msgId"].clone()), (json!(1001), Value::Null));
    let r = reply_to(&mut a, "[1,2,3]").await;
    assert_eq!(r["code"], 1001);
    let r = reply_to(&mut a, r#"{"msgId":"m0","mode":100,"content":1}"#).await;
    assert_eq!((r["code"].clone(), r["msgId"].clone()), (json!(1001), json!("m0")));
    let r = reply_to(&mut a, r#"{"msgId":"m0b","mode":"100"}"#).await;
    assert_eq!(r["code"], 1001);
    a.send_binary(vec![1, 2, 3]).await;
    assert_eq!(a.recv_mode(2).await["code"], 1001);
    a.send(&json!({"msgId":"alive","mode":1})).await;
    assert_eq!(a.recv_mode(1).await["msgId"], "alive");

    // 1002: unknown mode, msgId echoed (numbers kept as text).
    let r = reply_to(&mut a, r#"{"msgId":42,"mode":7}"#).await;
    assert_eq!((r["code"].clone(), r["msgId"].clone()), (json!(1002), json!("42")));

    // 1003: a frame over 64 KiB; still usable afterwards.
    let big = "x".repeat(70 * 1024);
    let r = reply_to(&mut a, &json!({"msgId":"big","mode":300,"content":big}).to_string()).await;
    assert_eq!(r["code"], 1003);

    // 1004: offline target; a target in another bizCode is "offline" too and
    // gets nothing; an id that cannot exist is offline.
    let r = reply_to(
        &mut a,
        r#"{"msgId":"m1","mode":100,"targetClientId":"nobody","content":1}"#,
    )
    .await;
    assert_eq!((r["code"].clone(), r["data"].clone()), (json!(1004), Value::Null));
    let r = reply_to(
        &mut a,
        r#"{"msgId":"m2","mode":100,"targetClientId":"x","content":"leak?"}"#,
    )
    .await;
    assert_eq!(r["code"], 1004);
    let r = reply_to(
        &mut a,
        r#"{"msgId":"m3","mode":100,"targetClientId":"a b","content":1}"#,
    )
    .await;
    assert_eq!(r["code"], 1004);
    // Nor does a broadcast or group send in d1 reach d2.
    let r = reply_to(&mut a, r#"{"msgId":"m4","mode":300,"content":"d1 only"}"#).await;
    assert_eq!(
        (r["code"].clone(), r["data"]["recipients"].clone()),
        (json!(0), json!(0))
    );
    x.expect_silence(Duration::from_millis(300)).await;

    // RFC ping is answered with the same payload.
    a.ping(b"are you there").await;
    assert_eq!(a.pong().await.as_deref(), Some(&b"are you there"[..]));

    // 1005 after the burst (10), then 1008 after 20 refusals in a row.
    let (mut r8, _) = t.join(0, "bizCode=d1&clientId=ratey").await;
    let mut codes = Vec::new();
    for i in 0..12 {
        r8.send(&json!({"msgId": i.to_string(), "mode":100, "targetClientId":"nobody", "content":1}))
            .await;
        codes.push(r8.recv_mode(2).await["code"].as_u64().unwrap_or(0));
    }
    assert_eq!(&codes[..10], &[1004; 10], "{codes:?}");
    assert_eq!(&codes[10..], &[1005; 2], "{codes:?}");
    for i in 0..30 {
        r8.send_text(&json!({"msgId": format!("f{i}"), "mode":300, "content":1}).to_string())
            .await;
    }
    let (closed, frames) = r8.closed_within(Duration::from_secs(10)).await;
    assert_eq!(closed.map(|c| c.code), Some(1008), "abuse must close with 1008");
    assert!(
        frames.iter().all(|f| f["code"] == 1005 || f["mode"] == 400),
        "{frames:?}"
    );

    // 1009: a frame over 1 MiB closes the connection.
    let huge = "y".repeat(1024 * 1024 + 10);
    a.send_text(&huge).await;
    let (closed, _) = a.closed_within(Duration::from_secs(10)).await;
    assert_eq!(closed.map(|c| c.code), Some(1009));

    // The other tenant was never disturbed.
    x.send(&json!({"msgId":"still","mode":1})).await;
    assert_eq!(x.recv_mode(1).await["msgId"], "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_limits_on_a_cluster() {
    let c = Cluster::start(2, 1, LIMITS).await;
    errors_and_limits(&Target::cluster(&c)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_limits_on_standalone() {
    let s = Standalone::start(LIMITS).await;
    errors_and_limits(&Target::standalone(&s, 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_policy_refuses_with_1006() {
    let s = Standalone::start(&[
        ("SWITCHBOARD_EDGE__SEND_MODES", "[100, 200]"),
        ("SWITCHBOARD_EDGE__GROUP_SEND_REQUIRES_MEMBERSHIP", "true"),
    ])
    .await;
    let t = Target::standalone(&s, 1);
    let (mut a, _) = t.join(0, "bizCode=d1&clientId=a&group=mine").await;
    let (mut b, _) = t.join(0, "bizCode=d1&clientId=b&group=theirs").await;
    let r = reply_to(&mut a, r#"{"msgId":"bc","mode":300,"content":1}"#).await;
    assert_eq!((r["code"].clone(), r["msgId"].clone()), (json!(1006), json!("bc")));
    let r = reply_to(&mut a, r#"{"msgId":"g","mode":200,"group":"theirs","content":1}"#).await;
    assert_eq!(r["code"], 1006);
    b.expect_silence(Duration::from_millis(200)).await;
    let r = reply_to(&mut a, r#"{"msgId":"g2","mode":200,"group":"mine","content":1}"#).await;
    assert_eq!(r["code"], 0);
    let r = reply_to(&mut a, r#"{"msgId":"u","mode":100,"targetClientId":"b","content":1}"#).await;
    assert_eq!(r["code"], 0);
    assert_eq!(b.recv_mode(100).await["msgId"], "u");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_are_checked_before_the_upgrade() {
    let c = Cluster::start(1, 1, &[]).await;
    let refused = |q: &str| {
        let url = c.url(0, q);
        async move { Ws::connect(&url).await.err().unwrap_or((0, "accepted".into())) }
    };
    for q in [
        "clientId=c1",
        "bizCode=&clientId=c1",
        "bizCode=d%201",
        "bizCode=d1&clientId=*",
        "bizCode=d1&clientId=a%3Eb",
        "bizCode=d1&group=g1,g%3E",
        "bizCode=d1&systemId=d2",
    ] {
        let (status, body) = refused(q).await;
        assert_eq!(status, 400, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["code"], 1001, "{q}: {body}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{q}: {body}");
    }
    let long = "c".repeat(129);
    assert_eq!(refused(&format!("bizCode=d1&clientId={long}")).await.0, 400);
    let ok128 = "c".repeat(128);
    let (_w, welcome) = Ws::join(&c.url(0, &format!("bizCode=d1&clientId={ok128}"))).await;
    assert_eq!(welcome["data"]["clientId"], ok128.as_str());

    // systemId alias and a server-assigned clientId (16 lowercase hex).
    let (_s, welcome) = Ws::join(&c.url(0, "systemId=sys1")).await;
    assert_eq!(welcome["data"]["bizCode"], "sys1");
    let id = welcome["data"]["clientId"].as_str().unwrap_or_default().to_owned();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{id}"
    );
    assert!(welcome["data"]["node"]
        .as_str()
        .is_some_and(|n| n.starts_with("edge1-")));
    assert_eq!(welcome["data"]["heartbeatSec"], 30);

    // Plain HTTP on the WebSocket path, unknown paths, ops endpoints.
    let addr = c.edge_addr(0);
    assert_eq!(http_get(&addr, "/ws?bizCode=d1").await.map(|r| r.0).ok(), Some(426));
    assert_eq!(http_get(&addr, "/nope").await.map(|r| r.0).ok(), Some(404));
    assert_eq!(http_get(&addr, "/healthz").await.map(|r| r.0).ok(), Some(200));
    let (status, metrics) = http_get(&addr, "/metrics").await.unwrap_or_default();
    assert_eq!(status, 200);
    assert!(metrics.contains("switchboard_connections 2"), "{metrics}");
    assert!(metrics.contains("switchboard_handshake_refusals_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_heartbeats_keep_them() {
    let s = Standalone::start(&[("SWITCHBOARD_EDGE__HEARTBEAT", "1s")]).await;
    let (mut idle, w) = Ws::join(&s.url("bizCode=d1&clientId=idle")).await;
    assert_eq!(w["data"]["heartbeatSec"], 1);
    let (mut busy, _) = Ws::join(&s.url("bizCode=d1&clientId=busy")).await;
    let start = Instant::now();
    let beat = tokio::spawn(async move {
        for i in 0..12 {
            busy.send(&json!({"msgId": i.to_string(), "mode": 1})).await;
            assert_eq!(busy.recv_mode(1).await["msgId"], i.to_string());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        busy
    });
    let closed = idle.closed().await;
    assert_eq!(closed.code, 1001);
    let after = start.elapsed();
    assert!(after >= Duration::from_millis(2500), "closed too early: {after:?}");
    let mut busy = beat.await.expect("heartbeat task");
    busy.send(&json!({"msgId":"end","mode":1})).await;
    assert_eq!(busy.recv_mode(1).await["msgId"], "end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_4008_and_nobody_waits() {
    let s = Standalone::start(&[
        ("SWITCHBOARD_EDGE__RATE_PER_SEC", "100000"),
        ("SWITCHBOARD_EDGE__RATE_BURST", "100000"),
    ])
    .await;
    let (mut slow, _) = Ws::join(&s.url("bizCode=d1&clientId=slow")).await;
    let (mut fast, _) = Ws::join(&s.url("bizCode=d1&clientId=fast")).await;
    let (mut sender, _) = Ws::join(&s.url("bizCode=d1&clientId=sender")).await;
    let chunk = "z".repeat(60 * 1024);
    // ~24 MiB to each: far more than socket buffers plus the 1 MiB queue.
    let mut overflowed_at = None;
    for i in 0..400 {
        sender
            .send(&json!({"msgId": i.to_string(), "mode": 300, "content": chunk}))
            .await;
        let r = sender.recv_mode(2).await;
        assert_eq!(r["code"], 0);
        // The fast client keeps up.
        assert_eq!(fast.recv_mode(300).await["msgId"], i.to_string());
        if overflowed_at.is_none() && r["data"]["recipients"] == 2 {
            let (_, m) = http_get(&s.addr(), "/metrics").await.unwrap_or_default();
            if m.contains("switchboard_slow_consumer_closes_total 1") {
                overflowed_at = Some(i);
                break;
            }
        }
    }
    assert!(overflowed_at.is_some(), "the slow consumer was never cut off");
    let (closed, frames) = slow.closed_within(Duration::from_secs(30)).await;
    assert_eq!(closed.map(|c| c.code), Some(4008));
    assert!(!frames.is_empty());
    // Everyone else is fine.
    sender
        .send(&json!({"msgId":"after","mode":100,"targetClientId":"fast","content":1}))
        .await;
    assert_eq!(sender.recv_mode(2).await["code"], 0);
    assert_eq!(fast.recv_mode(100).await["msgId"], "after");
}
