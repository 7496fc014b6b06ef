//! History and recovery (SPEC §7) on `standalone`: a client that reconnects
//! with `recover=<seq>&epoch=<epoch>` gets exactly what was addressed to it
//! meanwhile, in `seq` order, then the live stream, nothing twice and no
//! gap; the cases that answer `recovered: false`; stored unicasts; the
//! history calls; and history turned off for a bizCode.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use std::sync::Mutex;

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
/// broadcasts, in log order; then live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovering_client_gets_exactly_what_it_missed_then_live() {
    let s = Standalone::start(&[]).await;
    let addr = s.addr();
    let (mut r, welcome) = Ws::join(&s.url("bizCode=d1&clientId=r&group=g1")).await;
    let pos = position(&welcome);
    assert!(welcome["data"].get("recovered").is_none(), "{welcome}");
    let (mut a, _) = Ws::join(&s.url("bizCode=d1&clientId=a&group=g1,g2")).await;

    // r's own sends after its position: never replayed to it.
    assert_eq!(send(&mut r, 200, "own-g", json!({"group": "g1", "content": "own group"})).await.0, 0);
    assert_eq!(send(&mut r, 300, "own-b", json!({"content": "own broadcast"})).await.0, 0);
    r.close().await;
    eventually!(
        api(&addr, "d1", "get_online_list", json!({})).await.1["data"]["list"] == json!(["a"]),
        "r still online"
    );

    // While r is away.
    let missed = [
        (200, json!({"group": "g1", "content": "g1 while away"}), 1),
        (200, json!({"group": "g2", "content": "g2: not r's group"}), 0),
        (300, json!({"content": "broadcast while away"}), 0),
        (100, json!({"targetClientId": "r", "content": "unicast while away"}), 0),
        (100, json!({"targetClientId": "a", "content": "a's own unicast"}), 1),
    ];
    for (i, (mode, extra, _)) in missed.iter().enumerate() {
        let (code, n) = send(&mut a, *mode, &format!("m{i}"), extra.clone()).await;
        assert_eq!(code, 0, "send {i}: a unicast to a client offline for less than history.ttl is stored");
        if *mode == 100 && extra["targetClientId"] == "r" {
            assert_eq!(n, 0, "stored for r, reaching nobody now");
        }
    }
    let (st, reply) = api(
        &addr,
        "d1",
        "send_to_system",
        json!({"sendUserId": "r", "data": "api broadcast from r's name"}),
    )
    .await;
    assert_eq!(st, 200, "{reply}");
    api(&addr, "d1", "send_to_group", json!({"groupName": "g1", "data": "api to g1"})).await;

    let (mut r, welcome) = Ws::join(&s.url(&recover_query("bizCode=d1&clientId=r&group=g1", &pos))).await;
    assert_eq!(welcome["data"]["recovered"], true, "{welcome}");
    assert_eq!(position(&welcome), pos, "a recovered welcome names the position it recovered from");
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

/// `recovered: false`, and nothing replayed, for another or a missing
/// epoch, a position beyond the log's head, a bad value, or more than
/// `history.max_replay` entries; exactly `max_replay` is still recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_fails_cleanly_when_it_cannot_be_complete() {
    let s = Standalone::start(&[("SWITCHBOARD_HISTORY__MAX_REPLAY", "5")]).await;
    let (r, welcome) = Ws::join(&s.url("bizCode=d1&clientId=r")).await;
    let (epoch, seq) = position(&welcome);
    r.close().await;
    let (mut a, _) = Ws::join(&s.url("bizCode=d1&clientId=a")).await;
    for i in 0..5 {
        send(&mut a, 100, &format!("u{i}"), json!({"targetClientId": "r", "content": i})).await;
    }
    let base = "bizCode=d1&clientId=r";
    for (query, why) in [
        (format!("{base}&recover={seq}&epoch=another"), "another epoch"),
        (format!("{base}&recover={seq}"), "no epoch"),
        (format!("{base}&recover={}&epoch={epoch}", seq + 1_000_000), "beyond the head"),
        (format!("{base}&recover=-3&epoch={epoch}"), "not a seq"),
    ] {
        let (mut r, welcome) = Ws::join(&s.url(&query)).await;
        assert_eq!(welcome["data"]["recovered"], false, "{why}: {welcome}");
        let head = position(&welcome).1;
        assert!(head > seq, "{why}: a fresh position at the head");
        r.expect_silence(Duration::from_millis(200)).await;
        r.close().await;
    }
    // Five addressed entries: exactly max_replay.
    let (mut r, welcome) = Ws::join(&s.url(&recover_query(base, &(epoch.clone(), seq)))).await;
    assert_eq!(welcome["data"]["recovered"], true, "{welcome}");
    assert_eq!(drain(&mut r, Duration::from_millis(300)).await.len(), 5);
    r.close().await;
    send(&mut a, 300, "b", json!({"content": "sixth"})).await;
    let (mut r, welcome) = Ws::join(&s.url(&recover_query(base, &(epoch, seq)))).await;
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
    assert_eq!(send(&mut a, 100, "1", json!({"targetClientId": "never", "content": 1})).await.0, 1004);
    let (st, r) = api(&addr, "d1", "send_to_client", json!({"clientId": "never", "data": 1})).await;
    assert_eq!((st, r["code"].clone()), (404, json!(1004)), "{r}");

    let (b, _) = Ws::join(&s.url("bizCode=d1&clientId=b")).await;
    b.close().await;
    eventually!(
        api(&addr, "d1", "get_online_list", json!({})).await.1["data"]["list"] == json!(["a"]),
        "b still online"
    );
    assert_eq!(send(&mut a, 100, "2", json!({"targetClientId": "b", "content": 2})).await, (0, 0));
    let (st, r) = api(&addr, "d1", "send_to_client", json!({"clientId": "b", "data": 2})).await;
    assert_eq!((st, r["code"].clone(), r["data"]["recipients"].clone()), (200, json!(0), json!(0)), "{r}");
    // Past history.ttl: a fixed wait, since the time away is what is tested.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(send(&mut a, 100, "3", json!({"targetClientId": "b", "content": 3})).await.0, 1004);
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
            let list: Vec<String> = r["data"]["list"].as_array().cloned().unwrap_or_default().iter().map(label).collect();
            (r, list)
        }
    };
    let (r, all) = history(json!({})).await;
    assert_eq!(all, ["to g1", "to g2", "to a", "a's broadcast"]);
    assert_eq!(r["data"]["epoch"], pos.0.as_str());
    assert!(r["data"]["seq"].as_u64() > Some(pos.1));
    assert_eq!(history(json!({"clientId": "a"})).await.1, ["to g1", "to a"], "not a's own broadcast");
    assert_eq!(history(json!({"clientId": "b"})).await.1, ["a's broadcast"], "not b's own group send");
    assert_eq!(history(json!({"groupName": "g1"})).await.1, ["to g1"]);
    assert_eq!(history(json!({"limit": 2})).await.1, ["to a", "a's broadcast"], "the newest two");
    let first = r["data"]["list"][0]["seq"].as_u64().unwrap_or(0);
    assert_eq!(
        history(json!({"since": first, "limit": 2})).await.1,
        ["to g2", "to a"],
        "the first two after since"
    );
    for bad in [json!({"limit": 0}), json!({"limit": 1001}), json!({"clientId": "a", "groupName": "g1"})] {
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
    let addr = s.addr();
    let (st, r) = api(&addr, "off", "register", json!({"history": false})).await;
    assert_eq!(st, 200, "{r}");
    let (mut a, welcome) = Ws::join(&s.url("bizCode=off&clientId=a")).await;
    assert!(welcome["data"].get("epoch").is_none() && welcome["data"].get("seq").is_none(), "{welcome}");
    let (mut b, _) = Ws::join(&s.url("bizCode=off&clientId=b")).await;
    send(&mut a, 100, "1", json!({"targetClientId": "b", "content": 1})).await;
    let got = b.recv_mode(100).await;
    assert!(got.get("seq").is_none(), "{got}");
    b.close().await;
    eventually!(
        api(&addr, "off", "get_online_list", json!({})).await.1["data"]["list"] == json!(["a"]),
        "b still online"
    );
    assert_eq!(send(&mut a, 100, "2", json!({"targetClientId": "b", "content": 2})).await.0, 1004);
    let (mut b, welcome) = Ws::join(&s.url("bizCode=off&clientId=b&recover=1&epoch=e")).await;
    assert_eq!(welcome["data"]["recovered"], false, "{welcome}");
    b.expect_silence(Duration::from_millis(200)).await;
    let (st, r) = api(&addr, "off", "get_history", json!({})).await;
    assert_eq!((st, r["code"].clone()), (400, json!(1001)), "{r}");

    // Turned on again: a new epoch, and history from then on.
    api(&addr, "off", "register", json!({"history": true})).await;
    let (_c, welcome) = Ws::join(&s.url("bizCode=off&clientId=c")).await;
    assert!(position(&welcome).1 > 0);
    let (_d, welcome) = Ws::join(&s.url("bizCode=d1&clientId=d")).await;
    position(&welcome);
}

/// No gap, no duplicate: a client receiving a steady mix of unicasts,
/// group sends and broadcasts (≈ 200/s) from two clients and the API,
/// while it reconnects 10 times (half of them without a close handshake);
/// what it received, over all its connections, is the set of acknowledged
/// sends, each once, in increasing `seq` on every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_across_ten_reconnects_under_traffic() {
    let s = Standalone::start(&[]).await;
    let addr = s.addr();
    let (mut r, welcome) = Ws::join(&s.url("bizCode=d1&clientId=r&group=g")).await;
    let mut pos = position(&welcome);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for who in ["s1", "s2"] {
        let (mut ws, _) = Ws::join(&s.url(&format!("bizCode=d1&clientId={who}&group=g"))).await;
        let (acked, stop) = (acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let label = format!("{who}-{i}");
                let extra = match i % 3 {
                    0 => json!({"targetClientId": "r", "content": label}),
                    1 => json!({"group": "g", "content": label}),
                    _ => json!({"content": label}),
                };
                let mode = [100, 200, 300][(i % 3) as usize];
                if send(&mut ws, mode, &label, extra).await.0 == 0 {
                    acked.lock().expect("acked").push(label);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(12)).await;
            }
            ws.close().await;
        }));
    }
    {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), addr.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let label = format!("api-{i}");
                let (call, body) = match i % 3 {
                    0 => ("send_to_client", json!({"clientId": "r", "data": label})),
                    1 => ("send_to_group", json!({"groupName": "g", "data": label})),
                    _ => ("send_to_system", json!({"data": label})),
                };
                if api(&addr, "d1", call, body).await.0 == 200 {
                    acked.lock().expect("acked").push(label);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
    }

    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    let mut take = |frames: &[Value], pos: &mut (String, u64)| {
        let s_ = seqs(frames);
        assert!(s_.windows(2).all(|w| w[0] < w[1]), "seq order on one connection: {s_:?}");
        if let Some(&last) = s_.last() {
            assert!(last > pos.1);
            pos.1 = last;
        }
        for f in frames {
            *received.entry(label(f)).or_default() += 1;
        }
    };
    for round in 0..10u64 {
        let mut frames = Vec::new();
        let until = tokio::time::Instant::now() + Duration::from_millis(150 + 37 * round);
        while let Some(v) = r.recv_timeout(until.saturating_duration_since(tokio::time::Instant::now())).await {
            if matches!(v["mode"].as_u64(), Some(100 | 200 | 300)) {
                frames.push(v);
            }
        }
        take(&frames, &mut pos);
        if round % 2 == 0 {
            r.close().await;
        } else {
            r.reset();
        }
        let (next, welcome) = Ws::join(&s.url(&recover_query("bizCode=d1&clientId=r&group=g", &pos))).await;
        assert_eq!(welcome["data"]["recovered"], true, "round {round}: {welcome}");
        r = next;
    }
    stop.store(true, Ordering::Relaxed);
    for t in senders {
        t.await.expect("sender");
    }
    let frames = drain(&mut r, Duration::from_millis(800)).await;
    take(&frames, &mut pos);

    let acked: HashSet<String> = acked.lock().expect("acked").iter().cloned().collect();
    assert!(acked.len() > 300, "only {} sends acknowledged", acked.len());
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "received twice: {twice:?}");
    let got: HashSet<String> = received.into_keys().collect();
    let missing: Vec<_> = acked.difference(&got).collect();
    assert!(missing.is_empty(), "{} acknowledged sends never arrived: {missing:?}", missing.len());
    let extra: Vec<_> = got.difference(&acked).collect();
    assert!(extra.is_empty(), "unacknowledged sends arrived: {extra:?}");
}
