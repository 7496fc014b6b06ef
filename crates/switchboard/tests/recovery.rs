//! History and recovery (SPEC §7), on `standalone` and on a cluster (3
//! edges, 2 routers, real NATS with the chart's permissions): a client that
//! reconnects with `recover=<seq>&epoch=<epoch>` gets exactly what was
//! addressed to it meanwhile, in `seq` order, then the live stream, nothing
//! twice and no gap, also when its edge is killed, a router is killed, NATS
//! restarts or deliveries between routers and edges are dropped; the cases
//! that answer `recovered: false`; stored unicasts; the history calls; and
//! history turned off for a bizCode.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use std::sync::Mutex;

/// Where clients connect (one base URL per edge) and the API answers (one
/// address per router).
#[derive(Clone)]
struct Setup {
    ws: Vec<String>,
    apis: Vec<String>,
}

impl Setup {
    fn standalone(s: &Standalone) -> Self {
        Self {
            ws: vec![format!("ws://{}/ws", s.addr())],
            apis: vec![s.addr()],
        }
    }

    fn cluster(c: &Cluster) -> Self {
        Self {
            ws: (0..c.edge_ports.len())
                .map(|i| format!("ws://{}/ws", c.edge_addr(i)))
                .collect(),
            apis: (0..c.router_ports.len()).map(|i| c.router_addr(i)).collect(),
        }
    }

    fn url(&self, edge: usize, query: &str) -> String {
        format!("{}?{query}", self.ws[edge % self.ws.len()])
    }

    fn api(&self, i: usize) -> String {
        self.apis[i % self.apis.len()].clone()
    }
}

/// The welcome's log position: (epoch, seq).
fn position(welcome: &Value) -> (String, u64) {
    let d = &welcome["data"];
    let epoch = d["epoch"].as_str().unwrap_or_else(|| panic!("no epoch: {welcome}"));
    let seq = d["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {welcome}"));
    (epoch.to_owned(), seq)
}

fn recover_query(base: &str, (epoch, seq): &(String, u64)) -> String {
    format!("{base}&recover={seq}&epoch={epoch}")
}

/// A client send and its reply's code and recipients; the sender's own
/// deliveries that arrive meanwhile are skipped.
async fn send(ws: &mut Ws, mode: u64, id: &str, extra: Value) -> (u64, u64) {
    ws.send(&send_frame(mode, id, extra)).await;
    loop {
        let v = ws.recv().await;
        if v["mode"] == 2 && v["msgId"] == id {
            return (
                v["code"].as_u64().unwrap_or(u64::MAX),
                v["data"]["recipients"].as_u64().unwrap_or(0),
            );
        }
    }
}

/// Reads deliveries (modes 100/200/300) until `quiet` passes without one;
/// presence notices are skipped.
async fn drain(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    while let Some(v) = ws.recv_timeout(quiet).await {
        if matches!(v["mode"].as_u64(), Some(100 | 200 | 300)) {
            got.push(v);
        }
    }
    got
}

/// What a delivery carries to tell sends apart: a client's content, or the
/// `data` of an API send's content.
fn label(v: &Value) -> String {
    match &v["content"] {
        Value::String(s) => s.clone(),
        c => c["data"].as_str().map_or_else(|| c.to_string(), str::to_owned),
    }
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|v| v["seq"].as_u64().unwrap_or(0)).collect()
}

/// The SPEC §7 scenario: what a recovering client gets is exactly its
/// unicasts, its groups' sends and its bizCode's broadcasts since its
/// position (API sends included, even with a `sendUserId` equal to its
/// clientId), not another group's, not its own group sends and
/// broadcasts, in log order; then live. In a cluster it reconnects on
/// another edge, and the API is called through both routers.
async fn exactly_what_it_missed_then_live(s: &Setup) {
    let (mut r, welcome) = Ws::join(&s.url(0, "bizCode=d1&clientId=r&group=g1")).await;
    let pos = position(&welcome);
    assert!(welcome["data"].get("recovered").is_none(), "{welcome}");
    let (mut a, _) = Ws::join(&s.url(1, "bizCode=d1&clientId=a&group=g1,g2")).await;

    // r's own sends after its position: never replayed to it.
    assert_eq!(
        send(&mut r, 200, "own-g", json!({"group": "g1", "content": "own group"}))
            .await
            .0,
        0
    );
    assert_eq!(
        send(&mut r, 300, "own-b", json!({"content": "own broadcast"})).await.0,
        0
    );
    r.close().await;
    eventually!(
        api(&s.api(0), "d1", "get_online_list", json!({})).await.1["data"]["list"] == json!(["a"]),
        "r still online"
    );

    // While r is away.
    let missed = [
        (200, json!({"group": "g1", "content": "g1 while away"})),
        (200, json!({"group": "g2", "content": "g2: not r's group"})),
        (300, json!({"content": "broadcast while away"})),
        (100, json!({"targetClientId": "r", "content": "unicast while away"})),
        (100, json!({"targetClientId": "a", "content": "a's own unicast"})),
    ];
    for (i, (mode, extra)) in missed.iter().enumerate() {
        let (code, n) = send(&mut a, *mode, &format!("m{i}"), extra.clone()).await;
        assert_eq!(
            code, 0,
            "send {i}: a unicast to a client offline for less than history.ttl is stored"
        );
        if *mode == 100 && extra["targetClientId"] == "r" {
            assert_eq!(n, 0, "stored for r, reaching nobody now");
        }
    }
    let (st, reply) = api(
        &s.api(0),
        "d1",
        "send_to_system",
        json!({"sendUserId": "r", "data": "api broadcast from r's name"}),
    )
    .await;
    assert_eq!(st, 200, "{reply}");
    let (st, reply) = api(
        &s.api(1),
        "d1",
        "send_to_group",
        json!({"groupName": "g1", "data": "api to g1"}),
    )
    .await;
    assert_eq!(st, 200, "{reply}");

    let (mut r, welcome) = Ws::join(&s.url(2, &recover_query("bizCode=d1&clientId=r&group=g1", &pos))).await;
    assert_eq!(welcome["data"]["recovered"], true, "{welcome}");
    assert_eq!(
        position(&welcome),
        pos,
        "a recovered welcome names the position it recovered from"
    );
    let got = drain(&mut r, Duration::from_millis(500)).await;
    let labels: Vec<String> = got.iter().map(label).collect();
    assert_eq!(
        labels,
        [
            "g1 while away",
            "broadcast while away",
            "unicast while away",
            "api broadcast from r's name",
            "api to g1"
        ],
        "{got:?}"
    );
    let s_ = seqs(&got);
    assert!(s_.windows(2).all(|w| w[0] < w[1]) && s_[0] > pos.1, "{s_:?}");
    assert_eq!(got[0]["msgId"], "m0");
    assert_eq!(got[0]["from"], "a");

    // Then live, after everything replayed.
    send(&mut a, 200, "live", json!({"group": "g1", "content": "live"})).await;
    let live = r.recv_mode(200).await;
    assert_eq!(live["content"], "live");
    assert!(live["seq"].as_u64() > s_.last().copied());
    r.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovering_client_gets_exactly_what_it_missed_then_live() {
    let s = Standalone::start(&[]).await;
    exactly_what_it_missed_then_live(&Setup::standalone(&s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_client_recovers_on_another_edge_what_it_missed_then_live() {
    let c = Cluster::start(3, 2, &[]).await;
    exactly_what_it_missed_then_live(&Setup::cluster(&c)).await;
}

/// `recovered: false`, and nothing replayed, for another or a missing
/// epoch, a position beyond the log's head, a bad value, or more than
/// `history.max_replay` entries; exactly `max_replay` is still recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_fails_cleanly_when_it_cannot_be_complete() {
    let s = Standalone::start(&[MAX_REPLAY_5]).await;
    fails_cleanly(&Setup::standalone(&s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_recovery_fails_cleanly_when_it_cannot_be_complete() {
    let c = Cluster::start(3, 2, &[MAX_REPLAY_5]).await;
    fails_cleanly(&Setup::cluster(&c)).await;
}

const MAX_REPLAY_5: (&str, &str) = ("SWITCHBOARD_HISTORY__MAX_REPLAY", "5");

async fn fails_cleanly(s: &Setup) {
    let (r, welcome) = Ws::join(&s.url(1, "bizCode=d1&clientId=r")).await;
    let (epoch, seq) = position(&welcome);
    r.close().await;
    let (mut a, _) = Ws::join(&s.url(2, "bizCode=d1&clientId=a")).await;
    for i in 0..5 {
        send(
            &mut a,
            100,
            &format!("u{i}"),
            json!({"targetClientId": "r", "content": i}),
        )
        .await;
    }
    let base = "bizCode=d1&clientId=r";
    for (query, why) in [
        (format!("{base}&recover={seq}&epoch=another"), "another epoch"),
        (format!("{base}&recover={seq}"), "no epoch"),
        (
            format!("{base}&recover={}&epoch={epoch}", seq + 1_000_000),
            "beyond the head",
        ),
        (format!("{base}&recover=-3&epoch={epoch}"), "not a seq"),
    ] {
        let (mut r, welcome) = Ws::join(&s.url(0, &query)).await;
        assert_eq!(welcome["data"]["recovered"], false, "{why}: {welcome}");
        let head = position(&welcome).1;
        assert!(head > seq, "{why}: a fresh position at the head");
        r.expect_silence(Duration::from_millis(200)).await;
        r.close().await;
    }
    // Five addressed entries: exactly max_replay.
    let (mut r, welcome) = Ws::join(&s.url(1, &recover_query(base, &(epoch.clone(), seq)))).await;
    assert_eq!(welcome["data"]["recovered"], true, "{welcome}");
    assert_eq!(drain(&mut r, Duration::from_millis(300)).await.len(), 5);
    r.close().await;
    send(&mut a, 300, "b", json!({"content": "sixth"})).await;
    let (mut r, welcome) = Ws::join(&s.url(2, &recover_query(base, &(epoch, seq)))).await;
    assert_eq!(welcome["data"]["recovered"], false, "six to replay: {welcome}");
    r.expect_silence(Duration::from_millis(200)).await;
}

/// A unicast to a client never seen, or offline for longer than
/// `history.ttl`, is still 1004; within the ttl it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicasts_are_stored_for_recently_offline_clients_only() {
    let s = Standalone::start(&[("SWITCHBOARD_HISTORY__TTL", "2s")]).await;
    let addr = s.addr();
    let (mut a, _) = Ws::join(&s.url("bizCode=d1&clientId=a")).await;
    assert_eq!(
        send(&mut a, 100, "1", json!({"targetClientId": "never", "content": 1}))
            .await
            .0,
        1004
    );
    let (st, r) = api(&addr, "d1", "send_to_client", json!({"clientId": "never", "data": 1})).await;
    assert_eq!((st, r["code"].clone()), (404, json!(1004)), "{r}");

    let (b, _) = Ws::join(&s.url("bizCode=d1&clientId=b")).await;
    b.close().await;
    eventually!(
        api(&addr, "d1", "get_online_list", json!({})).await.1["data"]["list"] == json!(["a"]),
        "b still online"
    );
    assert_eq!(
        send(&mut a, 100, "2", json!({"targetClientId": "b", "content": 2})).await,
        (0, 0)
    );
    let (st, r) = api(&addr, "d1", "send_to_client", json!({"clientId": "b", "data": 2})).await;
    assert_eq!(
        (st, r["code"].clone(), r["data"]["recipients"].clone()),
        (200, json!(0), json!(0)),
        "{r}"
    );
    // Past history.ttl: a fixed wait, since the time away is what is tested.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        send(&mut a, 100, "3", json!({"targetClientId": "b", "content": 3}))
            .await
            .0,
        1004
    );
}

/// `get_history` answers what the log holds for a client, a group or the
/// bizCode; `delete_history` empties it and changes the epoch, so no
/// client recovers across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_calls_read_and_empty_the_log() {
    let s = Standalone::start(&[]).await;
    let addr = s.addr();
    let (mut a, welcome) = Ws::join(&s.url("bizCode=d1&clientId=a&group=g1")).await;
    let pos = position(&welcome);
    let (mut b, _) = Ws::join(&s.url("bizCode=d1&clientId=b&group=g2")).await;
    send(&mut b, 200, "1", json!({"group": "g1", "content": "to g1"})).await;
    send(&mut b, 200, "2", json!({"group": "g2", "content": "to g2"})).await;
    send(&mut b, 100, "3", json!({"targetClientId": "a", "content": "to a"})).await;
    send(&mut a, 300, "4", json!({"content": "a's broadcast"})).await;
    // Another tenant's entries never show.
    let (mut x, _) = Ws::join(&s.url("bizCode=other&clientId=x")).await;
    send(&mut x, 300, "5", json!({"content": "other tenant"})).await;

    let history = |body: Value| {
        let addr = addr.clone();
        async move {
            let (st, r) = api(&addr, "d1", "get_history", body).await;
            assert_eq!(st, 200, "{r}");
            let list: Vec<String> = r["data"]["list"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(label)
                .collect();
            (r, list)
        }
    };
    let (r, all) = history(json!({})).await;
    assert_eq!(all, ["to g1", "to g2", "to a", "a's broadcast"]);
    assert_eq!(r["data"]["epoch"], pos.0.as_str());
    assert!(r["data"]["seq"].as_u64() > Some(pos.1));
    assert_eq!(
        history(json!({"clientId": "a"})).await.1,
        ["to g1", "to a"],
        "not a's own broadcast"
    );
    assert_eq!(
        history(json!({"clientId": "b"})).await.1,
        ["a's broadcast"],
        "not b's own group send"
    );
    assert_eq!(history(json!({"groupName": "g1"})).await.1, ["to g1"]);
    assert_eq!(
        history(json!({"limit": 2})).await.1,
        ["to a", "a's broadcast"],
        "the newest two"
    );
    let first = r["data"]["list"][0]["seq"].as_u64().unwrap_or(0);
    assert_eq!(
        history(json!({"since": first, "limit": 2})).await.1,
        ["to g2", "to a"],
        "the first two after since"
    );
    for bad in [
        json!({"limit": 0}),
        json!({"limit": 1001}),
        json!({"clientId": "a", "groupName": "g1"}),
    ] {
        let (st, r) = api(&addr, "d1", "get_history", bad.clone()).await;
        assert_eq!((st, r["code"].clone()), (400, json!(1001)), "{bad}: {r}");
    }

    let (st, r) = api(&addr, "d1", "delete_history", json!({})).await;
    assert_eq!(st, 200, "{r}");
    assert_ne!(r["data"]["epoch"], pos.0.as_str(), "the epoch changes");
    assert_eq!(history(json!({})).await.1, Vec::<String>::new());
    a.close().await;
    let (mut a, welcome) = Ws::join(&s.url(&recover_query("bizCode=d1&clientId=a&group=g1", &pos))).await;
    assert_eq!(welcome["data"]["recovered"], false, "{welcome}");
    a.expect_silence(Duration::from_millis(200)).await;
    drop(x);
}

/// History turned off for one bizCode (`register` with `"history":
/// false`): no `seq`, no `epoch`, `recovered: false`, and a unicast to a
/// departed client is 1004 as before; another bizCode keeps its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_off_for_a_bizcode_keeps_todays_behaviour() {
    let s = Standalone::start(&[]).await;
    history_off(&Setup::standalone(&s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_history_off_for_a_bizcode_keeps_todays_behaviour() {
    let c = Cluster::start(3, 2, &[]).await;
    history_off(&Setup::cluster(&c)).await;
}

async fn history_off(s: &Setup) {
    let addr = s.api(0);
    let (st, r) = api(&addr, "off", "register", json!({"history": false})).await;
    assert_eq!(st, 200, "{r}");
    let (mut a, welcome) = Ws::join(&s.url(1, "bizCode=off&clientId=a")).await;
    assert!(
        welcome["data"].get("epoch").is_none() && welcome["data"].get("seq").is_none(),
        "{welcome}"
    );
    let (mut b, _) = Ws::join(&s.url(2, "bizCode=off&clientId=b")).await;
    send(&mut a, 100, "1", json!({"targetClientId": "b", "content": 1})).await;
    let got = b.recv_mode(100).await;
    assert!(got.get("seq").is_none(), "{got}");
    b.close().await;
    eventually!(
        api(&addr, "off", "get_online_list", json!({})).await.1["data"]["list"] == json!(["a"]),
        "b still online"
    );
    assert_eq!(
        send(&mut a, 100, "2", json!({"targetClientId": "b", "content": 2}))
            .await
            .0,
        1004
    );
    let (mut b, welcome) = Ws::join(&s.url(0, "bizCode=off&clientId=b&recover=1&epoch=e")).await;
    assert_eq!(welcome["data"]["recovered"], false, "{welcome}");
    b.expect_silence(Duration::from_millis(200)).await;
    let (st, r) = api(&addr, "off", "get_history", json!({})).await;
    assert_eq!((st, r["code"].clone()), (400, json!(1001)), "{r}");

    // Turned on again: a new epoch, and history from then on (a router
    // that cached the switch learns it within 5 s).
    api(&s.api(1), "off", "register", json!({"history": true})).await;
    eventually!(
        Ws::join(&s.url(1, "bizCode=off&clientId=c")).await.1["data"]
            .get("seq")
            .is_some(),
        "history did not come back on"
    );
    let (_d, welcome) = Ws::join(&s.url(2, "bizCode=d1&clientId=d")).await;
    position(&welcome);
}

/// What happens to the cluster in the middle of [`no_gap_and_no_duplicate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Nothing: the client closes (or resets) and reconnects.
    None,
    /// The client's edge is killed (`kill -9`) instead of a close.
    KillItsEdge,
    /// One of the two routers is killed (`kill -9`).
    KillARouter,
    /// The NATS server restarts.
    RestartNats,
}

/// Connects with `query` to `edge` until a welcome comes (an edge being
/// killed, an owner being replaced and NATS restarting all refuse for a
/// moment); returns the connection, its welcome and the edge it is on.
async fn join_retrying(s: &Setup, dead: &HashSet<usize>, mut edge: usize, query: &str) -> (Ws, Value, usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        while dead.contains(&(edge % s.ws.len())) {
            edge += 1;
        }
        if let Ok(mut ws) = Ws::connect(&s.url(edge, query)).await {
            if let Ok(Some(w)) = ws.next_within(Duration::from_secs(10)).await {
                if w["mode"] == 0 {
                    return (ws, w, edge % s.ws.len());
                }
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no welcome on {query}");
        edge += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client that sends a mix of unicasts to `r`, group sends to `g` and
/// broadcasts, about every 12 ms, from edge `edge`, until `stop`;
/// reconnecting whenever its connection ends. Records what was attempted
/// and what was acknowledged (code 0).
fn spawn_sender(
    s: Setup,
    who: &'static str,
    edge: usize,
    dead: Arc<Mutex<HashSet<usize>>>,
    log: Arc<Mutex<Sent>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let query = format!("bizCode=d1&clientId={who}&group=g");
        let mut i = 0u32;
        'connect: while !stop.load(Ordering::Relaxed) {
            let dead_now = dead.lock().expect("dead").clone();
            let (mut ws, _, _) = join_retrying(&s, &dead_now, edge, &query).await;
            while !stop.load(Ordering::Relaxed) {
                let label = format!("{who}-{i}");
                i += 1;
                let (mode, extra) = match i % 3 {
                    0 => (100, json!({"targetClientId": "r", "content": label})),
                    1 => (200, json!({"group": "g", "content": label})),
                    _ => (300, json!({"content": label})),
                };
                log.lock().expect("log").attempted.insert(label.clone());
                if !ws.try_send(&send_frame(mode, &label, extra)).await {
                    continue 'connect;
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match ws.next_within(left).await {
                        Ok(Some(v)) if v["mode"] == 2 && v["msgId"] == label.as_str() => {
                            if v["code"] == 0 {
                                log.lock().expect("log").acked.insert(label.clone());
                            }
                            break;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => continue 'connect,
                    }
                }
                tokio::time::sleep(Duration::from_millis(12)).await;
            }
            ws.close().await;
        }
    })
}

/// Sends through the API (alternating routers) about every 15 ms.
fn spawn_api_sender(s: Setup, log: Arc<Mutex<Sent>>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let label = format!("api-{i}");
            let (call, body) = match i % 3 {
                0 => ("send_to_client", json!({"clientId": "r", "data": label})),
                1 => ("send_to_group", json!({"groupName": "g", "data": label})),
                _ => ("send_to_system", json!({"data": label})),
            };
            log.lock().expect("log").attempted.insert(label.clone());
            let addr = s.api(i as usize);
            let auth = format!("Bearer {API_KEY}");
            let headers = [("systemId", "d1"), ("Authorization", auth.as_str())];
            let (path, body) = (format!("/api/websocket/{call}"), body.to_string());
            let post = http_post(&addr, &path, &headers, &body);
            // A killed router refuses the connection: not acknowledged.
            if let Ok(Ok((200, _))) = tokio::time::timeout(Duration::from_secs(10), post).await {
                log.lock().expect("log").acked.insert(label);
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
}

/// What the senders attempted and what was acknowledged.
#[derive(Default)]
struct Sent {
    attempted: HashSet<String>,
    acked: HashSet<String>,
}

/// No gap, no duplicate: a client receiving a steady mix of unicasts,
/// group sends and broadcasts (≈ 200/s) from senders on two edges and the
/// API, while it reconnects 10 times to changing edges (half of them
/// without a close handshake), with `fault` in the middle: what it
/// received over all its connections holds every acknowledged send, once,
/// nothing that was not sent, in increasing `seq` on every connection,
/// and every reconnect was recovered.
async fn no_gap_and_no_duplicate<F, Fut>(s: &Setup, fault: Fault, mut inject: F)
where
    F: FnMut(Fault) -> Fut,
    Fut: Future<Output = ()>,
{
    let dead = Arc::new(Mutex::new(HashSet::<usize>::new()));
    let (mut r, welcome, mut on) = join_retrying(s, &HashSet::new(), 0, "bizCode=d1&clientId=r&group=g").await;
    let mut pos = position(&welcome);
    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = vec![
        spawn_sender(s.clone(), "s1", 1, dead.clone(), sent.clone(), stop.clone()),
        spawn_sender(s.clone(), "s2", 2, dead.clone(), sent.clone(), stop.clone()),
    ];
    senders.push(spawn_api_sender(s.clone(), sent.clone(), stop.clone()));

    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    let mut connections = 1;
    let mut take = |frames: &[Value], pos: &mut (String, u64)| {
        let frames: Vec<&Value> = frames
            .iter()
            .filter(|v| matches!(v["mode"].as_u64(), Some(100 | 200 | 300)))
            .collect();
        let s_: Vec<u64> = frames.iter().map(|v| v["seq"].as_u64().unwrap_or(0)).collect();
        assert!(
            s_.windows(2).all(|w| w[0] < w[1]),
            "seq order on one connection: {s_:?}"
        );
        if let Some(&last) = s_.last() {
            assert!(last > pos.1, "{last} after {}", pos.1);
            pos.1 = last;
        }
        for f in frames {
            *received.entry(label(f)).or_default() += 1;
        }
    };
    for round in 0..10u64 {
        let (_, frames) = r.closed_within(Duration::from_millis(150 + 37 * round)).await;
        take(&frames, &mut pos);
        if round == 3 && fault == Fault::KillItsEdge {
            dead.lock().expect("dead").insert(on);
            inject(fault).await;
            let (_, frames) = r.closed_within(Duration::from_secs(5)).await;
            take(&frames, &mut pos);
        } else if round == 3 && fault != Fault::None {
            inject(fault).await;
            r.close().await;
        } else if round % 2 == 0 {
            r.close().await;
        } else {
            r.reset();
        }
        let dead_now = dead.lock().expect("dead").clone();
        let query = recover_query("bizCode=d1&clientId=r&group=g", &pos);
        let (next, welcome, edge) = join_retrying(s, &dead_now, on + 1, &query).await;
        assert_eq!(
            welcome["data"]["recovered"], true,
            "round {round} ({fault:?}): {welcome}"
        );
        (r, on) = (next, edge);
        connections += 1;
    }
    // The last connection reads until the senders stop and the stream is
    // quiet; a close meanwhile (a detected loss) is recovered too.
    stop.store(true, Ordering::Relaxed);
    for t in senders {
        t.await.expect("sender");
    }
    loop {
        let (closed, frames) = r.closed_within(Duration::from_millis(1500)).await;
        take(&frames, &mut pos);
        if closed.is_none() {
            break;
        }
        let dead_now = dead.lock().expect("dead").clone();
        let query = recover_query("bizCode=d1&clientId=r&group=g", &pos);
        let (next, welcome, edge) = join_retrying(s, &dead_now, on + 1, &query).await;
        assert_eq!(
            welcome["data"]["recovered"], true,
            "after the senders stopped: {welcome}"
        );
        (r, on) = (next, edge);
        connections += 1;
    }

    let sent = sent.lock().expect("sent");
    assert!(sent.acked.len() > 100, "only {} sends acknowledged", sent.acked.len());
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "received twice: {twice:?}");
    let got: HashSet<String> = received.into_keys().collect();
    let mut missing: Vec<_> = sent.acked.difference(&got).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged sends never arrived over {connections} connections ({fault:?}): {missing:?}",
        missing.len(),
        sent.acked.len()
    );
    let extra: Vec<_> = got.difference(&sent.attempted).collect();
    assert!(extra.is_empty(), "never sent, yet arrived: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_across_ten_reconnects_under_traffic() {
    let s = Standalone::start(&[]).await;
    no_gap_and_no_duplicate(&Setup::standalone(&s), Fault::None, |_| async {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_no_gap_and_no_duplicate_across_ten_reconnects_to_other_edges() {
    let c = Cluster::start(3, 2, &[]).await;
    no_gap_and_no_duplicate(&Setup::cluster(&c), Fault::None, |_| async {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_no_gap_when_the_clients_edge_is_killed() {
    let c = Arc::new(Mutex::new(Cluster::start(3, 2, &[]).await));
    let s = Setup::cluster(&c.lock().expect("cluster"));
    no_gap_and_no_duplicate(&s, Fault::KillItsEdge, |_| {
        let c = c.clone();
        async move {
            // The client is on edge 0 at round 3 (its 4th connection).
            c.lock().expect("cluster").edges[0].kill9();
        }
    })
    .await;
}

/// The router that owns d1's history partition now, from the routers'
/// logs (acquired more often than released).
fn owner_of_d1(c: &Cluster) -> Option<usize> {
    // d1 is in partition 6 of 16 (pinned by the log crate's tests).
    let count = |log: &str, what: &str| {
        log.lines()
            .filter(|l| l.contains(what) && l.contains("partition=6 "))
            .count()
    };
    c.routers.iter().position(|r| {
        let log = r.log();
        count(&log, "partition acquired") > count(&log, "partition released")
    })
}

/// The router that owns the client's partition is killed: its lease
/// expires, the other router fences the log and takes over; sends wait for
/// it (or fail and are not acknowledged), and the edges close the
/// connections that joined under the dead owner so they recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_no_gap_when_the_partition_owner_is_killed_mid_stream() {
    let c = Arc::new(Mutex::new(Cluster::start(3, 2, &[]).await));
    let s = Setup::cluster(&c.lock().expect("cluster"));
    no_gap_and_no_duplicate(&s, Fault::KillARouter, |_| {
        let c = c.clone();
        async move {
            let mut c = c.lock().expect("cluster");
            let owner = owner_of_d1(&c).expect("one router owns d1's partition");
            c.routers[owner].kill9();
        }
    })
    .await;
}

/// A connection that is still replaying when its partition's owner
/// changes is healed in place once its replay is out, not closed with
/// 1012: the client recovers 170 stored unicasts of 60 KB and reads only
/// its welcome (the edge's replay waits for the socket), the owner is
/// killed, and the other router takes over; then the client reads
/// everything stored, in order, then what was sent after the takeover,
/// and the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_connection_replaying_across_an_owner_change_is_healed_not_closed() {
    const STORED: usize = 170;
    let mut c = Cluster::start(1, 2, &[]).await;
    let (r, welcome) = Ws::join(&c.url(0, "bizCode=d1&clientId=r")).await;
    let from = position(&welcome);
    r.close().await;
    let body = |i: usize| json!({"clientId": "r", "data": format!("{i:03}{}", "x".repeat(60_000))});
    for i in 0..STORED {
        let (st, res) = api(&c.router_addr(i % 2), "d1", "send_to_client", body(i)).await;
        assert_eq!((st, res["code"].clone()), (200, json!(0)), "stored send {i}: {res}");
    }
    // Recovering: the welcome, then a replay of about 10 MB that the
    // socket, not read, cannot take.
    let (mut r, welcome) = Ws::join(&c.url(0, &recover_query("bizCode=d1&clientId=r", &from))).await;
    assert_eq!(welcome["data"]["recovered"], true, "{welcome}");

    let owner = owner_of_d1(&c).expect("one router owns d1's partition");
    c.routers[owner].kill9();
    let other = c.router_addr(1 - owner);
    // Stored by the new owner (it takes over once the lease expires).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut after = 0;
    while after < 3 {
        let (st, res) = api(
            &other,
            "d1",
            "send_to_client",
            json!({"clientId": "r", "data": format!("after-{after}")}),
        )
        .await;
        if (st, res["code"].clone()) == (200, json!(0)) {
            after += 1;
        } else {
            assert!(tokio::time::Instant::now() < deadline, "no owner took over: {st} {res}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let mut got = Vec::new();
    while got.len() < STORED + 3 {
        match r.next_within(Duration::from_secs(10)).await {
            Ok(Some(v)) if v["mode"] == 100 => got.push(label(&v)),
            Ok(Some(_)) => {}
            Ok(None) => panic!("{} of {} deliveries, then silence", got.len(), STORED + 3),
            Err(closed) => panic!("closed after {} of {} deliveries: {closed:?}", got.len(), STORED + 3),
        }
    }
    let want: Vec<String> = (0..STORED)
        .map(|i| format!("{i:03}{}", "x".repeat(60_000)))
        .chain((0..3).map(|i| format!("after-{i}")))
        .collect();
    assert!(
        got == want,
        "deliveries out of order, missing or twice: {:?}",
        got.iter().map(|l| &l[..l.len().min(8)]).collect::<Vec<_>>()
    );
    r.expect_silence(Duration::from_millis(500)).await;
    let (_, metrics) = http_get(&c.edge_addr(0), "/metrics").await.expect("metrics");
    let counter = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert_eq!(
        counter("switchboard_recovery_closes_total "),
        Some(0.0),
        "connections closed to recover"
    );
    assert!(
        counter("switchboard_heals_total ").is_some_and(|n| n >= 1.0),
        "the owner change was not healed"
    );
}

/// A new partition owner whose presence watch lags still plans with every
/// connection. Both routers see presence changes 7 s late (a test hook, as
/// a watch whose consumer is re-created after a NATS server went away); a
/// client joins group `room` through d1's owner, which is killed at once.
/// The other router takes the partition over before its watch has shown it
/// the client; it waits for its index to catch up with the store before it
/// serves the partition (or gives it back and takes it again), so every
/// group send it acknowledges reaches the client. Before, it planned them
/// without the client, and the client's edge, which heals only up to the
/// new owner's fence, never got them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_new_owner_whose_presence_watch_lags_plans_with_every_connection() {
    let mut c = Cluster::start(1, 2, &[("SWITCHBOARD_TEST_PRESENCE_WATCH_DELAY_MS", "7000")]).await;
    let owner = owner_of_d1(&c).expect("one router owns d1's partition");
    let (mut r, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=r&group=room")).await;
    c.routers[owner].kill9();
    let other = c.router_addr(1 - owner);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    for i in 0..3 {
        let label = format!("after-{i}");
        loop {
            let body = json!({"groupName": "room", "sendUserId": "backend", "data": label});
            let (st, res) = api(&other, "d1", "send_to_group", body).await;
            if (st, res["code"].clone()) == (200, json!(0)) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no owner took over: {st} {res}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let got = loop {
            match r.next_within(Duration::from_secs(10)).await {
                Ok(Some(v)) if v["mode"] == 200 => break label_of(&v),
                Ok(Some(_)) => {}
                Ok(None) => panic!("{label} was acknowledged and never arrived"),
                Err(closed) => panic!("closed while waiting for {label}: {closed:?}"),
            }
        };
        assert_eq!(got, label);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_no_gap_across_a_nats_restart() {
    let c = Arc::new(Mutex::new(Cluster::start(3, 2, &[]).await));
    let s = Setup::cluster(&c.lock().expect("cluster"));
    no_gap_and_no_duplicate(&s, Fault::RestartNats, |_| {
        let c = c.clone();
        async move {
            c.lock().expect("cluster").nats.restart();
        }
    })
    .await;
}

/// Deliveries from the partitions' owners to the edges are dropped on
/// purpose (every 25th, a test hook of the routers): each loss is
/// detected (a gap in the numbering or a tick) and healed: in place from
/// the log (`switchboard_heals_total`), or by closing the connection with
/// 1012 so it recovers (`switchboard_recovery_closes_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dropped_deliveries_are_detected_and_healed() {
    let c = Cluster::start(3, 2, &[("SWITCHBOARD_TEST_DROP_LOGGED_DELIVERIES", "25")]).await;
    let s = Setup::cluster(&c);
    no_gap_and_no_duplicate(&s, Fault::None, |_| async {}).await;
    let mut healed = 0.0;
    for i in 0..3 {
        let (_, metrics) = http_get(&c.edge_addr(i), "/metrics").await.expect("metrics");
        for name in ["switchboard_heals_total ", "switchboard_recovery_closes_total "] {
            healed += metrics
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    assert!(healed > 0.0, "no loss was detected");
}

/// A 3-server NATS JetStream cluster (routes between three `nats-server`
/// processes), the log and the buckets at 3 replicas: one server is
/// stopped; no acknowledged entry and no bound group is lost, recovery
/// still works, and sends go on (SPEC §7, last guarantee).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_r3_losing_one_nats_server_loses_no_entry_and_no_membership() {
    let (mut servers, c) = r3_cluster().await;
    let s = Setup::cluster(&c);
    let none = HashSet::new();
    let (r, welcome, _) = join_retrying(&s, &none, 0, "bizCode=d1&clientId=r").await;
    let pos = position(&welcome);
    let (st, reply) = api(
        &s.api(0),
        "d1",
        "bind_to_group",
        json!({"clientId": "r", "groupName": "room"}),
    )
    .await;
    assert_eq!(st, 200, "{reply}");
    r.close().await;
    eventually!(
        api(&s.api(1), "d1", "get_online_list", json!({})).await.1["data"]["list"] == json!([]),
        "r still online"
    );
    let (mut a, _, _) = join_retrying(&s, &none, 1, "bizCode=d1&clientId=a").await;
    let mut acked = Vec::new();
    for i in 0..30 {
        let label = format!("before-{i}");
        let (mode, extra) = match i % 3 {
            0 => (100, json!({"targetClientId": "r", "content": label})),
            1 => (200, json!({"group": "room", "content": label})),
            _ => (300, json!({"content": label})),
        };
        assert_eq!(send(&mut a, mode, &label, extra).await.0, 0, "{label}");
        acked.push(label);
    }

    // One server of three goes away: the streams and buckets keep a quorum
    // (once their leaders are elected again, which the log read shows).
    servers[0].kill();
    eventually!(
        {
            let (st, h) = api(&s.api(1), "d1", "get_history", json!({"clientId": "r"})).await;
            st == 200 && h["data"]["count"] == 30
        },
        "the log is not readable after losing one server of three"
    );

    let query = recover_query("bizCode=d1&clientId=r", &pos);
    let (mut r, welcome, _) = join_retrying(&s, &none, 0, &query).await;
    assert_eq!(welcome["data"]["recovered"], true, "{welcome}");
    assert_eq!(
        welcome["data"]["groups"],
        json!(["room"]),
        "the bound group survived: {welcome}"
    );
    // The replay, or a delivery after it, can also be cut with 1012: the
    // partition's owner may change after the loss, and a connection that
    // cannot be healed in place is closed to recover (docs/operations.md,
    // "What happens when…"). The client then recovers from the last entry
    // it got, as the SDK does.
    let mut follow = Follow {
        epoch: pos.0.clone(),
        last: pos.1,
    };
    let mut got: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < acked.len() {
        match follow.next(&s, &mut r, deadline).await {
            Some(v) => got.push(label(&v)),
            None => break,
        }
    }
    // Anything more within 1.5 s would be a duplicate.
    let quiet = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Some(v) = follow.next(&s, &mut r, quiet).await {
        got.push(label(&v));
    }
    assert_eq!(got, acked, "every acknowledged entry, in order, once");

    // Sends go on (a leader election may refuse a few: 1500, retried; a
    // refused attempt may still have been stored, so a retried label can
    // arrive twice, an acknowledged one always arrives).
    let mut retried = HashSet::new();
    for i in 0..5 {
        let label = format!("after-{i}");
        let mut tries = 0;
        while send_or_reconnect(
            &s,
            &mut a,
            "bizCode=d1&clientId=a",
            200,
            &label,
            json!({"group": "room", "content": label}),
        )
        .await
            != 0
        {
            tries += 1;
            retried.insert(label.clone());
            assert!(tries < 20, "{label} kept failing after the server loss");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        loop {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let v = follow
                .next(&s, &mut r, deadline)
                .await
                .unwrap_or_else(|| panic!("{label} never arrived"));
            let got = label_of(&v);
            if got == label {
                break;
            }
            assert!(retried.contains(&got), "{got} arrived while waiting for {label}");
        }
    }
    drop(servers);
}

/// On a 3-server NATS JetStream cluster with the log at 3 replicas, sends
/// that arrive together are all stored and delivered once: a replicated
/// stream took only the first of an owner's pipelined appends (10164)
/// before the log sent them one at a time there (docs/recovery.md). Three
/// clients write 20 sends each without waiting, so the edge forwards them
/// in batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_r3_a_burst_of_sends_is_stored_and_delivered_once() {
    let (servers, c) = r3_cluster().await;
    let s = Setup::cluster(&c);
    let none = HashSet::new();
    let (mut l, _, _) = join_retrying(&s, &none, 0, "bizCode=d2&clientId=l").await;
    let mut senders = Vec::new();
    for k in 0..3 {
        senders.push(
            join_retrying(&s, &none, 0, &format!("bizCode=d2&clientId=s{k}"))
                .await
                .0,
        );
    }
    for (k, w) in senders.iter_mut().enumerate() {
        for i in 0..20 {
            let id = format!("burst-{k}-{i}");
            w.send(&send_frame(300, &id, json!({"content": id}))).await;
        }
    }
    for (k, w) in senders.iter_mut().enumerate() {
        let mut answered = 0;
        while answered < 20 {
            let v = w.recv().await;
            if v["mode"] == 2 {
                assert_eq!(v["code"], 0, "sender {k} at R3: {v}");
                answered += 1;
            }
        }
    }
    let mut got: Vec<String> = drain(&mut l, Duration::from_millis(1500))
        .await
        .iter()
        .map(label)
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..3)
        .flat_map(|k| (0..20).map(move |i| format!("burst-{k}-{i}")))
        .collect();
    want.sort();
    assert_eq!(got, want, "every stored send of the burst, once");
    l.close().await;
    for w in senders {
        w.close().await;
    }
    drop(servers);
}

/// Two edges and two routers on a 3-server NATS JetStream cluster, the
/// buckets and the log at 3 replicas; the servers the cluster does not own
/// (the second and third), for the test to stop.
async fn r3_cluster() -> (Vec<NatsServer>, Cluster) {
    let mut servers = NatsServer::start_cluster_secured(3);
    let url = cluster_url(&servers);
    let first = servers.remove(0);
    let replicated = [
        ("SWITCHBOARD_NATS__URL", url.as_str()),
        ("SWITCHBOARD_NATS__REPLICAS", "3"),
        ("SWITCHBOARD_HISTORY__REPLICAS", "3"),
    ];
    (servers, Cluster::on(first, 2, 2, &replicated).await)
}

fn label_of(v: &Value) -> String {
    label(v)
}

/// A client send's reply code; a connection closed meanwhile (1012 after
/// an owner change) is opened again with `query` and the send counts as
/// not acknowledged.
async fn send_or_reconnect(s: &Setup, ws: &mut Ws, query: &str, mode: u64, id: &str, extra: Value) -> u64 {
    if ws.try_send(&send_frame(mode, id, extra)).await {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match ws.next_within(left).await {
                Ok(Some(v)) if v["mode"] == 2 && v["msgId"] == id => return v["code"].as_u64().unwrap_or(u64::MAX),
                Ok(Some(_)) => {}
                Ok(None) => return u64::MAX,
                Err(c) => {
                    assert_eq!(c.code, 1012, "sender closed: {c:?}");
                    break;
                }
            }
        }
    }
    *ws = join_retrying(s, &HashSet::new(), 1, query).await.0;
    u64::MAX
}

/// A history client `r` of `d1` that recovers after a 1012, as the SDK
/// does: from the last entry it got.
struct Follow {
    epoch: String,
    last: u64,
}

impl Follow {
    /// The next delivery (mode 100, 200 or 300) before `deadline`; `None`
    /// when none came.
    async fn next(&mut self, s: &Setup, r: &mut Ws, deadline: tokio::time::Instant) -> Option<Value> {
        loop {
            let left = deadline.checked_duration_since(tokio::time::Instant::now())?;
            match r.next_within(left).await {
                Ok(Some(v)) if matches!(v["mode"].as_u64(), Some(100 | 200 | 300)) => {
                    self.last = v["seq"].as_u64().unwrap_or(self.last);
                    return Some(v);
                }
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(c) => {
                    assert_eq!(c.code, 1012, "closed while following: {c:?}");
                    let query = recover_query("bizCode=d1&clientId=r", &(self.epoch.clone(), self.last));
                    let (again, welcome, _) = join_retrying(s, &HashSet::new(), 0, &query).await;
                    assert_eq!(welcome["data"]["recovered"], true, "{welcome}");
                    *r = again;
                }
            }
        }
    }
}

/// Review finding: a client that reconnects over and over (online and
/// offline a few ms each, on alternating edges) must never make a unicast
/// to it answer 1004: every one is delivered or stored (SPEC §7), also in
/// the moment between its presence entry leaving and its offline stamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_unicasts_to_a_flapping_client_are_never_1004() {
    let c = Cluster::start(2, 2, &[]).await;
    let s = Setup::cluster(&c);
    let stop = Arc::new(AtomicBool::new(false));
    let flapper = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut ws) = Ws::connect(&s.url(i, "bizCode=d1&clientId=flap")).await {
                    let _ = ws.next_within(Duration::from_millis(20)).await;
                    if i % 2 == 0 {
                        ws.close().await;
                    } else {
                        ws.reset();
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(u64::try_from(i % 4).unwrap_or(0) * 5)).await;
            }
        })
    };
    // Seen once first, so the client is "recently offline" from now on.
    eventually!(
        api(&s.api(0), "d1", "get_online_list", json!({})).await.1["data"]["list"] == json!(["flap"]),
        "the flapping client never came online"
    );
    let mut refused = Vec::new();
    for i in 0..300 {
        let body = json!({"clientId": "flap", "data": i});
        let (st, r) = api(&s.api(i), "d1", "send_to_client", body).await;
        if st != 200 {
            refused.push((i, st, r));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    flapper.await.expect("flapper");
    assert!(refused.is_empty(), "{} of 300 refused: {refused:?}", refused.len());
}
