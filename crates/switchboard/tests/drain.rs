//! Graceful drain on SIGTERM with real processes: readiness flips first,
//! presence is clean at once, clients get 1012 spread over the window, the
//! edge exits 0, and clients reconnecting through the load balancer land on
//! another edge and are reachable again. Routers exit 0 on SIGTERM too.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_edge_and_clients_move_to_another() {
    let mut c = Cluster::start(2, 1, &[("SWITCHBOARD_EDGE__DRAIN_WINDOW", "3s")]).await;
    let nginx = Nginx::start(&c.edge_ports);
    let router = c.router_addr(0);
    let draining = c.edge_addr(1);
    let (mut p, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=p&group=room")).await;
    let mut movers = Vec::new();
    for i in 0..6 {
        let (ws, _) = Ws::join(&c.url(1, &format!("bizCode=d1&clientId=m{i}&group=room"))).await;
        movers.push(ws);
    }
    for _ in 0..6 {
        assert_eq!(p.recv_mode(400).await["event"], "online");
    }

    let sigterm = Instant::now();
    c.edges[1].signal("TERM");
    // Readiness flips at once, while sockets are still open.
    eventually!(
        http_get(&draining, "/readyz").await.map(|r| r.0).unwrap_or(0) == 503,
        "readiness did not flip"
    );
    let flipped = sigterm.elapsed();
    // New upgrades are refused.
    let refused = Ws::connect(&format!("ws://{draining}/ws?bizCode=d1&clientId=late")).await;
    assert_eq!(refused.err().map(|e| e.0), Some(503));
    // Presence is clean at once, not when the sockets close.
    eventually!(
        api(&router, "d1", "get_online_list", json!({})).await.1["data"]["list"] == json!(["p"]),
        "drained clients still in presence"
    );
    let clean = sigterm.elapsed();
    assert!(clean < Duration::from_millis(2500), "presence took {clean:?}");

    // Every client gets 1012, spread over the window (each close timed on
    // its own task, so one slow read does not hide the spread).
    let closes = movers.drain(..).map(|mut m| {
        tokio::spawn(async move {
            let closed = m.closed_within(Duration::from_secs(8)).await.0;
            (closed.map(|c| c.code), sigterm.elapsed())
        })
    });
    let mut closed_at = Vec::new();
    for h in futures_util::future::join_all(closes).await {
        let (code, at) = h.expect("close task");
        assert_eq!(code, Some(1012));
        closed_at.push(at);
    }
    let first = closed_at.iter().min().copied().unwrap_or_default();
    let last = closed_at.iter().max().copied().unwrap_or_default();
    assert!(
        last - first >= Duration::from_millis(1500),
        "closes not spread: {closed_at:?}"
    );
    assert!(last <= Duration::from_secs(6), "closes too slow: {closed_at:?}");
    assert!(flipped <= last, "readiness must flip before the last close");
    eprintln!("readiness {flipped:?}, presence clean {clean:?}, closes {first:?}..{last:?}");

    // The peer saw them leave.
    for _ in 0..6 {
        assert_eq!(p.recv_mode(400).await["event"], "offline");
    }
    let status = c.edges[1].wait_exit(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "edge exit status: {status:?}");

    // Reconnecting through the load balancer lands on the other edge.
    let mut back = Vec::new();
    for i in 0..6 {
        let url = format!("ws://127.0.0.1:{}/ws?bizCode=d1&clientId=m{i}&group=room", nginx.port);
        let (ws, w) = Ws::join(&url).await;
        assert!(
            w["data"]["node"].as_str().is_some_and(|n| n.starts_with("edge1-")),
            "{w}"
        );
        back.push(ws);
    }
    p.send(&json!({"msgId":"again","mode":200,"group":"room","content":"welcome back"}))
        .await;
    assert_eq!(p.recv_mode(2).await["data"]["recipients"], 6);
    for ws in &mut back {
        assert_eq!(ws.recv_mode(200).await["content"], "welcome back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_router_cleanly() {
    let mut c = Cluster::start(1, 2, &[]).await;
    let (mut a, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=a")).await;
    c.routers[1].signal("TERM");
    let status = c.routers[1].wait_exit(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "router exit status: {status:?}");
    // The other router carries on.
    a.send(&json!({"msgId":"1","mode":100,"targetClientId":"a","content":1}))
        .await;
    // A send to oneself: the delivery and the reply may come in either order.
    let mut modes = vec![a.recv().await["mode"].clone(), a.recv().await["mode"].clone()];
    modes.sort_by_key(|m| m.as_u64());
    assert_eq!(modes, vec![json!(2), json!(100)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_standalone() {
    let mut s = Standalone::start(&[("SWITCHBOARD_EDGE__DRAIN_WINDOW", "1s")]).await;
    let (mut a, _) = Ws::join(&s.url("bizCode=d1&clientId=a")).await;
    s.proc.signal("TERM");
    assert_eq!(a.closed().await.code, 1012);
    let status = s.proc.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "exit status: {status:?}");
}
