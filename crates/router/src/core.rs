//! The router's logic, transport-free: the NATS service ([`crate::nats`]),
//! the HTTP API and `standalone` all call these methods, which answer
//! `Result<_, RouterError>` and leave wire codes to their callers.
//!
//! This file holds the router's state and the index it keeps from the
//! store's watch; the child modules each add one concern to [`Router`]:
//! - `presence`: connect, disconnect, drain (compare-and-set on the store);
//! - `resync`: a node re-asserts its connections, the router reconciles;
//! - `liveness`: heartbeats, silent-node detection and purge;
//! - `route`: sends and presence notices, fanned out per node;
//! - `admin`: the operations behind the HTTP API;
//! - `limits`: each bizCode's own limits on the edges (noisy tenants);
//! - `history`: logged sends, joins and the history calls (SPEC §7);
//! - `events`: connection events for backends (online/offline, crash
//!   purges, bound/unbound);
//! - `members`: durable group membership (bound groups restored on
//!   connect, offline stamps, the sweeper);
//! - `receipts`: delivery receipts (waits for the recipients' acks).
//!
//! The children import from here, never the other way round.

mod admin;
mod events;
mod history;
mod limits;
mod liveness;
mod members;
mod presence;
mod receipts;
mod resync;
mod route;
#[cfg(test)]
mod testing;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard_protocol::envelope::{ConnInfo, Joined, PresenceValue};
use switchboard_protocol::subject::parse_presence_key;
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::now_ms;
use tokio::sync::oneshot;

pub use self::history::{History, HistoryPage, HistoryQuery, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
pub use self::limits::LIMITS_CACHE_TTL;
pub use self::receipts::{Outcome, Wait, DEFAULT_MAX_CLIENT_RECEIPT_WAITS};
use crate::config::RouterConfig;
use crate::index::Index;
use crate::link::EdgeLink;
use crate::store::{BizRegistry, MemberStore, PresenceStore, StoreError, WatchEvent};

/// Most groups one client may be in through `bind_to_group`.
pub const MAX_GROUPS_PER_CLIENT: usize = 1024;

/// Attempts of a compare-and-set loop before giving up
/// ([`crate::RouterError::Contended`]).
const CAS_ATTEMPTS: usize = 8;

/// How often [`Router::catch_up`] looks whether the watch came far enough.
const CATCH_UP_POLL: Duration = Duration::from_millis(25);

/// What a router knows of a node's liveness.
#[derive(Debug)]
struct NodeState {
    last_heard: Instant,
    dead: bool,
    /// Heartbeats in a row that reported fewer connections than the index
    /// holds entries of the node (see `Router::heartbeat`).
    excess_beats: u32,
    /// When the node's entries were last checked against what it holds.
    audited: Option<Instant>,
}

impl NodeState {
    /// A node heard of just now.
    fn new() -> Self {
        Self {
            last_heard: Instant::now(),
            dead: false,
            excess_beats: 0,
            audited: None,
        }
    }
}

/// The presence entry of a connection, stamped now.
fn presence_value(info: &ConnInfo) -> PresenceValue {
    PresenceValue {
        node: info.node.clone(),
        conn: info.conn,
        biz: info.biz.clone(),
        client: info.client.clone(),
        groups: info.groups.clone(),
        since: now_ms(),
        bound: Vec::new(),
    }
}

/// What a connect answers (SPEC §7): the groups bound to the client, and
/// where it joined its bizCode's log (history on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connected {
    /// Bound groups, restored now.
    pub groups: Vec<String>,
    /// The join; `None` with history off.
    pub history: Option<Joined>,
}

/// The router. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    config: RouterConfig,
    /// Presence: the truth every router writes with compare-and-set.
    store: Arc<dyn PresenceStore>,
    /// Registered bizCodes.
    registry: Arc<dyn BizRegistry>,
    /// Groups bound to bizCode+clientId, which outlive connections.
    members: Arc<dyn MemberStore>,
    /// How commands reach edge nodes.
    edges: Arc<dyn EdgeLink>,
    /// The bizCodes' logs (SPEC §7), where this router is their only
    /// writer (`standalone`); `None`: no history.
    history: Option<Arc<History>>,
    /// Presence as this router last saw it (own writes and the watch):
    /// routing reads it, never the store, on the hot path.
    index: Mutex<Index>,
    /// Liveness of every node this router heard of.
    nodes: Mutex<HashMap<Arc<str>, NodeState>>,
    /// bizCodes' limits read recently, for the edges' questions.
    limits: limits::LimitsCache,
    /// Presence writes whose outcome is unknown, being watched
    /// ([`Router::check_late_write`]).
    late_checks: std::sync::atomic::AtomicUsize,
    /// Whether the presence watch feeding `index` is caught up; while it
    /// is re-created (false), unicasts are located in the store: a stale
    /// index would route them to a connection that is gone (issue 13:
    /// acknowledged unicasts lost after a JetStream quorum came back).
    index_live: std::sync::atomic::AtomicBool,
    /// The highest store revision the watch applied to `index`
    /// ([`Router::catch_up`]).
    watched: std::sync::atomic::AtomicU64,
    /// Sends waiting for their recipients' acks (delivery receipts).
    receipts: Arc<receipts::Receipts>,
    /// Where connection events go, once set (`events`).
    events: std::sync::OnceLock<switchboard_runtime::events::Events>,
    metrics: Arc<Metrics>,
}

impl Router {
    /// A router over `store` that reaches nodes through `edges`.
    pub fn new(
        config: RouterConfig,
        store: Arc<dyn PresenceStore>,
        registry: Arc<dyn BizRegistry>,
        members: Arc<dyn MemberStore>,
        edges: Arc<dyn EdgeLink>,
        history: Option<Arc<History>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let receipts = Arc::new(receipts::Receipts::new(config.max_receipt_waits, metrics.clone()));
        Self {
            inner: Arc::new(Inner {
                receipts,
                config,
                store,
                registry,
                members,
                edges,
                history,
                index: Mutex::new(Index::default()),
                nodes: Mutex::new(HashMap::new()),
                limits: limits::LimitsCache::default(),
                late_checks: std::sync::atomic::AtomicUsize::new(0),
                index_live: std::sync::atomic::AtomicBool::new(true),
                watched: std::sync::atomic::AtomicU64::new(0),
                events: std::sync::OnceLock::new(),
                metrics,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.inner.config
    }

    /// Starts feeding the index from the store's watch; returns once the
    /// entries that existed at start are loaded.
    ///
    /// # Errors
    /// If the watch cannot be started.
    pub async fn start_watch(&self) -> Result<(), StoreError> {
        let mut rx = self.inner.store.watch().await?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let router = self.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            while let Some(ev) = rx.recv().await {
                router.apply_watch(ev, &mut ready_tx);
            }
        });
        let _ = ready_rx.await;
        Ok(())
    }

    fn apply_watch(&self, ev: WatchEvent, ready: &mut Option<oneshot::Sender<()>>) {
        match ev {
            WatchEvent::Put { value, revision, .. } => {
                let node: Arc<str> = value.node.as_str().into();
                self.index_put(&value, revision);
                self.inner.watched.fetch_max(revision, Ordering::AcqRel);
                // A node we never heard of gets a full timeout from now.
                self.inner.nodes.lock().entry(node).or_insert_with(NodeState::new);
            }
            WatchEvent::Delete { key, revision } => {
                if let Some((biz, client)) = parse_presence_key(&key) {
                    self.index_delete(&biz, &client, revision.saturating_sub(1));
                }
                self.inner.watched.fetch_max(revision, Ordering::AcqRel);
            }
            WatchEvent::Skipped { revision } => {
                self.inner.watched.fetch_max(revision, Ordering::AcqRel);
            }
            WatchEvent::Ready => {
                self.inner.index_live.store(true, Ordering::Release);
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            WatchEvent::Lagging => {
                tracing::warn!("presence watch lagging: unicasts are located in the store until it caught up");
                self.inner.index_live.store(false, Ordering::Release);
            }
        }
    }

    /// Waits until the watch applied to the index every presence change
    /// the store holds now, for at most `patience`; false if it did not.
    /// The serving of an acquired partition calls it after the fence and
    /// before the partition is opened here (`nats::serve_partitions`).
    ///
    /// A new partition owner plans each send with its index. Every router
    /// indexes the connections it joins itself at once, but learns the
    /// others' from the watch, and a watch can lag by seconds (one whose
    /// consumer was on a NATS server that went away delivers nothing until
    /// it is re-created). A connection its predecessor joined would then be
    /// missing from what the new owner plans, and its edge, which heals
    /// only up to the new owner's fence, would never get those sends.
    pub async fn catch_up(&self, patience: Duration) -> Result<bool, StoreError> {
        let Some(head) = self.inner.store.head().await? else {
            return Ok(true);
        };
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let seen = self.inner.watched.load(Ordering::Acquire);
            if seen >= head {
                return Ok(true);
            }
            match self.inner.store.next_revision(seen).await? {
                Some(next) if next <= head => {}
                // What is above `seen` up to `head` left the store already.
                _ => return Ok(true),
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
    }

    fn index_put(&self, value: &PresenceValue, revision: u64) {
        let mut ix = self.inner.index.lock();
        ix.put(value, revision);
        self.inner.metrics.presence_entries.set(ix.len() as i64);
    }

    fn index_delete(&self, biz: &str, client: &str, revision: u64) {
        let mut ix = self.inner.index.lock();
        ix.delete(biz, client, revision);
        self.inner.metrics.presence_entries.set(ix.len() as i64);
    }
}
