//! Losing NATS servers of a 3-server JetStream cluster (routes between
//! three real `nats-server` processes; the presence buckets and the log at
//! 3 replicas), with 2 routers and 3 edges whose links are spread over the
//! servers, clients on every edge (two bizCodes) and traffic of every kind
//! (unicast, group, broadcast, the API) in every step:
//!
//! 1. one server is killed: JetStream keeps its quorum; after the leader
//!    elections everything works (connect, sends, API, presence,
//!    recovery);
//! 2. a second one is killed: no quorum. Nothing may be acknowledged that is
//!    not stored, and nobody is left without an answer: sends are answered
//!    (an error code) or their connection is closed, new connects are
//!    refused, the API answers;
//! 3. a server comes back (quorum again), then the last one: everything
//!    heals: every client is connected again with `recovered: true`,
//!    presence lists exactly the connected clients (no ghost), sends work,
//!    and every acknowledged message reached every client it was addressed
//!    to, exactly once, in `seq` order, never another tenant's.
//!
//! What each step showed and how long it took is printed (`--nocapture`)
//! for docs/operations.md.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::fleet::{online_list, Fleet, Ledger, Member, To};
use common::*;

const EDGES: usize = 3;
/// d1 clients per edge.
const PER_EDGE: usize = 4;

/// The clients: on edge k, `d1` members `e<k>m<j>` (all in `room`, and in
/// `half<j % 2>`) and one `d2` member `x<k>` in a group also named `room`.
fn spawn_fleet(c: &Cluster) -> Fleet {
    let urls = |home: usize| -> Vec<String> {
        (0..EDGES)
            .map(|i| format!("ws://{}/ws", c.edge_addr((home + i) % EDGES)))
            .collect()
    };
    let mut fleet = Fleet::default();
    for k in 0..EDGES {
        for j in 0..PER_EDGE {
            let half = format!("half{}", j % 2);
            fleet.add(Member::spawn(urls(k), "d1", &format!("e{k}m{j}"), &["room", &half]));
        }
        fleet.add(Member::spawn(urls(k), "d2", &format!("x{k}"), &["room"]));
    }
    fleet
}

fn idx(k: usize, j: usize) -> usize {
    k * (PER_EDGE + 1) + j
}

fn x_idx(k: usize) -> usize {
    k * (PER_EDGE + 1) + PER_EDGE
}

/// One round of traffic: from every edge a unicast to a client on the next
/// edge, a group send and a broadcast (d1), a group send in d2; through
/// every router an API group send and an API unicast. All at once.
struct Round {
    /// Client sends: reply code (`None`: connection closed first, or no
    /// answer: see the ledger).
    codes: Vec<Option<u64>>,
    /// API sends: HTTP status (0: no answer).
    statuses: Vec<u16>,
    took: Duration,
}

impl Round {
    fn ok(&self) -> bool {
        self.codes.iter().all(|c| *c == Some(0)) && self.statuses.iter().all(|s| *s == 200)
    }

    fn summary(&self) -> String {
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        for c in &self.codes {
            *codes
                .entry(c.map_or("closed/none".to_owned(), |c| c.to_string()))
                .or_default() += 1;
        }
        let mut st: BTreeMap<u16, usize> = BTreeMap::new();
        for s in &self.statuses {
            *st.entry(*s).or_default() += 1;
        }
        format!("client replies {codes:?}, API {st:?}, round took {:?}", self.took)
    }
}

async fn round(c: &Cluster, fleet: &Fleet, ledger: &Mutex<Ledger>, tag: &str) -> Round {
    let started = Instant::now();
    let mut sends = Vec::new();
    for k in 0..EDGES {
        let next = format!("e{}m1", (k + 1) % EDGES);
        sends.push((idx(k, 0), format!("d1:{tag}-u{k}"), To::Client(next)));
        sends.push((idx(k, 2), format!("d1:{tag}-g{k}"), To::Group(format!("half{}", k % 2))));
        sends.push((idx(k, 3), format!("d1:{tag}-b{k}"), To::Biz));
        sends.push((x_idx(k), format!("d2:{tag}-g{k}"), To::Group("room".into())));
    }
    let client = futures_util::future::join_all(sends.iter().map(|(i, label, to)| fleet.send(ledger, *i, label, to)));
    let mut api_sends = Vec::new();
    for r in 0..c.router_ports.len() {
        let addr = c.router_addr(r);
        api_sends.push((addr.clone(), format!("d1:{tag}-ag{r}"), To::Group("room".into())));
        api_sends.push((addr, format!("d1:{tag}-au{r}"), To::Client(format!("e{r}m3"))));
    }
    let apis = futures_util::future::join_all(
        api_sends
            .iter()
            .map(|(addr, label, to)| fleet.api_send(ledger, addr, "d1", label, to)),
    );
    let (codes, statuses) = tokio::join!(client, apis);
    Round {
        codes,
        statuses,
        took: started.elapsed(),
    }
}

/// A fresh connection to edge `k` (bizCode `probe`): `welcome`, or how it
/// was refused.
async fn fresh_connect(c: &Cluster, k: usize, n: usize) -> String {
    let url = c.url(k, &format!("bizCode=probe&clientId=p{k}-{n}"));
    match tokio::time::timeout(Duration::from_secs(20), Ws::connect(&url)).await {
        Err(_) => "no answer within 20 s".into(),
        Ok(Err((status, body))) => format!("HTTP {status} {body}"),
        Ok(Ok(mut ws)) => match ws.next_within(Duration::from_secs(20)).await {
            Ok(Some(w)) if w["mode"] == 0 => {
                ws.close().await;
                "welcome".into()
            }
            Ok(Some(w)) => format!("first frame {w}"),
            Ok(None) => "no welcome within 20 s".into(),
            Err(closed) => format!("close {} {}", closed.code, closed.reason),
        },
    }
}

/// Whether both routers list exactly the fleet's connected d1 and d2
/// clients.
async fn presence_matches(c: &Cluster, fleet: &Fleet) -> bool {
    for biz in ["d1", "d2"] {
        let want = fleet.online(biz);
        for r in 0..c.router_ports.len() {
            if online_list(&c.router_addr(r), biz).await.as_ref() != Some(&want) {
                return false;
            }
        }
    }
    true
}

/// Waits until a round of traffic succeeds, a fresh connect works on every
/// edge and presence matches; notes how long each took after `since`.
async fn until_healed(
    c: &Cluster,
    fleet: &Fleet,
    ledger: &Mutex<Ledger>,
    step: &str,
    since: Instant,
    notes: &mut Vec<String>,
) {
    let deadline = since + Duration::from_secs(60);
    let mut n = 0;
    loop {
        n += 1;
        let r = round(c, fleet, ledger, &format!("{step}-{n}")).await;
        let ok = r.ok();
        notes.push(format!("{step}: +{:.1?} round {n}: {}", since.elapsed(), r.summary()));
        if ok {
            notes.push(format!(
                "{step}: sends and API all succeed {:.1?} after the fault",
                since.elapsed()
            ));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: sends never worked again: {notes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut m = 0;
    loop {
        m += 1;
        let outcomes = futures_util::future::join_all((0..EDGES).map(|k| fresh_connect(c, k, m))).await;
        if outcomes.iter().all(|o| o == "welcome") {
            notes.push(format!(
                "{step}: a fresh connect works on every edge {:.1?} after the fault",
                since.elapsed()
            ));
            break;
        }
        notes.push(format!("{step}: +{:.1?} fresh connects: {outcomes:?}", since.elapsed()));
        assert!(
            Instant::now() < deadline,
            "{step}: connects never worked again: {notes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    loop {
        if fleet.members.iter().all(Member::online) && presence_matches(c, fleet).await {
            notes.push(format!(
                "{step}: every client connected and presence exact on both routers {:.1?} after the fault",
                since.elapsed()
            ));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: presence never matched: fleet {:?}, router {:?}: {notes:#?}",
            fleet.online("d1"),
            online_list(&c.router_addr(0), "d1").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Closes and refusals the fleet saw since `since`, by code.
fn fleet_events(fleet: &Fleet, since: Instant) -> String {
    let mut closes: BTreeMap<u16, usize> = BTreeMap::new();
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for m in &fleet.members {
        let log = m.log.lock().expect("log");
        for (code, at) in &log.closes {
            if *at >= since {
                *closes.entry(*code).or_default() += 1;
            }
        }
        for (why, at) in &log.refusals {
            if *at >= since {
                let short: String = why.chars().take(40).collect();
                *refusals.entry(short).or_default() += 1;
            }
        }
    }
    format!("client connections closed {closes:?}, reconnects refused {refusals:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_cluster_losing_one_then_two_nats_servers_and_healing() {
    let mut servers = NatsServer::start_cluster_secured(3);
    let urls: Vec<String> = servers.iter().map(NatsServer::url).collect();
    let all = cluster_url(&servers);
    // Every process starts once the servers have formed one cluster, so
    // each learns the others (it fails over to them).
    for s in &servers {
        eventually!(
            s.connect_admin()
                .await
                .is_ok_and(|nc| nc.server_info().connect_urls.len() >= 3),
            "the NATS servers did not form a cluster"
        );
    }
    let replicated = [
        ("SWITCHBOARD_NATS__URL", all.as_str()),
        ("SWITCHBOARD_NATS__REPLICAS", "3"),
        ("SWITCHBOARD_HISTORY__REPLICAS", "3"),
        ("SWITCHBOARD_EDGE__RATE_PER_SEC", "1000"),
        ("SWITCHBOARD_EDGE__RATE_BURST", "1000"),
    ];
    // Server 0 stays up all along (the cluster owns it); 1 and 2 are lost.
    let s0 = servers.remove(0);
    let mut c = Cluster::on(s0, 0, 0, &replicated).await;
    // Router k+1 and edge k+1 talk to server k (router 1 to server 1,
    // router 2 to server 2; edge k to server k).
    for url in &urls[1..] {
        c.add_router_with(&[("SWITCHBOARD_NATS__URL", url.as_str())]).await;
    }
    for url in &urls[..EDGES] {
        c.add_edge_with(&[("SWITCHBOARD_NATS__URL", url.as_str())]).await;
    }
    let fleet = spawn_fleet(&c);
    let ledger = Mutex::new(Ledger::default());
    let mut notes = vec![
        "set-up: nats0 (edge1), nats1 (router1, edge2), nats2 (router2, edge3); presence, membership and log at R3"
            .to_owned(),
    ];
    eventually!(
        fleet.members.iter().all(Member::online) && presence_matches(&c, &fleet).await,
        "the fleet did not come online"
    );
    // A cluster that just formed may refuse a first send while its R3
    // streams elect leaders (1500, retried).
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let r = round(&c, &fleet, &ledger, &format!("start-{n}")).await;
        if r.ok() {
            break;
        }
        notes.push(format!("set-up: +{:.1?} round {n}: {}", started.elapsed(), r.summary()));
        assert!(n < 20, "sends never worked before any fault: {}", r.summary());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Clients of bizCode d3 that leave while there is no quorum (a close on
    // edge 1, a reset on edges 2 and 3): they must not stay in presence.
    let mut leavers = Vec::new();
    for k in 0..EDGES {
        leavers.push(Ws::join(&c.url(k, &format!("bizCode=d3&clientId=l{k}"))).await.0);
    }
    eventually!(
        online_list(&c.router_addr(0), "d3")
            .await
            .is_some_and(|l| l.len() == EDGES),
        "the d3 clients are not online"
    );

    // Step 1: one server of three is lost.
    let t1 = Instant::now();
    servers[1].kill();
    notes.push("step 1: nats2 killed (SIGKILL): router2 and edge3 lose their link".into());
    // A client recovers through the step (its reset reconnects it with
    // `recover`).
    fleet.members[idx(0, 3)].reset();
    until_healed(&c, &fleet, &ledger, "step 1", t1, &mut notes).await;
    notes.push(format!("step 1: {}", fleet_events(&fleet, t1)));

    // Step 2: a second server is lost; nats0 alone has no JetStream quorum.
    let t2 = Instant::now();
    servers[0].kill();
    notes.push("step 2: nats1 killed too: only nats0 is up, no JetStream quorum for R3".into());
    for (k, l) in leavers.drain(..).enumerate() {
        if k == 0 {
            l.close().await;
        } else {
            l.reset();
        }
    }
    let observe = t2 + Duration::from_secs(12);
    let mut n = 0;
    while Instant::now() < observe {
        n += 1;
        let r = round(&c, &fleet, &ledger, &format!("step2-{n}")).await;
        notes.push(format!("step 2: +{:.1?} round {n}: {}", t2.elapsed(), r.summary()));
        let outcomes = futures_util::future::join_all((0..EDGES).map(|k| fresh_connect(&c, k, 100 + n))).await;
        notes.push(format!("step 2: +{:.1?} fresh connects: {outcomes:?}", t2.elapsed()));
        let lists: Vec<String> = futures_util::future::join_all((0..2).map(|i| {
            let addr = c.router_addr(i);
            async move {
                let (st, r) = api(&addr, "d1", "get_online_list", json!({})).await;
                format!("{st} count={}", r["data"]["count"])
            }
        }))
        .await;
        notes.push(format!(
            "step 2: +{:.1?} get_online_list d1: {lists:?} (fleet online: {})",
            t2.elapsed(),
            fleet.online("d1").len()
        ));
    }
    notes.push(format!("step 2: {}", fleet_events(&fleet, t2)));
    {
        let l = ledger.lock().expect("ledger");
        assert!(
            l.silent.is_empty(),
            "sends left without an answer (neither a reply nor a close): {:?}",
            l.silent
        );
    }

    // Step 3: one server comes back: quorum again.
    let t3 = Instant::now();
    servers[0].restart();
    notes.push("step 3: nats1 restarted (same store): 2 of 3 servers, quorum again".into());
    until_healed(&c, &fleet, &ledger, "step 3", t3, &mut notes).await;
    notes.push(format!("step 3: {}", fleet_events(&fleet, t3)));
    // No ghosts: neither the clients that left without a quorum nor the
    // connects refused meanwhile.
    let ghosts = || async {
        let mut found = Vec::new();
        for biz in ["d3", "probe"] {
            for r in 0..2 {
                match online_list(&c.router_addr(r), biz).await {
                    Some(l) if l.is_empty() => {}
                    other => found.push(format!("router{} {biz}: {other:?}", r + 1)),
                }
            }
        }
        found
    };
    // Their removals were answered 1500 while there was no quorum: the
    // edges retry them until the store takes them.
    let healed3 = Instant::now();
    loop {
        let found = ghosts().await;
        if found.is_empty() {
            break;
        }
        assert!(
            healed3.elapsed() < switchboard_testkit::patience(),
            "ghosts after the cluster healed: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    notes.push(format!(
        "step 3: the clients that left during step 2 are out of presence {:.1?} after the fault",
        t3.elapsed()
    ));

    // Step 4: the last one comes back.
    let t4 = Instant::now();
    servers[1].restart();
    notes.push("step 4: nats2 restarted: 3 of 3".into());
    until_healed(&c, &fleet, &ledger, "step 4", t4, &mut notes).await;
    notes.push(format!("step 4: {}", fleet_events(&fleet, t4)));

    // Nothing acknowledged was lost, nothing came twice or to the wrong
    // client or tenant, every reconnect recovered.
    let healed = Instant::now();
    let mut last = fleet.check(&ledger.lock().expect("ledger"));
    while !last.0.is_empty() && healed.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = fleet.check(&ledger.lock().expect("ledger"));
    }
    let complete = last.0.is_empty();
    for n in &notes {
        eprintln!("{n}");
    }
    {
        let l = ledger.lock().expect("ledger");
        eprintln!(
            "ledger: {} sends attempted, {} acknowledged, {} refused, {} unknown (connection closed first), {} silent",
            l.attempted.len(),
            l.acked.len(),
            l.refused.len(),
            l.unknown.len(),
            l.silent.len()
        );
        let (missing, wrong) = last;
        assert!(complete, "acknowledged but never delivered: {missing:#?}");
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert!(l.silent.is_empty(), "sends never answered: {:?}", l.silent);
        for m in &fleet.members {
            let log = m.log.lock().expect("log");
            assert!(
                log.unrecovered().is_empty(),
                "{} reconnected without recovering: {:?}",
                m.id,
                log.unrecovered()
            );
        }
    }
    let _ = fleet.stop().await;
    eventually!(
        online_list(&c.router_addr(0), "d1").await == Some(Vec::new()),
        "ghosts after every client left"
    );
    drop(servers);
}
