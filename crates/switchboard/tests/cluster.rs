//! Cluster behaviour with real processes: replacement across edges (4009),
//! presence notices and the group size limit, `kill -9` of an edge, two
//! routers sharing load, a router restart and a NATS restart.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

const QUIET: Duration = Duration::from_millis(300);
const FAST: &[(&str, &str)] = &[
    ("SWITCHBOARD_EDGE__RATE_PER_SEC", "100000"),
    ("SWITCHBOARD_EDGE__RATE_BURST", "100000"),
];

/// Whether every process at `addrs` answers `/readyz` with 200 (`ready`),
/// or every one answers something else (`!ready`: it saw the bus go).
async fn all_ready(addrs: &[String], ready: bool) -> bool {
    for addr in addrs {
        let up = matches!(http_get(addr, "/readyz").await, Ok((200, _)));
        if up != ready {
            return false;
        }
    }
    true
}

/// Sends unicast `after-nats-<attempt>` from `a` to `b`: whether it was
/// accepted and arrived within 1 s. The reply is kept in `last`.
async fn unicast_arrives(a: &mut Ws, b: &mut Ws, attempt: &mut u32, last: &mut Value) -> bool {
    *attempt += 1;
    let id = format!("after-nats-{attempt}");
    a.send(&json!({"msgId": id, "mode":100, "targetClientId":"b", "content":1}))
        .await;
    *last = a.recv_mode(2).await;
    last["code"] == 0
        && b.recv_timeout(Duration::from_secs(1))
            .await
            .is_some_and(|v| v["mode"] == 100)
}

/// The `get_online_list` of bizCode d1 on `router` (null on a refusal);
/// the whole answer is kept in `last`.
async fn online_list(router: &str, last: &mut Value) -> Value {
    let (status, r) = api(router, "d1", "get_online_list", json!({})).await;
    *last = json!({"status": status, "body": r});
    if status == 200 {
        last["body"]["data"]["list"].clone()
    } else {
        Value::Null
    }
}

async fn notice(c: &mut Ws) -> (String, String, String) {
    let v = c.recv().await;
    assert_eq!(v["mode"], 400, "expected a presence notice, got {v}");
    (
        v["event"].as_str().unwrap_or_default().to_owned(),
        v["clientId"].as_str().unwrap_or_default().to_owned(),
        v["group"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_replaces_the_older_one_across_edges() {
    let c = Cluster::start(2, 1, &[]).await;
    let (mut peer, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=peer&group=g1")).await;
    let (mut old, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=dup&group=g1")).await;
    assert_eq!(notice(&mut peer).await, ("online".into(), "dup".into(), "g1".into()));

    let (mut new, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=dup&group=g1")).await;
    let closed = old.closed().await;
    assert_eq!(closed.code, 4009);
    assert!(!closed.reason.is_empty() && closed.reason.len() < 123);
    // The peer sees the old one leave and the new one arrive.
    assert_eq!(notice(&mut peer).await, ("offline".into(), "dup".into(), "g1".into()));
    assert_eq!(notice(&mut peer).await, ("online".into(), "dup".into(), "g1".into()));

    peer.send(&json!({"msgId":"u","mode":100,"targetClientId":"dup","content":"to the new one"}))
        .await;
    assert_eq!(peer.recv_mode(2).await["data"]["recipients"], 1);
    assert_eq!(new.recv_mode(100).await["content"], "to the new one");

    // The old connection's late disconnect did not remove the new entry.
    // A negative check, so a fixed wait: a stale disconnect changes nothing
    // the test could observe, so give it QUIET to (wrongly) land first.
    tokio::time::sleep(QUIET).await;
    peer.send(&json!({"msgId":"u2","mode":100,"targetClientId":"dup","content":2}))
        .await;
    assert_eq!(peer.recv_mode(2).await["code"], 0);
    assert_eq!(new.recv_mode(100).await["msgId"], "u2");

    // Same-edge replacement too.
    let (mut newer, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=dup")).await;
    assert_eq!(new.closed().await.code, 4009);
    peer.send(&json!({"msgId":"u3","mode":100,"targetClientId":"dup","content":3}))
        .await;
    assert_eq!(peer.recv_mode(2).await["code"], 0);
    assert_eq!(newer.recv_mode(100).await["msgId"], "u3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_notices_reach_group_peers_except_in_large_groups() {
    let c = Cluster::start(2, 1, &[("SWITCHBOARD_ROUTER__NOTICE_MAX_MEMBERS", "3")]).await;
    let (mut a, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=a&group=g1,big")).await;
    let (mut b, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=b&group=g1")).await;
    assert_eq!(notice(&mut a).await, ("online".into(), "b".into(), "g1".into()));
    b.expect_silence(QUIET).await; // no notice about itself

    // A client with no groups causes no notices; another bizCode neither.
    let (lonely, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=lonely")).await;
    let (other, _) = Ws::join(&c.url(1, "bizCode=d2&clientId=x&group=g1")).await;
    a.expect_silence(QUIET).await;
    lonely.close().await;
    other.close().await;

    b.close().await;
    assert_eq!(notice(&mut a).await, ("offline".into(), "b".into(), "g1".into()));

    // "big": a (1) + m2, m3 → notices; m4 makes it 4 > 3 → none.
    let (_m2, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=m2&group=big")).await;
    assert_eq!(notice(&mut a).await, ("online".into(), "m2".into(), "big".into()));
    let (_m3, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=m3&group=big")).await;
    assert_eq!(notice(&mut a).await, ("online".into(), "m3".into(), "big".into()));
    let (m4, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=m4&group=big")).await;
    a.expect_silence(QUIET).await;
    m4.close().await;
    a.expect_silence(QUIET).await;
}

/// With history on (the default) a unicast to a client of the killed edge
/// is stored for its recovery (SPEC §7: code 0, `recipients: 0`); with
/// history off it is 1004 as before issue 12.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_leaves_presence_within_ten_seconds() {
    killed_edge_leaves_presence(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_leaves_presence_within_ten_seconds_history_off() {
    killed_edge_leaves_presence(false).await;
}

fn history_env(on: bool) -> [(&'static str, &'static str); 1] {
    [("SWITCHBOARD_HISTORY__ENABLED", if on { "true" } else { "false" })]
}

async fn killed_edge_leaves_presence(history: bool) {
    let mut c = Cluster::start(2, 1, &history_env(history)).await;
    let (mut p, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=p&group=g1")).await;
    let (_v1, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=v1&group=g1")).await;
    let (_v2, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=v2&group=g1,g2")).await;
    let mut seen = BTreeSet::new();
    for _ in 0..2 {
        seen.insert(notice(&mut p).await);
    }
    assert_eq!(seen.len(), 2);

    let killed = Instant::now();
    c.edges[1].kill9();
    let mut offline = BTreeSet::new();
    while offline.len() < 2 {
        let v = p
            .recv_timeout(Duration::from_secs(12))
            .await
            .expect("offline notices within 10 s");
        assert_eq!(v["event"], "offline", "{v}");
        offline.insert(v["clientId"].as_str().unwrap_or_default().to_owned());
    }
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(10), "purge took {took:?}");
    assert_eq!(offline, BTreeSet::from(["v1".to_owned(), "v2".to_owned()]));

    p.send(&json!({"msgId":"gone","mode":100,"targetClientId":"v1","content":1}))
        .await;
    let r = p.recv_mode(2).await;
    if history {
        assert_eq!(
            (r["code"].clone(), r["data"]["recipients"].clone()),
            (json!(0), json!(0)),
            "{r}"
        );
    } else {
        assert_eq!(r["code"], 1004);
    }
    p.send(&json!({"msgId":"grp","mode":200,"group":"g1","content":1}))
        .await;
    assert_eq!(p.recv_mode(2).await["data"]["recipients"], 0);
    let (_, m) = http_get(&c.router_addr(0), "/metrics").await.unwrap_or_default();
    assert!(m.contains("switchboard_nodes_purged_total 1"), "{m}");
    eprintln!("edge kill -9 to offline notices: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_share_the_load_without_loss_or_duplicates() {
    let c = Cluster::start(2, 2, FAST).await;
    let (mut s, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=s&group=room")).await;
    let (mut r, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=r&group=room")).await;
    let (mut r2, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=r2&group=room")).await;
    const N: usize = 300;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            let v = if i % 2 == 0 {
                json!({"msgId": i.to_string(), "mode":100, "targetClientId":"r", "content": i})
            } else {
                json!({"msgId": i.to_string(), "mode":200, "group":"room", "content": i})
            };
            s.send(&v).await;
        }
        let mut ok = 0;
        while ok < N {
            let v = s.recv().await;
            if v["mode"] == 2 {
                assert_eq!(v["code"], 0, "{v}");
                ok += 1;
            }
        }
        s
    });
    // r gets every message, in order, once.
    let mut got = Vec::new();
    while got.len() < N {
        let v = r.recv().await;
        if v["mode"] == 100 || v["mode"] == 200 {
            got.push(
                v["msgId"]
                    .as_str()
                    .unwrap_or_default()
                    .parse::<usize>()
                    .unwrap_or(usize::MAX),
            );
        }
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    // r2 (same edge as the sender) gets exactly the group sends, in order.
    let mut got2 = Vec::new();
    while got2.len() < N / 2 {
        let v = r2.recv().await;
        if v["mode"] == 200 {
            got2.push(
                v["msgId"]
                    .as_str()
                    .unwrap_or_default()
                    .parse::<usize>()
                    .unwrap_or(usize::MAX),
            );
        }
    }
    assert_eq!(got2, (0..N).filter(|i| i % 2 == 1).collect::<Vec<_>>());
    let _s = sender.await.expect("sender");
    r.expect_silence(QUIET).await;
    r2.expect_silence(QUIET).await;

    for i in 0..2 {
        let (_, m) = http_get(&c.router_addr(i), "/metrics").await.unwrap_or_default();
        let count: u64 = m
            .lines()
            .find(|l| l.starts_with("switchboard_route_duration_seconds_count"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(count > 0, "router {i} routed nothing: load is not shared");
        eprintln!("router {i} routed {count} sends");
    }
}

/// With history on (the default) the fresh router owns the log's
/// partitions only once the killed router's leases expired (a lease TTL,
/// 5 s): sends until then are refused with 1500 and retried, as a client
/// does; with history off the first send after the restart goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_survives_a_router_restart_and_a_nats_restart() {
    routing_survives_restarts(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_survives_a_router_restart_and_a_nats_restart_history_off() {
    routing_survives_restarts(false).await;
}

async fn routing_survives_restarts(history: bool) {
    let mut c = Cluster::start(2, 1, &history_env(history)).await;
    let (mut a, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=a&group=g")).await;
    let (mut b, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=b&group=g")).await;
    let _ = notice(&mut a).await;

    // No router: a send is answered 1500 (retry), never silently dropped.
    c.routers[0].kill9();
    a.send(&json!({"msgId":"no-router","mode":100,"targetClientId":"b","content":1}))
        .await;
    let r = a.recv_mode(2).await;
    assert_eq!(
        (r["code"].clone(), r["msgId"].clone()),
        (json!(1500), json!("no-router"))
    );
    b.expect_silence(QUIET).await;

    // A fresh router learns presence from the KV bucket.
    c.add_router().await;
    let mut refused = 0;
    loop {
        a.send(&json!({"msgId":"after-router","mode":100,"targetClientId":"b","content":1}))
            .await;
        let code = a.recv_mode(2).await["code"].clone();
        if code == 0 {
            break;
        }
        assert!(history && code == 1500 && refused < 10, "after the restart: {code}");
        refused += 1;
    }
    assert_eq!(b.recv_mode(100).await["msgId"], "after-router");
    b.expect_silence(QUIET).await;

    // NATS goes away and comes back with its store: edges and router
    // reconnect, clients stay connected and reachable.
    c.nats.restart();
    let live = [c.edge_addr(0), c.edge_addr(1), c.router_addr(1)];
    eventually!(
        all_ready(&live, true).await,
        "edges and router did not reconnect to NATS after its restart"
    );
    // Delivery is at-most-once while the bus is down or its subscriptions are
    // being re-established: keep sending until one gets through.
    let mut attempt = 0;
    let mut last = Value::Null;
    eventually!(
        unicast_arrives(&mut a, &mut b, &mut attempt, &mut last).await,
        "routing did not recover after a NATS restart: {last}"
    );
    // Once recovered, nothing is lost.
    for i in 0..20 {
        a.send(&json!({"msgId": format!("steady-{i}"), "mode":100, "targetClientId":"b", "content":i}))
            .await;
        assert_eq!(a.recv_mode(2).await["code"], 0);
        assert_eq!(b.recv_mode(100).await["msgId"], format!("steady-{i}"));
    }
    b.send(&json!({"msgId":"back","mode":200,"group":"g","content":1}))
        .await;
    assert_eq!(b.recv_mode(2).await["data"]["recipients"], 1);
    assert_eq!(a.recv_mode(200).await["msgId"], "back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_longer_than_the_node_timeout_purges_nobody_and_late_leaves_land() {
    let mut c = Cluster::start(2, 1, &[]).await;
    let router = c.router_addr(0);
    let (mut a, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=a&group=g")).await;
    let (mut b, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=b&group=g")).await;
    let (gone, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=gone&group=g")).await;
    for _ in 0..2 {
        assert_eq!(notice(&mut a).await.0, "online");
    }
    let _ = notice(&mut b).await;

    // NATS is away for longer than router.node_timeout (6 s): the edges were
    // silent only because the router could not hear them. One client leaves
    // meanwhile: its edge cannot tell the router yet.
    let everyone = [c.edge_addr(0), c.edge_addr(1), router.clone()];
    c.nats.kill();
    eventually!(
        all_ready(&everyone, false).await,
        "edges and router still report the bus up after NATS was killed"
    );
    gone.close().await;
    // The outage itself, not a wait for a condition: it must outlast the
    // routers' node_timeout (6 s by default).
    tokio::time::sleep(Duration::from_secs(8)).await;
    c.nats.restart();
    eventually!(
        all_ready(&everyone, true).await,
        "edges and router did not reconnect to NATS after its restart"
    );
    let mut last = Value::Null;
    eventually!(
        online_list(&router, &mut last).await == json!(["a", "b"]),
        "presence did not converge to the live clients: {last}"
    );
    // The late disconnect is announced; nobody live was purged.
    assert_eq!(notice(&mut a).await, ("offline".into(), "gone".into(), "g".into()));
    assert_eq!(notice(&mut b).await, ("offline".into(), "gone".into(), "g".into()));
    // A negative check, so a fixed wait: a late purge of a live client
    // would show within 3 s (half the routers' node_timeout).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, r) = api(&router, "d1", "get_online_list", json!({})).await;
    assert_eq!(r["data"]["list"], json!(["a", "b"]), "live clients were purged: {r}");
    a.expect_silence(QUIET).await;
    b.expect_silence(QUIET).await;
}

/// After a NATS restart the processes reconnect on their own schedules, and
/// core NATS drops a publish to an inbox nobody has subscribed again yet. A
/// send accepted right after the restart, to a client whose edge is a
/// moment late reconnecting, must still arrive: the router holds it until
/// that edge answers (at most `nats.max_reconnect_delay` + 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_right_after_a_nats_restart_waits_for_the_recipients_edge_to_reconnect() {
    let mut c = Cluster::start(2, 1, &[]).await;
    let router = c.router_addr(0);
    let (mut a, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=a")).await;
    let (mut b, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=b")).await;

    // Edge 1 is frozen over the restart, so it reconnects after the others.
    c.edges[1].signal("STOP");
    c.nats.restart();
    eventually!(
        all_ready(&[c.edge_addr(0), router.clone()], true).await,
        "edge 0 and the router did not reconnect to NATS after its restart"
    );
    a.send(&json!({"msgId":"early","mode":100,"targetClientId":"b","content":1}))
        .await;
    // The edge wakes up while the router holds the delivery.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.edges[1].signal("CONT");
    let reply = a.recv_mode(2).await;
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(b.recv_mode(100).await["msgId"], "early");
}
