//! The router's logic, transport-free: the NATS service and `standalone`
//! both call these methods. This file holds presence (connect, disconnect,
//! drain, the index); the child modules hold the rest: `resync` (a node
//! re-asserts its connections, the router reconciles its entries),
//! `liveness`, `route` (sends and notices), `admin` (API operations).

mod admin;
mod liveness;
mod resync;
mod route;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_protocol::envelope::{
    ConnInfo, ConnectReply, DeliverTo, Disconnect, Heartbeat, NodeCommand, PresenceValue, Resync, Route, RouteReply,
};
use switchboard_protocol::frame::{self, PresenceEvent, SendTarget};
use switchboard_protocol::subject::{parse_presence_key, presence_key};
use switchboard_protocol::{CloseCode, ErrorCode};
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::now_ms;
use tokio_util::sync::CancellationToken;

use crate::config::{NoticeScope, RouterConfig};
use crate::index::{Entry, Index};
use crate::link::EdgeLink;
use crate::store::{BizRegistry, PresenceStore, StoreError, Versioned, WatchEvent};

/// Most groups one client may be in through `bind_to_group`.
pub const MAX_GROUPS_PER_CLIENT: usize = 1024;

/// Attempts of a compare-and-set loop before giving up with 1500.
const CAS_ATTEMPTS: usize = 8;

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
    }
}

/// The router. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    config: RouterConfig,
    store: Arc<dyn PresenceStore>,
    registry: Arc<dyn BizRegistry>,
    edges: Arc<dyn EdgeLink>,
    index: Mutex<Index>,
    nodes: Mutex<HashMap<Arc<str>, NodeState>>,
    metrics: Arc<Metrics>,
}

impl Router {
    /// A router over `store` that reaches nodes through `edges`.
    pub fn new(
        config: RouterConfig,
        store: Arc<dyn PresenceStore>,
        registry: Arc<dyn BizRegistry>,
        edges: Arc<dyn EdgeLink>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                registry,
                edges,
                index: Mutex::new(Index::default()),
                nodes: Mutex::new(HashMap::new()),
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
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
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

    fn apply_watch(&self, ev: WatchEvent, ready: &mut Option<tokio::sync::oneshot::Sender<()>>) {
        match ev {
            WatchEvent::Put { value, revision, .. } => {
                let node: Arc<str> = value.node.as_str().into();
                let mut ix = self.inner.index.lock();
                ix.put(&value, revision);
                self.inner.metrics.presence_entries.set(ix.len() as i64);
                drop(ix);
                // A node we never heard of gets a full timeout from now.
                self.inner.nodes.lock().entry(node).or_insert_with(NodeState::new);
            }
            WatchEvent::Delete { key, revision } => {
                if let Some((biz, client)) = parse_presence_key(&key) {
                    let mut ix = self.inner.index.lock();
                    ix.delete(&biz, &client, revision.saturating_sub(1));
                    self.inner.metrics.presence_entries.set(ix.len() as i64);
                }
            }
            WatchEvent::Ready => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
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

    /// Registers a connection's presence, replacing (4009) an older
    /// connection of the same bizCode+clientId wherever it is.
    pub async fn connect(&self, info: ConnInfo) -> ConnectReply {
        self.heard(&info.node);
        let key = presence_key(&info.biz, &info.client);
        let value = presence_value(&info);
        // Create first (one round trip for a new client); on conflict read
        // the latest entry and replace it, compare-and-set on its revision.
        let mut current: Option<Versioned> = None;
        let mut written = None;
        for attempt in 0..CAS_ATTEMPTS {
            let result = if attempt == 0 {
                self.inner.store.create(&key, &value).await
            } else {
                match self.inner.store.get(&key).await {
                    Ok(None) => {
                        current = None;
                        self.inner.store.create(&key, &value).await
                    }
                    Ok(Some(v)) => {
                        let r = self.inner.store.update(&key, &value, v.revision).await;
                        current = Some(v);
                        r
                    }
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(rev) => {
                    written = Some(rev);
                    break;
                }
                Err(StoreError::WrongRevision) => continue,
                Err(e) => return self.fail_connect(&info, &e),
            }
        }
        let Some(revision) = written else {
            return ConnectReply {
                code: ErrorCode::Internal.as_u16(),
            };
        };
        let old = self.index_replace(&value, revision, current);
        if let Some(old) = old {
            if !(*old.node == *info.node && old.conn == info.conn) {
                let _ = self
                    .inner
                    .edges
                    .send(
                        &old.node,
                        NodeCommand::Close {
                            conn: old.conn,
                            code: CloseCode::Replaced.as_u16(),
                        },
                    )
                    .await;
                self.notify(
                    PresenceEvent::Offline,
                    &info.biz,
                    &info.client,
                    &old.groups,
                    Some((&old.node, old.conn)),
                )
                .await;
            }
        }
        self.notify_online(&info).await;
        ConnectReply { code: 0 }
    }

    /// Online notices for a connection that just entered presence.
    async fn notify_online(&self, info: &ConnInfo) {
        let skip = Some((info.node.as_str(), info.conn));
        self.notify(PresenceEvent::Online, &info.biz, &info.client, &info.groups, skip)
            .await;
    }

    /// Applies our own write to the index and returns the entry it replaced
    /// (from the index, or from what the store held before the write).
    fn index_replace(&self, value: &PresenceValue, revision: u64, before: Option<Versioned>) -> Option<Entry> {
        let mut ix = self.inner.index.lock();
        let (_, old) = ix.put(value, revision);
        self.inner.metrics.presence_entries.set(ix.len() as i64);
        old.or_else(|| {
            before.map(|v| Entry {
                node: v.value.node.as_str().into(),
                conn: v.value.conn,
                groups: v.value.groups.iter().map(|g| Arc::from(g.as_str())).collect(),
                revision: v.revision,
            })
        })
    }

    fn fail_connect(&self, info: &ConnInfo, e: &StoreError) -> ConnectReply {
        tracing::warn!(node_id = %info.node, conn_id = info.conn, biz = %info.biz, client_id = %info.client, error = %e, "presence write failed");
        ConnectReply {
            code: ErrorCode::Internal.as_u16(),
        }
    }

    /// Removes a connection's presence if the entry is still that
    /// connection's (a stale disconnect never removes a newer connection).
    pub async fn disconnect(&self, d: Disconnect) -> ConnectReply {
        let key = presence_key(&d.biz, &d.client);
        for _ in 0..CAS_ATTEMPTS {
            let current = match self.inner.store.get(&key).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(conn_id = d.conn, biz = %d.biz, client_id = %d.client, error = %e, "presence read failed");
                    return ConnectReply {
                        code: ErrorCode::Internal.as_u16(),
                    };
                }
            };
            let Some(v) = current else {
                return ConnectReply { code: 0 };
            };
            if v.value.node != d.node || v.value.conn != d.conn {
                return ConnectReply { code: 0 };
            }
            match self.inner.store.delete(&key, v.revision).await {
                Ok(()) => {
                    self.index_delete(&d.biz, &d.client, v.revision);
                    let groups = &v.value.groups;
                    self.notify(PresenceEvent::Offline, &d.biz, &d.client, groups, None)
                        .await;
                    return ConnectReply { code: 0 };
                }
                Err(StoreError::WrongRevision) => continue,
                Err(e) => {
                    tracing::warn!(conn_id = d.conn, error = %e, "presence delete failed");
                    return ConnectReply {
                        code: ErrorCode::Internal.as_u16(),
                    };
                }
            }
        }
        ConnectReply {
            code: ErrorCode::Internal.as_u16(),
        }
    }

    /// A draining node's connections leave presence now (with offline
    /// notices), each only if the entry is still that connection's.
    pub async fn drain(&self, d: Resync) -> ConnectReply {
        let mut code = 0;
        for c in d.conns {
            let r = self
                .disconnect(Disconnect {
                    node: c.node,
                    conn: c.conn,
                    biz: c.biz,
                    client: c.client,
                })
                .await;
            if r.code != 0 {
                code = r.code;
            }
        }
        ConnectReply { code }
    }
}
