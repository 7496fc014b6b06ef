//! Partition leases on a real `nats-server` run with the chart's
//! permissions, logged in as the router user: two routers split the
//! partitions, a clean stop hands them over at once, a frozen router loses
//! them after the TTL and its old token is refused by the log, and a lost
//! lease bucket does not make tokens go back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_log::{partition_of, JetStreamLog, LogConfig, LogError, PartitionLog};
use switchboard_router::owner::{lease, LeaseConfig, LeaseEvent, Leases, LostReason};
use switchboard_testkit::{eventually, NatsServer, ROUTER_USER};
use tokio_util::sync::CancellationToken;

const PARTITIONS: u32 = 16;
const PRESENCE_BUCKET: &str = "sb-presence";

/// What one router's lease events said so far.
#[derive(Debug, Default)]
struct Seen {
    /// Partitions held now, with their tokens.
    held: BTreeMap<u32, u64>,
    /// Every loss, in order.
    lost: Vec<(u32, LostReason)>,
    /// Per partition, the highest token ever acquired.
    best: BTreeMap<u32, u64>,
}

/// One router's lease service and what it reported.
struct Router {
    leases: Option<Leases>,
    shutdown: CancellationToken,
    seen: Arc<Mutex<Seen>>,
    log: JetStreamLog,
}

impl Router {
    async fn start(server: &NatsServer, node_id: &str, ttl: Duration) -> Self {
        let client = server.connect_as(ROUTER_USER).await.expect("router connects");
        let js = async_nats::jetstream::new(client);
        let log = JetStreamLog::new(
            js.clone(),
            LogConfig {
                partitions: PARTITIONS,
                ..LogConfig::default()
            },
        );
        let mut config = LeaseConfig::new(node_id, PRESENCE_BUCKET, PARTITIONS);
        config.ttl = ttl;
        let shutdown = CancellationToken::new();
        let (leases, mut events) = Leases::spawn_kv(&js, Arc::new(log.clone()), config, shutdown.clone())
            .await
            .expect("lease bucket opens");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let mut s = sink.lock();
                match ev {
                    LeaseEvent::Acquired { partition, token } => {
                        let before = s.held.insert(partition, token);
                        assert!(before.is_none(), "acquired {partition} twice without a loss");
                        let best = s.best.entry(partition).or_insert(0);
                        assert!(token > *best, "tokens of {partition} increase");
                        *best = token;
                    }
                    LeaseEvent::Lost { partition, reason } => {
                        assert!(s.held.remove(&partition).is_some(), "lost {partition} not held");
                        s.lost.push((partition, reason));
                    }
                }
            }
        });
        Self {
            leases: Some(leases),
            shutdown,
            seen,
            log,
        }
    }

    fn held(&self) -> BTreeMap<u32, u64> {
        self.seen.lock().held.clone()
    }

    fn leases(&self) -> &Leases {
        self.leases.as_ref().expect("running")
    }

    async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(l) = self.leases.take() {
            l.join().await;
        }
    }
}

fn disjoint_cover(a: &BTreeMap<u32, u64>, b: &BTreeMap<u32, u64>) -> bool {
    a.keys().all(|p| !b.contains_key(p)) && a.len() + b.len() == PARTITIONS as usize
}

async fn split(a: &Router, b: &Router) {
    let t = Instant::now();
    eventually!(
        a.held().len() == 8 && b.held().len() == 8 && disjoint_cover(&a.held(), &b.held()),
        "16 partitions split 8/8: a {:?}, b {:?}",
        a.held(),
        b.held()
    );
    eprintln!("split 8/8 in {:?}", t.elapsed());
}

/// An append of `log` into partition `p` naming `token`, expecting the
/// real last sequence (so only the fence check can refuse it).
async fn append_with(log: &JetStreamLog, p: u32, token: u64) -> Result<u64, LogError> {
    let biz = (0..)
        .map(|i| format!("biz{i}"))
        .find(|b| partition_of(b, PARTITIONS) == p)
        .expect("a bizCode");
    let last = log.bounds(p).await?.last;
    let ack = log
        .append(
            p,
            &biz,
            &format!("m-{p}-{token}"),
            last,
            Some(token),
            Bytes::from_static(b"x"),
        )
        .await?;
    ack.await.map(|a| a.seq)
}

#[tokio::test]
async fn two_routers_split_and_a_clean_stop_hands_everything_over_at_once() {
    let server = NatsServer::start_secured();
    let ttl = Duration::from_millis(1500);
    let mut a = Router::start(&server, "router-a", ttl).await;
    let b = Router::start(&server, "router-b", ttl).await;
    split(&a, &b).await;
    let before = a.held();
    a.stop().await;
    // Released, not left to expire: once the stop returns, none of a's
    // leases is in the bucket any more (each is gone, or b's already).
    let admin = async_nats::jetstream::new(server.connect_admin().await.expect("admin"));
    let kv = admin
        .get_key_value(lease::bucket_name(PRESENCE_BUCKET))
        .await
        .expect("lease bucket");
    for p in before.keys() {
        let held = kv.get(lease::lease_key(*p)).await.expect("get");
        let owner = held.and_then(|v| serde_json::from_slice::<lease::LeaseValue>(&v).ok());
        assert!(
            owner.as_ref().is_none_or(|v| v.owner == "router-b"),
            "partition {p} still leased after the stop: {owner:?}"
        );
    }
    eventually!(b.held().len() == 16, "b takes all 16: {:?}", b.held());
    let after = b.held();
    for (p, token) in &before {
        assert!(after[p] > *token, "partition {p}: {} after {token}", after[p]);
    }
    // Every handover and the 8 held at the stop, each reported once.
    let lost = a.seen.lock().lost.clone();
    let (handed, released) = lost.split_at(lost.len().saturating_sub(8));
    assert!(released.iter().all(|(_, r)| *r == LostReason::Released), "{lost:?}");
    assert!(handed.iter().all(|(_, r)| *r == LostReason::HandedOver), "{lost:?}");
}

#[tokio::test]
async fn a_frozen_router_loses_its_partitions_after_the_ttl_and_its_token_is_refused() {
    let server = NatsServer::start_secured();
    let ttl = Duration::from_secs(1);
    let a = Router::start(&server, "router-a", ttl).await;
    let b = Router::start(&server, "router-b", ttl).await;
    split(&a, &b).await;
    let frozen = a.held();
    // Before the freeze, a's token works.
    let (p, old_token) = frozen.iter().next().map(|(p, t)| (*p, *t)).expect("a holds one");
    append_with(&a.log, p, old_token).await.expect("the owner appends");
    let handed_over = a.seen.lock().lost.len();
    a.leases().set_paused(true);
    let t = Instant::now();
    eventually!(b.held().len() == 16, "b takes a's partitions: {:?}", b.held());
    assert!(
        t.elapsed() >= ttl / 2,
        "not before the lease could expire: {:?}",
        t.elapsed()
    );
    let taken = b.held();
    for (p, token) in &frozen {
        assert!(taken[p] > *token, "partition {p}: {} after {token}", taken[p]);
    }
    a.leases().set_paused(false);
    eventually!(
        frozen.keys().all(|p| a.seen.lock().lost.iter().any(|(q, _)| q == p)),
        "a reports every frozen partition lost: {:?}",
        a.seen.lock().lost
    );
    let lost = a.seen.lock().lost.clone();
    assert!(
        lost[handed_over..]
            .iter()
            .all(|(_, r)| matches!(r, LostReason::Expired | LostReason::Taken)),
        "{lost:?}"
    );
    let refused = append_with(&a.log, p, old_token).await;
    assert!(
        matches!(refused, Err(LogError::WrongLastSequence { last: Some(t) }) if t == taken[&p]),
        "{refused:?}"
    );
    append_with(&b.log, p, taken[&p]).await.expect("the new owner appends");
}

#[tokio::test]
async fn tokens_keep_increasing_when_the_lease_bucket_is_lost() {
    let server = NatsServer::start_secured();
    let ttl = Duration::from_secs(1);
    let a = Router::start(&server, "router-a", ttl).await;
    eventually!(a.held().len() == 16, "a lone router takes all 16: {:?}", a.held());
    let before = a.held();
    let admin = async_nats::jetstream::new(server.connect_admin().await.expect("admin"));
    admin
        .delete_key_value(lease::bucket_name(PRESENCE_BUCKET))
        .await
        .expect("bucket deleted");
    eventually!(
        a.seen.lock().lost.len() >= 16 && a.held().len() == 16,
        "a loses and takes back all 16: lost {:?}, held {:?}",
        a.seen.lock().lost,
        a.held()
    );
    let after = a.held();
    for (p, token) in &before {
        assert!(after[p] > *token, "partition {p}: {} after {token}", after[p]);
    }
    // The bucket is back, with a's leases in it.
    let kv = admin
        .get_key_value(lease::bucket_name(PRESENCE_BUCKET))
        .await
        .expect("bucket recreated");
    assert!(kv.get(lease::lease_key(0)).await.expect("get").is_some());
}
