//! Delivery receipts, end to end: an API `send_to_client(s)` with
//! `ackTimeoutMs` delivers with `"ack":true` and its reply waits for the
//! recipients' mode-3 acks (`acked`/`unacked`); a client's unicast with
//! `"ack":true` gets its mode-2 reply at once and a mode-4 receipt later;
//! a recipient that drops before acking and recovers (history on) within
//! the timeout still counts; nobody acks for another client or tenant;
//! the caps refuse with 429/1005 (API) and 1005 (client). The same
//! scenario runs against a cluster (real NATS with the chart's
//! permissions, two edges, two routers: the ack reaches the waiting router
//! whichever edge the client is on; there a recipient's edge is also
//! killed before it acks) and against `standalone`.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Both kinds of process run with these: a short client ack timeout, and
/// caps of one wait per API key and one send with ack per connection, so
/// the caps are reached with two calls.
const ENV: &[(&str, &str)] = &[
    ("SWITCHBOARD_EDGE__ACK_TIMEOUT", "1500ms"),
    ("SWITCHBOARD_EDGE__MAX_ACKS_IN_FLIGHT", "1"),
    ("SWITCHBOARD_API__MAX_RECEIPT_WAITS_PER_KEY", "1"),
];

/// Where the test connects: clients at `ws` (edge 0 and 1), the API at
/// `apis` (round robin).
struct Setup {
    ws: Target,
    apis: Vec<String>,
}

/// An API send on its own task, so clients can act while its reply waits.
fn api_in_background(addr: &str, biz: &str, call: &str, body: Value) -> tokio::task::JoinHandle<(u16, Value)> {
    let (addr, biz, call) = (addr.to_owned(), biz.to_owned(), call.to_owned());
    tokio::spawn(async move { api(&addr, &biz, &call, body).await })
}

/// The next delivery (mode 100) that asks for an ack, with its `msgId`.
async fn delivery_with_ack(ws: &mut Ws) -> (Value, String) {
    let d = ws.recv_mode(100).await;
    assert_eq!(d["ack"], true, "the delivery asks for an ack: {d}");
    let id = d["msgId"]
        .as_str()
        .unwrap_or_else(|| panic!("no msgId: {d}"))
        .to_owned();
    (d, id)
}

async fn ack(ws: &mut Ws, msg_id: &str) {
    ws.send(&json!({"mode": 3, "msgId": msg_id})).await;
}

/// A unicast from `ws` to `to` (with `"ack":true` when `ack`); answers
/// its mode-2 reply's (msgId, code).
async fn unicast(ws: &mut Ws, msg_id: &str, to: &str, content: Value, ack: bool) -> (String, u64) {
    let mut frame = send_frame(100, msg_id, json!({"targetClientId": to, "content": content}));
    if ack {
        frame["ack"] = json!(true);
    }
    ws.send(&frame).await;
    let r = ws.recv_mode(2).await;
    (
        r["msgId"].as_str().unwrap_or_default().to_owned(),
        r["code"].as_u64().unwrap_or(u64::MAX),
    )
}

async fn joined(ack_result: tokio::task::JoinHandle<(u16, Value)>) -> (u16, Value) {
    ack_result.await.unwrap_or_else(|e| panic!("API task: {e}"))
}

async fn receipts(s: &Setup) {
    let api0 = &s.apis[0];
    let api1 = &s.apis[s.apis.len() - 1];

    // API unicast, acked: the reply comes as soon as the ack is in.
    let (mut a, _) = s.ws.join(0, "bizCode=rc&clientId=a").await;
    let (mut b, _) = s.ws.join(1, "bizCode=rc&clientId=b").await;
    let started = Instant::now();
    let call = api_in_background(
        api0,
        "rc",
        "send_to_client",
        json!({"clientId": "a", "sendUserId": "desk", "data": "please confirm", "ackTimeoutMs": 20000}),
    );
    let (d, id) = delivery_with_ack(&mut a).await;
    assert_eq!(d["from"], "desk");
    ack(&mut a, &id).await;
    let (status, reply) = joined(call).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["messageId"], id.as_str());
    assert_eq!(reply["data"]["recipients"], 1);
    assert_eq!(reply["data"]["acked"], json!(["a"]));
    assert_eq!(reply["data"]["unacked"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered when acked, not at the timeout: {:?}",
        started.elapsed()
    );

    // Without ackTimeoutMs nothing changes: no "ack", no acked/unacked.
    let (status, reply) = api(api1, "rc", "send_to_client", json!({"clientId": "a", "data": 1})).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["data"].get("acked").is_none(), "{reply}");
    assert!(a.recv_mode(100).await.get("ack").is_none());

    // API multi-client send: a acks, b never does, ghost is not online;
    // b, a client of another bizCode with a's clientId, and a client
    // acking for another cannot make anyone count.
    let (mut other_a, _) = s.ws.join(1, "bizCode=rc-other&clientId=a").await;
    let call = api_in_background(
        api1,
        "rc",
        "send_to_clients",
        json!({"clientIds": ["a", "b", "ghost"], "data": "all of you", "ackTimeoutMs": 1500}),
    );
    let (_, id) = delivery_with_ack(&mut a).await;
    let (_, id_b) = delivery_with_ack(&mut b).await;
    assert_eq!(id, id_b, "one message to the list");
    ack(&mut other_a, &id).await;
    a.send(&json!({"mode": 3, "msgId": id, "clientId": "b", "bizCode": "rc"}))
        .await;
    let (status, reply) = joined(call).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["recipients"], 2);
    assert_eq!(reply["data"]["acked"], json!(["a"]));
    assert_eq!(reply["data"]["unacked"], json!(["b", "ghost"]));
    // Nobody to wait for (never seen): answered at once, all unacked.
    let started = Instant::now();
    let (status, reply) = api(
        api0,
        "rc",
        "send_to_clients",
        json!({"clientIds": ["nobody", "ghost"], "data": 1, "ackTimeoutMs": 20000}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["unacked"], json!(["nobody", "ghost"]));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // A late ack, a repeated one, one for an unknown msgId: silently
    // ignored (no error frame); a malformed one gets the usual 1001.
    ack(&mut b, &id).await;
    ack(&mut a, &id).await;
    ack(&mut a, "never-sent").await;
    a.send(&json!({"mode": 3})).await;
    let bad = a.recv_mode(2).await;
    assert_eq!(bad["code"], 1001, "{bad}");
    a.expect_silence(Duration::from_millis(300)).await;

    // A client's unicast with ack: the mode-2 reply at once, the receipt
    // (mode 4) once the recipient acked...
    assert_eq!(
        unicast(&mut a, "m1", "b", json!("got it?"), true).await,
        ("m1".to_owned(), 0)
    );
    let (d, id) = delivery_with_ack(&mut b).await;
    assert_eq!((id.as_str(), d["from"].as_str()), ("m1", Some("a")));
    ack(&mut b, "m1").await;
    let receipt = a.recv_mode(4).await;
    assert_eq!(
        receipt,
        json!({"mode": 4, "msgId": "m1", "acked": ["b"], "unacked": []})
    );

    // A send with ack that fails (1004) gets no receipt and frees its slot.
    assert_eq!(
        unicast(&mut a, "m0", "nobody", json!(0), true).await,
        ("m0".to_owned(), 1004)
    );

    // ... or once edge.ack_timeout (1.5 s here) passed; meanwhile a second
    // send with ack is over this connection's cap (1) and gets 1005, while
    // a send without ack goes as ever.
    assert_eq!(unicast(&mut a, "m2", "b", json!(2), true).await, ("m2".to_owned(), 0));
    assert_eq!(
        unicast(&mut a, "m3", "b", json!(3), true).await,
        ("m3".to_owned(), 1005)
    );
    assert_eq!(unicast(&mut a, "m4", "b", json!(4), false).await, ("m4".to_owned(), 0));
    let receipt = a.recv_mode(4).await;
    assert_eq!(
        receipt,
        json!({"mode": 4, "msgId": "m2", "acked": [], "unacked": ["b"]})
    );
    // The receipt freed the slot.
    assert_eq!(unicast(&mut a, "m5", "b", json!(5), true).await, ("m5".to_owned(), 0));
    for (want, asks) in [("m2", true), ("m4", false), ("m5", true)] {
        let d = b.recv_mode(100).await;
        assert_eq!((d["msgId"].as_str(), d["ack"] == true), (Some(want), asks), "{d}");
    }
    ack(&mut b, "m5").await;
    assert_eq!(a.recv_mode(4).await["acked"], json!(["b"]));

    // API caps: one wait per key here; a second at once is 429/1005.
    let call = api_in_background(
        api0,
        "rc",
        "send_to_client",
        json!({"clientId": "b", "data": "slow", "ackTimeoutMs": 3000}),
    );
    let _ = delivery_with_ack(&mut b).await;
    let (status, reply) = api(
        api0,
        "rc",
        "send_to_client",
        json!({"clientId": "a", "data": "x", "ackTimeoutMs": 1000}),
    )
    .await;
    assert_eq!((status, reply["code"].as_u64()), (429, Some(1005)), "{reply}");
    assert_eq!(joined(call).await.1["data"]["unacked"], json!(["b"]));
    let (status, reply) = api(
        api0,
        "rc",
        "send_to_client",
        json!({"clientId": "a", "data": "x", "ackTimeoutMs": 30001}),
    )
    .await;
    assert_eq!((status, reply["code"].as_u64()), (400, Some(1001)), "{reply}");
    assert!(
        reply["msg"].as_str().is_some_and(|m| m.contains("ackTimeoutMs")),
        "{reply}"
    );

    // Recovered within the timeout (history on): r gets the delivery,
    // drops without acking, recovers on the other edge, gets it again
    // (still asking for an ack) and acks there; the API reply counts it.
    let (mut r, welcome) = s.ws.join(0, "bizCode=rc&clientId=r").await;
    let (epoch, seq) = (
        welcome["data"]["epoch"].as_str().unwrap_or_default().to_owned(),
        welcome["data"]["seq"].as_u64().unwrap_or_default(),
    );
    assert!(!epoch.is_empty(), "history is on: {welcome}");
    let call = api_in_background(
        api1,
        "rc",
        "send_to_client",
        json!({"clientId": "r", "data": "survive", "ackTimeoutMs": 20000}),
    );
    let (_, id) = delivery_with_ack(&mut r).await;
    r.reset();
    let (mut r, welcome) =
        s.ws.join(1, &format!("bizCode=rc&clientId=r&recover={seq}&epoch={epoch}"))
            .await;
    assert_eq!(welcome["data"]["recovered"], true, "{welcome}");
    let (again, id_again) = delivery_with_ack(&mut r).await;
    assert_eq!(id_again, id, "the replayed delivery: {again}");
    ack(&mut r, &id).await;
    let (status, reply) = joined(call).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["acked"], json!(["r"]), "{reply}");
}

#[tokio::test]
async fn receipts_standalone() {
    let started = Instant::now();
    let s = Standalone::start(ENV).await;
    receipts(&Setup {
        ws: Target::standalone(&s, 2),
        apis: vec![s.addr()],
    })
    .await;
    eprintln!("receipts_standalone took {:?}", started.elapsed());
}

#[tokio::test]
async fn cluster_receipts_across_edges_and_routers() {
    let started = Instant::now();
    let mut c = Cluster::start(2, 2, ENV).await;
    let s = Setup {
        ws: Target::cluster(&c),
        apis: vec![c.router_addr(0), c.router_addr(1)],
    };
    receipts(&s).await;

    // The recipient's edge is killed (kill -9) before it acks: it
    // recovers on the other edge within the timeout and acks there.
    let (mut k, welcome) = s.ws.join(0, "bizCode=rc&clientId=k").await;
    let from = format!(
        "recover={}&epoch={}",
        welcome["data"]["seq"].as_u64().unwrap_or_default(),
        welcome["data"]["epoch"].as_str().unwrap_or_default()
    );
    let call = api_in_background(
        &s.apis[0],
        "rc",
        "send_to_client",
        json!({"clientId": "k", "data": "outlive your edge", "ackTimeoutMs": 20000}),
    );
    let (_, id) = delivery_with_ack(&mut k).await;
    c.edges[0].kill9();
    drop(k);
    let (mut k, welcome) = s.ws.join(1, &format!("bizCode=rc&clientId=k&{from}")).await;
    assert_eq!(welcome["data"]["recovered"], true, "{welcome}");
    let (_, again) = delivery_with_ack(&mut k).await;
    assert_eq!(again, id);
    ack(&mut k, &id).await;
    let (status, reply) = joined(call).await;
    assert_eq!((status, &reply["data"]["acked"]), (200, &json!(["k"])), "{reply}");
    eprintln!("cluster_receipts_across_edges_and_routers took {:?}", started.elapsed());
}
