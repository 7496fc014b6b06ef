//! Connection events (README "Connection events"): what a backend reads
//! from the `sb-events` JetStream stream while a client lives, the tenant
//! isolation of events, upstream messages (mode 500) and their limits, and
//! events turned off. Read as a backend would: a JetStream consumer filtered
//! on one bizCode's subjects.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt as _;
use switchboard_protocol::event::{Cause, Event, EventKind};
use switchboard_protocol::subject;
use tokio::sync::mpsc;

/// Every event of one bizCode, from the start of the stream, as they
/// arrive (an ordered consumer filtered on `sb.events.<biz>.>`).
struct Reader {
    rx: mpsc::UnboundedReceiver<Event>,
    seen: Vec<Event>,
}

impl Reader {
    async fn of(nats: &NatsServer, biz: &str) -> Self {
        let client = nats.connect_admin().await.expect("admin");
        let js = async_nats::jetstream::new(client);
        let stream = {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match js.get_stream(subject::EVENTS_STREAM).await {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => panic!("no {} stream: {e}", subject::EVENTS_STREAM),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        };
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: subject::events_of_biz(biz),
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(m)) = messages.next().await {
                let e = Event::from_json(&m.payload).expect("every event parses");
                // The subject names the event's own bizCode and kind.
                assert_eq!(subject::parse_event(&m.subject), Some((e.biz.clone(), e.kind)));
                if tx.send(e).is_err() {
                    break;
                }
            }
        });
        Self { rx, seen: Vec::new() }
    }

    /// Waits for the next events until one matches `want`; returns it.
    async fn until(&mut self, what: &str, want: impl Fn(&Event) -> bool) -> Event {
        if let Some(e) = self.seen.iter().find(|e| want(e)) {
            return e.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) => {
                    self.seen.push(e.clone());
                    if want(&e) {
                        return e;
                    }
                }
                _ => panic!("no {what} event; seen: {:#?}", self.seen),
            }
        }
    }

    /// Whatever else arrives within `quiet`.
    async fn drain(&mut self, quiet: Duration) -> &[Event] {
        while let Ok(Some(e)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            self.seen.push(e);
        }
        &self.seen
    }
}

fn is(kind: EventKind, client: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| e.kind == kind && e.client == client
}

/// One client's life, read from the stream in order: it connects (online,
/// connected), the API binds and unbinds a group, it sends an upstream
/// message, a second connection with its clientId replaces it (disconnected
/// with cause `replaced` and connected, neither offline nor online), and the
/// new connection's edge is killed (the router's crash purge: disconnected
/// with cause `crash_purge`, then offline). Every event has a unique id,
/// the node that observed it and a timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_life_reaches_the_stream_in_order() {
    let mut c = Cluster::start(2, 1, &[("SWITCHBOARD_ROUTER__NODE_TIMEOUT", "2s")]).await;
    let mut events = Reader::of(&c.nats, "d1").await;
    let started = switchboard_ms();

    let (mut first, w) = Ws::join(&c.url(0, "bizCode=d1&clientId=c.1&group=g1")).await;
    let edge1 = w["data"]["node"].as_str().expect("node").to_owned();
    let connected = events.until("connected", is(EventKind::Connected, "c.1")).await;
    assert_eq!(connected.node, edge1);
    assert_eq!(connected.groups.as_deref(), Some(&["g1".to_owned()][..]));
    let conn1 = connected.conn.expect("connId");
    let online = events.until("online", is(EventKind::Online, "c.1")).await;
    assert_eq!(
        (online.edge.as_deref(), online.conn),
        (Some(edge1.as_str()), Some(conn1))
    );

    let router = c.router_addr(0);
    let bind = json!({"clientId": "c.1", "groupName": "g2"});
    assert_eq!(api(&router, "d1", "bind_to_group", bind.clone()).await.0, 200);
    let bound = events.until("bound", is(EventKind::Bound, "c.1")).await;
    assert_eq!(bound.group.as_deref(), Some("g2"));
    assert_eq!(api(&router, "d1", "unbind_from_group", bind).await.0, 200);
    events.until("unbound", is(EventKind::Unbound, "c.1")).await;

    first
        .send(&json!({"mode": 500, "msgId": "u1", "content": {"typing": true}}))
        .await;
    let reply = first.recv_mode(2).await;
    assert_eq!(
        (reply["msgId"].clone(), reply["code"].clone()),
        (json!("u1"), json!(0)),
        "{reply}"
    );
    let up = events.until("upstream", is(EventKind::Upstream, "c.1")).await;
    assert_eq!(up.msg_id.as_deref(), Some("u1"));
    assert_eq!(up.content.as_ref().map(|c| c.get()), Some(r#"{"typing":true}"#));
    assert_eq!((up.node.as_str(), up.conn), (edge1.as_str(), Some(conn1)));

    // Replaced by a connection on the other edge.
    let (_second, w) = Ws::join(&c.url(1, "bizCode=d1&clientId=c.1")).await;
    let edge2 = w["data"]["node"].as_str().expect("node").to_owned();
    assert_eq!(first.closed().await.code, 4009);
    let gone = events
        .until("disconnected (replaced)", |e| {
            e.kind == EventKind::Disconnected && e.conn == Some(conn1)
        })
        .await;
    assert_eq!(
        (gone.code, gone.cause, gone.reason.as_deref()),
        (
            Some(4009),
            Some(Cause::Replaced),
            Some("replaced by a newer connection")
        )
    );
    let again = events
        .until("connected (second)", |e| {
            e.kind == EventKind::Connected && e.node == edge2
        })
        .await;
    let conn2 = again.conn.expect("connId");

    // Its edge dies; the router purges it.
    c.edges[1].kill9();
    let purged = events
        .until("disconnected (crash purge)", |e| {
            e.kind == EventKind::Disconnected && e.cause == Some(Cause::CrashPurge)
        })
        .await;
    assert_eq!(
        (purged.edge.as_deref(), purged.conn),
        (Some(edge2.as_str()), Some(conn2))
    );
    assert_ne!(purged.node, edge2, "observed by the router");
    let offline = events.until("offline", is(EventKind::Offline, "c.1")).await;
    assert_eq!(offline.cause, Some(Cause::CrashPurge));

    let all = events.drain(Duration::from_millis(500)).await;
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    // `online` (router) and `connected` (edge) of a new connection come from
    // two processes: either may be stored first.
    let mut expected = vec![
        "connected",
        "online",
        "bound",
        "unbound",
        "upstream",
        "disconnected",
        "connected",
        "disconnected",
        "offline",
    ];
    if kinds.first() == Some(&"online") {
        expected.swap(0, 1);
    }
    assert_eq!(kinds, expected, "{all:#?}");
    let ids: std::collections::BTreeSet<&str> = all.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "ids are unique");
    for e in all {
        assert_eq!((e.biz.as_str(), e.client.as_str()), ("d1", "c.1"));
        assert!(e.ts >= started && e.ts <= switchboard_ms() + 1000, "{e:?}");
        assert!(!e.node.is_empty());
    }
}

/// Milliseconds since the Unix epoch, as events count them.
fn switchboard_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A consumer of one bizCode sees nothing of another; an upstream frame
/// that names another bizCode or clientId still becomes an event of its
/// own connection's. Upstream messages obey the sends' limits: a frame
/// over `edge.max_frame_bytes` gets 1003, over the rate 1005, and neither
/// is stored. A draining edge publishes its connections' `disconnected`
/// (cause `drain`) before it exits, and the router their `offline`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stay_in_their_tenant_and_upstream_obeys_the_limits() {
    let mut c = Cluster::start(
        1,
        1,
        &[
            ("SWITCHBOARD_EDGE__DRAIN_WINDOW", "200ms"),
            ("SWITCHBOARD_EDGE__RATE_PER_SEC", "1"),
            ("SWITCHBOARD_EDGE__RATE_BURST", "3"),
            ("SWITCHBOARD_EDGE__MAX_FRAME_BYTES", "1024"),
        ],
    )
    .await;
    let mut d1 = Reader::of(&c.nats, "d1").await;
    let mut d2 = Reader::of(&c.nats, "d2").await;
    let (mut a, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=a")).await;
    let (_b, _) = Ws::join(&c.url(0, "bizCode=d2&clientId=b")).await;

    // Crafted: the event is still a's, of d1.
    a.send(&json!({"mode": 500, "msgId": "x", "bizCode": "d2", "clientId": "b", "content": 1}))
        .await;
    assert_eq!(a.recv_mode(2).await["code"], 0);
    let up = d1.until("upstream", is(EventKind::Upstream, "a")).await;
    assert_eq!((up.biz.as_str(), up.msg_id.as_deref()), ("d1", Some("x")));

    // Over the size limit: 1003, nothing stored.
    let big = "x".repeat(2000);
    a.send(&json!({"mode": 500, "msgId": "big", "content": big})).await;
    let r = a.recv_mode(2).await;
    assert_eq!(r["code"], 1003, "{r}");
    // Over the rate (burst 3, one already spent): 1005, nothing stored.
    let mut stored = vec!["x".to_owned()];
    let mut limited = 0;
    for i in 0..4 {
        let id = format!("r{i}");
        a.send(&json!({"mode": 500, "msgId": id, "content": i})).await;
        let r = a.recv_mode(2).await;
        match r["code"].as_u64() {
            Some(0) => stored.push(id),
            Some(1005) => limited += 1,
            _ => panic!("{r}"),
        }
    }
    assert!(limited >= 1, "the rate limit refused none");

    d2.until("connected of d2", is(EventKind::Connected, "b")).await;
    let last = stored.last().cloned().unwrap_or_default();
    d1.until("last stored upstream", |e| e.msg_id.as_deref() == Some(last.as_str()))
        .await;
    let d1_seen = d1.drain(Duration::from_millis(500)).await.to_vec();
    let upstream: Vec<String> = d1_seen
        .iter()
        .filter(|e| e.kind == EventKind::Upstream)
        .filter_map(|e| e.msg_id.clone())
        .collect();
    assert_eq!(upstream, stored, "exactly the answered-0 messages are stored");
    assert!(d1_seen.iter().all(|e| e.biz == "d1" && e.client == "a"), "{d1_seen:#?}");
    let d2_seen = d2.drain(Duration::from_millis(200)).await;
    assert!(d2_seen.iter().all(|e| e.biz == "d2" && e.client == "b"), "{d2_seen:#?}");
    assert!(d2_seen.iter().all(|e| e.kind != EventKind::Upstream), "{d2_seen:#?}");

    // The edge drains (SIGTERM): its last events are published before it
    // exits, with cause `drain`.
    c.edges[0].signal("TERM");
    assert_eq!(a.closed().await.code, 1012);
    let gone = d1.until("disconnected (drain)", is(EventKind::Disconnected, "a")).await;
    assert_eq!((gone.code, gone.cause), (Some(1012), Some(Cause::Drain)));
    let offline = d1.until("offline (drain)", is(EventKind::Offline, "a")).await;
    assert_eq!(offline.cause, Some(Cause::Drain));
    assert!(c.edges[0]
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

/// `events.enabled = false`: no stream is created, nothing is published,
/// and an upstream message is refused with 1006 (cluster and standalone).
/// `edge.send_modes` without 500 refuses it with 1006 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_off_publish_nothing() {
    let c = Cluster::start(1, 1, &[("SWITCHBOARD_EVENTS__ENABLED", "false")]).await;
    let (mut a, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=a")).await;
    a.send(&json!({"mode": 500, "msgId": "u", "content": 1})).await;
    let r = a.recv_mode(2).await;
    assert_eq!(r["code"], 1006, "{r}");
    drop(a);
    let js = async_nats::jetstream::new(c.nats.connect_admin().await.expect("admin"));
    assert!(
        js.get_stream(subject::EVENTS_STREAM).await.is_err(),
        "the events stream exists with events off"
    );

    let s = Standalone::start(&[("SWITCHBOARD_EVENTS__ENABLED", "false")]).await;
    let (mut a, _) = Ws::join(&s.url("bizCode=d1&clientId=a")).await;
    a.send(&json!({"mode": 500, "msgId": "u", "content": 1})).await;
    assert_eq!(a.recv_mode(2).await["code"], 1006);
    let (_, metrics) = http_get(&s.addr(), "/metrics").await.expect("metrics");
    assert!(metrics.contains("switchboard_events_published_total 0"), "{metrics}");

    let s = Standalone::start(&[("SWITCHBOARD_EDGE__SEND_MODES", "[100,200,300]")]).await;
    let (mut a, _) = Ws::join(&s.url("bizCode=d1&clientId=a")).await;
    a.send(&json!({"mode": 500, "msgId": "u", "content": 1})).await;
    assert_eq!(a.recv_mode(2).await["code"], 1006);
}

/// `standalone` hands events to its in-process consumer: an upstream
/// message is answered 0 once taken, and the process counts every event
/// it published (connected, online, upstream, disconnected, offline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_stores_upstream_messages_in_process() {
    let s = Standalone::start(&[]).await;
    let (mut a, _) = Ws::join(&s.url("bizCode=d1&clientId=a")).await;
    a.send(&json!({"mode": 500, "msgId": "u", "content": {"hello": "backend"}}))
        .await;
    let r = a.recv_mode(2).await;
    assert_eq!(
        (r["msgId"].clone(), r["code"].clone(), r["data"].clone()),
        (json!("u"), json!(0), json!(null))
    );
    a.close().await;
    eventually!(
        http_get(&s.addr(), "/metrics")
            .await
            .is_ok_and(|(_, m)| m.contains("switchboard_events_published_total 5")),
        "standalone did not publish connected, online, upstream, disconnected and offline: {:?}",
        http_get(&s.addr(), "/metrics").await
    );
}
