//! A rolling update of the edges under load: a local cluster (NATS, 2
//! routers, 3 edges behind nginx), 40 clients connected through nginx and
//! a steady mix of unicasts, group sends and API sends; each edge in turn
//! gets SIGTERM (it drains: 1012 over its drain window, then exits 0) and a
//! new edge process takes its port. Clients reconnect through nginx with
//! `recover=<seq>&epoch=<epoch>` (SPEC §7). Every client reconnects at most
//! once per edge replaced (always after a 1012), every reconnect
//! recovers, every acknowledged message reaches every client it was
//! addressed to exactly once, in `seq` order, and presence lists exactly
//! the connected clients at the end.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fleet::{online_list, Fleet, Ledger, Member, To};
use common::*;

const CLIENTS: usize = 40;
const GROUPS: usize = 4;
/// One send (client or API) every this long: 25 sends/s in all.
const EVERY: Duration = Duration::from_millis(40);

fn group_of(i: usize) -> String {
    format!("room{}", i % GROUPS)
}

/// Sends a steady mix until `stop`: unicasts to another client, group
/// sends, broadcasts, and API group sends and unicasts through both
/// routers; each send in its own task, so a slow answer does not slow the
/// schedule.
fn spawn_traffic(
    fleet: Arc<Fleet>,
    ledger: Arc<Mutex<Ledger>>,
    routers: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        let mut inflight = Vec::new();
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            n += 1;
            let (fleet, ledger) = (fleet.clone(), ledger.clone());
            let from = n * 7 % CLIENTS;
            let label = format!("d1:s{n}");
            let router = routers[n % routers.len()].clone();
            inflight.push(tokio::spawn(async move {
                match n % 5 {
                    0 => {
                        let to = To::Client(format!("c{}", (from + 13) % CLIENTS));
                        fleet.send(&ledger, from, &label, &to).await;
                    }
                    1 | 2 => {
                        fleet.send(&ledger, from, &label, &To::Group(group_of(from))).await;
                    }
                    3 => {
                        let to = To::Group(group_of(n / 5));
                        fleet.api_send(&ledger, &router, "d1", &label, &to).await;
                    }
                    _ => {
                        let to = if n % 10 == 4 {
                            To::Biz
                        } else {
                            To::Client(format!("c{}", (from + 3) % CLIENTS))
                        };
                        fleet.api_send(&ledger, &router, "d1", &label, &to).await;
                    }
                }
            }));
        }
        for t in inflight {
            t.await.expect("send task");
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_of_the_edges_under_load_loses_nothing() {
    let mut c = Cluster::start(3, 2, &[("SWITCHBOARD_EDGE__DRAIN_WINDOW", "2s")]).await;
    let nginx = Nginx::start(&c.edge_ports);
    let url = format!("ws://127.0.0.1:{}/ws", nginx.port);
    let routers: Vec<String> = (0..2).map(|i| c.router_addr(i)).collect();

    let mut fleet = Fleet::default();
    for i in 0..CLIENTS {
        let g = group_of(i);
        fleet.add(Member::spawn(vec![url.clone()], "d1", &format!("c{i}"), &[g.as_str()]));
    }
    let fleet = Arc::new(fleet);
    eventually!(
        fleet.members.iter().all(Member::online),
        "the clients did not all connect"
    );
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for m in &fleet.members {
        let node = m.log.lock().expect("log").node.clone();
        *per_node
            .entry(node.split('-').next().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert!(per_node.len() == 3, "nginx should spread the clients: {per_node:?}");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = spawn_traffic(fleet.clone(), ledger.clone(), routers.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Replace each edge in turn, as `kubectl rollout restart` does (one at
    // a time), under the traffic.
    let mut windows = Vec::new();
    let mut notes = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let status = c.replace_edge(i, Duration::from_secs(15)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "edge {} did not drain and exit 0: {status:?}",
            i + 1
        );
        let replaced = started.elapsed();
        let all_back = async {
            let deadline = Instant::now() + switchboard_testkit::patience();
            while Instant::now() < deadline {
                if fleet.members.iter().all(Member::online) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        };
        if !all_back.await {
            let mut direct = Vec::new();
            for k in 0..3 {
                let url = c.url(k, "bizCode=probe&clientId=direct");
                direct.push(match Ws::connect(&url).await {
                    Ok(mut ws) => format!("{:?}", ws.next_within(Duration::from_secs(5)).await),
                    Err(e) => format!("{e:?}"),
                });
            }
            panic!(
                "clients did not all reconnect after edge {} was replaced: {}\ndirect connects to the edges: {direct:#?}\nnginx: {}",
                i + 1,
                fleet.offline_report(),
                nginx.error_log()
            );
        }
        notes.push(format!(
            "edge{}: SIGTERM → exited and replaced in {replaced:.1?}; every client connected again after {:.1?}",
            i + 1,
            started.elapsed()
        ));
        windows.push(started);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic");

    // Every acknowledged send reached every client it was addressed to,
    // once; nothing reached anyone else.
    let mut last = fleet.check(&ledger.lock().expect("ledger"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !last.0.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = fleet.check(&ledger.lock().expect("ledger"));
    }
    let (missing, wrong) = last;
    {
        let l = ledger.lock().expect("ledger");
        for n in &notes {
            eprintln!("{n}");
        }
        let refused: BTreeMap<u64, usize> = l.refused.iter().fold(BTreeMap::new(), |mut m, (_, c)| {
            *m.entry(*c).or_default() += 1;
            m
        });
        eprintln!(
            "{} sends, {} acknowledged, refused {refused:?}, {} unknown (connection closed before the reply)",
            l.attempted.len(),
            l.acked.len(),
            l.unknown.len()
        );
        assert!(missing.is_empty(), "acknowledged but never delivered: {missing:#?}");
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert!(l.silent.is_empty(), "sends never answered: {:?}", l.silent);
        assert!(l.acked.len() > 150, "too few sends acknowledged: {}", l.acked.len());
    }

    // At most one reconnect per replaced edge, each after a 1012, each
    // recovered.
    let mut reconnects: BTreeMap<usize, usize> = BTreeMap::new();
    for m in &fleet.members {
        let log = m.log.lock().expect("log");
        assert!(log.unrecovered().is_empty(), "{}: {:?}", m.id, log.unrecovered());
        assert!(
            log.closes.iter().all(|(code, _)| *code == 1012),
            "{}: closes {:?}",
            m.id,
            log.closes
        );
        for (w, start) in windows.iter().enumerate() {
            let end = windows.get(w + 1).copied();
            let n = log
                .closes
                .iter()
                .filter(|(_, at)| at >= start && end.is_none_or(|e| *at < e))
                .count();
            assert!(
                n <= 1,
                "{} reconnected {n} times while edge {} was replaced",
                m.id,
                w + 1
            );
        }
        assert_eq!(log.welcomes.len(), log.closes.len() + 1, "{}", m.id);
        *reconnects.entry(log.closes.len()).or_default() += 1;
    }
    let gaps = fleet.offline_gaps_ms();
    eprintln!(
        "clients by number of reconnects: {reconnects:?}; time from a 1012 to the next welcome: median {} ms, max {} ms",
        gaps.get(gaps.len() / 2).copied().unwrap_or(0),
        gaps.last().copied().unwrap_or(0)
    );

    // Presence drift 0: both routers list exactly the connected clients.
    let want = fleet.online("d1");
    assert_eq!(want.len(), CLIENTS);
    for r in &routers {
        eventually!(
            online_list(r, "d1").await.as_ref() == Some(&want),
            "presence drift on {r}: {:?}",
            online_list(r, "d1").await
        );
    }
    drop(nginx);
}
