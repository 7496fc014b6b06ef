//! Test doubles for the core's unit tests: a [`Router`] on the in-memory
//! store whose edge link records every command and answers
//! [`NodeCommand::Holds`] from a set of held connections.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use switchboard_protocol::envelope::{CommandReply, ConnInfo, Disconnect, NodeCommand};
use switchboard_protocol::frame;
use switchboard_protocol::subject::presence_key;
use switchboard_runtime::metrics::Metrics;

use super::Router;
use crate::config::RouterConfig;
use crate::link::{EdgeError, EdgeLink};
use crate::store::{MemoryRegistry, MemoryStore, PresenceStore};

/// Every edge node at once: holds `held` connections and records every
/// command it is sent.
#[derive(Default)]
pub(super) struct Nodes {
    pub(super) held: Mutex<HashSet<u64>>,
    /// `holds` fails (an edge that cannot be asked).
    mute: AtomicBool,
    pub(super) sent: Mutex<Vec<(String, NodeCommand)>>,
}

#[async_trait]
impl EdgeLink for Nodes {
    async fn send(&self, node: &str, cmd: NodeCommand) -> Result<(), EdgeError> {
        self.sent.lock().push((node.to_owned(), cmd));
        Ok(())
    }
    async fn request(&self, _node: &str, _cmd: NodeCommand) -> Result<CommandReply, EdgeError> {
        Ok(CommandReply { found: true })
    }
    async fn holds(&self, _node: &str, conns: Vec<u64>) -> Result<Vec<u64>, EdgeError> {
        if self.mute.load(Ordering::Relaxed) {
            return Err(EdgeError("mute".into()));
        }
        let held = self.held.lock();
        Ok(conns.into_iter().filter(|c| held.contains(c)).collect())
    }
}

impl Nodes {
    /// Makes `holds` fail (`true`) or answer again.
    pub(super) fn mute(&self, mute: bool) {
        self.mute.store(mute, Ordering::Relaxed);
    }

    /// Presence notices sent so far to `node`, as (event, clientId).
    pub(super) fn notices_to(&self, node: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (to, cmd) in self.sent.lock().iter() {
            if to != node {
                continue;
            }
            if let NodeCommand::Deliver { mode, frame, .. } = cmd {
                if *mode == frame::MODE_PRESENCE {
                    let v: serde_json::Value = serde_json::from_slice(frame).expect("notice JSON");
                    out.push((
                        v["event"].as_str().unwrap_or_default().to_owned(),
                        v["clientId"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
        }
        out
    }

    /// The close commands sent so far, as (node, conn, code).
    pub(super) fn closes(&self) -> Vec<(String, u64, u16)> {
        self.sent
            .lock()
            .iter()
            .filter_map(|(node, cmd)| match cmd {
                NodeCommand::Close { conn, code } => Some((node.clone(), *conn, *code)),
                _ => None,
            })
            .collect()
    }
}

/// A router on `store`, reaching [`Nodes`].
pub(super) fn router_on(store: Arc<dyn PresenceStore>) -> (Router, Arc<Nodes>) {
    let nodes = Arc::new(Nodes::default());
    let router = Router::new(
        RouterConfig::default(),
        store,
        Arc::new(MemoryRegistry::default()),
        Arc::new(crate::store::MemoryMembers::default()),
        nodes.clone(),
        None,
        Arc::new(Metrics::new()),
    );
    (router, nodes)
}

/// A router on a fresh in-memory store.
pub(super) fn router() -> (Router, Arc<Nodes>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::default());
    let (router, nodes) = router_on(store.clone());
    (router, nodes, store)
}

/// Connection `conn` of client `client` (bizCode `b`, group `g`) on `node`.
pub(super) fn info(node: &str, conn: u64, client: &str) -> ConnInfo {
    ConnInfo {
        node: node.into(),
        conn,
        biz: "b".into(),
        client: client.into(),
        groups: vec!["g".into()],
    }
}

/// The disconnect of `i`.
pub(super) fn disconnect(i: &ConnInfo) -> Disconnect {
    Disconnect {
        node: i.node.clone(),
        conn: i.conn,
        biz: i.biz.clone(),
        client: i.client.clone(),
    }
}

/// (node, conn) of `client`'s entry (bizCode `b`) in the store.
pub(super) async fn entry(store: &dyn PresenceStore, client: &str) -> Option<(String, u64)> {
    let v = store.get(&presence_key("b", client)).await.expect("get");
    v.map(|v| (v.value.node, v.value.conn))
}

/// Whether the router's index has `client` (bizCode `b`) online.
pub(super) fn online(router: &Router, client: &str) -> bool {
    router.inner.index.lock().get("b", client).is_some()
}

/// A presence store that holds the first create or update of connection
/// `conn` (`gate`) until [`Gated::go`], to put another operation between a
/// connect's read of the membership record and its presence write.
pub(super) struct Gated {
    pub(super) store: MemoryStore,
    gate: Mutex<Option<(bool, u64)>>,
    entered: tokio::sync::Notify,
    go: tokio::sync::Notify,
}

impl Gated {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            store: MemoryStore::default(),
            gate: Mutex::new(None),
            entered: tokio::sync::Notify::new(),
            go: tokio::sync::Notify::new(),
        })
    }

    /// Holds the next create (`create`) or update of connection `conn`.
    pub(super) fn hold(&self, create: bool, conn: u64) {
        *self.gate.lock() = Some((create, conn));
    }

    /// Waits until the held operation is waiting.
    pub(super) async fn held(&self) {
        self.entered.notified().await;
    }

    /// Lets the held operation go on.
    pub(super) fn go(&self) {
        self.go.notify_one();
    }

    async fn pass(&self, create: bool, conn: u64) {
        let hit = {
            let mut g = self.gate.lock();
            let hit = *g == Some((create, conn));
            if hit {
                *g = None;
            }
            hit
        };
        if hit {
            self.entered.notify_one();
            self.go.notified().await;
        }
    }
}

#[async_trait]
impl PresenceStore for Gated {
    async fn get(&self, key: &str) -> Result<Option<crate::store::Versioned>, crate::store::StoreError> {
        self.store.get(key).await
    }
    async fn create(
        &self,
        key: &str,
        value: &switchboard_protocol::envelope::PresenceValue,
    ) -> Result<u64, crate::store::StoreError> {
        self.pass(true, value.conn).await;
        self.store.create(key, value).await
    }
    async fn update(
        &self,
        key: &str,
        value: &switchboard_protocol::envelope::PresenceValue,
        revision: u64,
    ) -> Result<u64, crate::store::StoreError> {
        self.pass(false, value.conn).await;
        self.store.update(key, value, revision).await
    }
    async fn delete(&self, key: &str, revision: u64) -> Result<(), crate::store::StoreError> {
        self.store.delete(key, revision).await
    }
    async fn watch(&self) -> Result<tokio::sync::mpsc::Receiver<crate::store::WatchEvent>, crate::store::StoreError> {
        self.store.watch().await
    }
}
