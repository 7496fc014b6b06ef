//! The edge's shared state: what every part of a node reads (its config,
//! id, registry, router seam, metrics), and the few pieces of state that
//! admission, the sessions and shutdown change.
//!
//! [`Edge`] is the handle the binary holds (cheap to clone); [`EdgeInner`]
//! is what the sessions, admission, the node inbox and the sweeper share.
//! Its fields are private: each is read through a method, and each piece of
//! mutable state is changed only through the method that owns its rule
//! (the coarse clock by the sweeper, the known bizCodes by admission, the
//! dropped-presence flag by drain), so the other modules cannot bypass them.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard_log::{HistoryConfig, PartitionLog};
use switchboard_protocol::envelope::Disconnect;
use switchboard_protocol::frame;
use switchboard_protocol::ErrorCode;
use switchboard_runtime::events::Events;
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::ops::Health;
use tokio_util::task::TaskTracker;

use crate::address::SlotLimiter;
use crate::auth::Verifier;
use crate::config::EdgeConfig;
use crate::heard::{Heard, SUSPECT_AFTER_BEATS};
use crate::link::RouterLink;
use crate::outbox::{self, Pushed};
use crate::registry::{Conn, Registry};
use crate::resync::ResyncHold;
use crate::tenant::Tenants;

/// Registered bizCodes remembered by an edge (registration is permanent).
const KNOWN_BIZ_CACHE: usize = 100_000;

/// A node id unique per process incarnation: `<name>-<8 hex>`.
pub fn new_node_id(name: &str) -> String {
    let name = if name.is_empty() { "edge" } else { name };
    format!("{name}-{:08x}", rand::random::<u32>())
}

/// The edge: cheap to clone, shared by the HTTP server, the node inbox and
/// the sessions.
#[derive(Clone)]
pub struct Edge {
    inner: Arc<EdgeInner>,
}

/// The state behind an [`Edge`].
pub(crate) struct EdgeInner {
    config: EdgeConfig,
    node_id: String,
    registry: Registry,
    router: Arc<dyn RouterLink>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Checks client tokens; `None` when authentication is off.
    verifier: Option<Arc<Verifier>>,
    /// Set by drain once presence of every connection was removed: a
    /// session ending after that sends no disconnect of its own.
    presence_dropped: Arc<AtomicBool>,
    /// Live connections per client address (`max_connections_per_address`).
    addresses: SlotLimiter<IpAddr>,
    /// Each bizCode's limits and connections here (`set_limits`, and
    /// `max_connections_per_biz`).
    tenants: Tenants,
    /// bizCodes known to be registered (at most [`KNOWN_BIZ_CACHE`]), so
    /// admission asks a router once per bizCode.
    known_biz: Mutex<HashSet<String>>,
    /// Sessions and disconnect tasks, awaited on drain.
    tasks: TaskTracker,
    next_conn: AtomicU64,
    /// Coarse seconds since start, advanced by the sweeper (idle timeouts
    /// without a timer per connection).
    clock: AtomicU64,
    started: Instant,
    /// The logs clients recover from (SPEC §7), once set.
    history: OnceLock<EdgeHistory>,
    /// Per history partition: the newest owner token heard, and how many
    /// of its messages arrived ([`crate::order`]).
    orders: Mutex<HashMap<u32, (u64, u64)>>,
    /// When the routers last confirmed they hear this node
    /// ([`crate::heard`]).
    heard: Heard,
    /// Where a resync's hold stands ([`crate::resync::ResyncHold`]).
    resync_hold: ResyncHold,
    /// Where connection events go, once set ([`crate::events`]).
    events: OnceLock<Events>,
}

/// What the edge reads clients' recoveries from.
pub(crate) struct EdgeHistory {
    /// The partitions' logs.
    pub(crate) log: Arc<dyn PartitionLog>,
    /// `history.max_replay`.
    pub(crate) max_replay: usize,
    /// Most entries a recovery scans ([`HistoryConfig::max_scan`]).
    pub(crate) max_scan: usize,
}

impl Edge {
    /// Creates an edge with node id `node_id` that asks `router`, checking
    /// client tokens with `verifier` (none: authentication off).
    pub fn new(
        config: EdgeConfig,
        node_id: String,
        router: Arc<dyn RouterLink>,
        verifier: Option<Arc<Verifier>>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            inner: Arc::new(EdgeInner {
                node_id,
                registry: Registry::default(),
                router,
                metrics,
                health,
                verifier,
                known_biz: Mutex::new(HashSet::new()),
                addresses: SlotLimiter::default(),
                tenants: Tenants::default(),
                presence_dropped: Arc::new(AtomicBool::new(false)),
                tasks: TaskTracker::new(),
                next_conn: AtomicU64::new(1),
                clock: AtomicU64::new(0),
                started: Instant::now(),
                history: OnceLock::new(),
                orders: Mutex::new(HashMap::new()),
                heard: Heard::new(config.node_heartbeat, SUSPECT_AFTER_BEATS),
                resync_hold: ResyncHold::default(),
                events: OnceLock::new(),
                config,
            }),
        }
    }

    /// Lets clients recover from `log` (SPEC §7) within `config`'s limits.
    /// Set once; later calls change nothing.
    pub fn set_history(&self, log: Arc<dyn PartitionLog>, config: &HistoryConfig) {
        let _ = self.inner.history.set(EdgeHistory {
            log,
            max_replay: config.max_replay,
            max_scan: config.max_scan(),
        });
    }

    /// Publishes connection events to `events` and accepts upstream
    /// messages (mode 500) from now on. Set once; later calls change
    /// nothing. Without it nothing is published and mode 500 gets 1006.
    pub fn set_events(&self, events: Events) {
        let _ = self.inner.events.set(events);
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The configuration.
    pub fn config(&self) -> &EdgeConfig {
        &self.inner.config
    }

    /// Live connections on this node.
    pub fn connections(&self) -> usize {
        self.inner.registry.len()
    }

    /// The shared state (for the modules of this crate).
    pub(crate) fn inner(&self) -> &Arc<EdgeInner> {
        &self.inner
    }
}

impl EdgeInner {
    /// The logs clients recover from, if any.
    pub(crate) fn history(&self) -> Option<&EdgeHistory> {
        self.history.get()
    }

    /// Where connection events go, when they are on.
    pub(crate) fn events(&self) -> Option<&Events> {
        crate::events::of(self.events.get())
    }

    /// Whether this node is draining (its presence was dropped).
    pub(crate) fn is_draining(&self) -> bool {
        self.presence_dropped.load(Ordering::Acquire)
    }

    /// Per history partition: the newest owner token heard and how many of
    /// its messages arrived.
    pub(crate) fn orders(&self) -> &Mutex<HashMap<u32, (u64, u64)>> {
        &self.orders
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The local connections.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether the routers may have purged this node ([`crate::heard`]).
    pub(crate) fn heard(&self) -> &Heard {
        &self.heard
    }

    /// Where a resync's hold stands.
    pub(crate) fn resync_hold(&self) -> &ResyncHold {
        &self.resync_hold
    }

    /// The seam to the routers.
    pub(crate) fn router(&self) -> &Arc<dyn RouterLink> {
        &self.router
    }

    /// The node's metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Readiness and drain state.
    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    /// The token checker, when authentication is on.
    pub(crate) fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_deref()
    }

    /// Sessions and disconnect tasks.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// The per-address connection counts.
    pub(crate) fn addresses(&self) -> &SlotLimiter<IpAddr> {
        &self.addresses
    }

    /// Each bizCode's limits and connection count.
    pub(crate) fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// Whether `biz` is known to be registered.
    pub(crate) fn is_known_biz(&self, biz: &str) -> bool {
        self.known_biz.lock().contains(biz)
    }

    /// Remembers that `biz` is registered (while the cache has room).
    pub(crate) fn remember_biz(&self, biz: &str) {
        let mut known = self.known_biz.lock();
        if known.len() < KNOWN_BIZ_CACHE {
            known.insert(biz.to_owned());
        }
    }

    /// A connection id not used before on this node.
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The coarse clock: seconds since start, as of the last sweep.
    pub(crate) fn clock(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// Advances the coarse clock to now and returns it (the sweeper's).
    pub(crate) fn tick_clock(&self) -> u64 {
        let now = self.started.elapsed().as_secs();
        self.clock.store(now, Ordering::Relaxed);
        now
    }

    /// Marks every connection's presence as removed (drain's): sessions
    /// that end from now on send no disconnect.
    pub(crate) fn drop_presence(&self) {
        self.presence_dropped.store(true, Ordering::Release);
    }

    /// Sends a text payload of `mode` to one connection (written at once
    /// when its queue is empty).
    pub(crate) fn push(&self, conn: &Conn, mode: u16, payload: &[u8]) {
        self.metrics.frames_sent.get(mode).inc();
        if conn
            .outbox
            .push_text(outbox::text_frame(payload), self.config.send_queue_bytes)
            == Pushed::Overflow
        {
            self.slow_consumer(conn);
        }
    }

    /// Counts and logs a connection whose send queue overflowed (the
    /// outbox already queued its 4008 close).
    pub(crate) fn slow_consumer(&self, conn: &Conn) {
        self.metrics.slow_consumer_closes.inc();
        tracing::info!(conn_id = conn.id, biz = %conn.biz, client_id = %conn.client, "send queue overflowed, closing slow consumer (4008)");
    }

    /// Queues a mode-2 reply.
    pub(crate) fn reply(&self, conn: &Conn, msg_id: Option<&str>, code: ErrorCode, msg: &str, recipients: Option<u32>) {
        let bytes = frame::reply(msg_id, code, msg, recipients);
        self.push(conn, frame::MODE_REPLY, &bytes);
    }

    /// Removes presence in the background, retrying while no router answers.
    pub(crate) fn spawn_disconnect(&self, d: Disconnect) {
        if self.presence_dropped.load(Ordering::Acquire) {
            // The drain already removed it.
            return;
        }
        let router = self.router.clone();
        let dropped = self.presence_dropped.clone();
        self.tasks.spawn(async move {
            // Retried until a router answers (a bus outage can last long) or
            // the node drains, which removes its whole presence anyway.
            // Idempotent: the router removes the entry only if it is still
            // this connection's.
            let mut attempt = 0u32;
            while !dropped.load(Ordering::Acquire) {
                match router.disconnect(d.clone()).await {
                    Ok(()) => return,
                    Err(e) => {
                        if attempt < 3 || attempt.is_multiple_of(30) {
                            tracing::warn!(conn_id = d.conn, biz = %d.biz, client_id = %d.client, error = %e, attempt, "disconnect not acknowledged, retrying");
                        }
                        tokio::time::sleep(Duration::from_millis((200u64 << attempt.min(3)).min(2000))).await;
                        attempt += 1;
                    }
                }
            }
        });
    }
}
