//! The router's logic, transport-free: the NATS service and `standalone`
//! both call these methods.

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
                self.inner.nodes.lock().entry(node).or_insert(NodeState {
                    last_heard: Instant::now(),
                    dead: false,
                });
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
        let value = PresenceValue {
            node: info.node.clone(),
            conn: info.conn,
            biz: info.biz.clone(),
            client: info.client.clone(),
            groups: info.groups.clone(),
            since: now_ms(),
        };
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
        let groups = &info.groups;
        self.notify(
            PresenceEvent::Online,
            &info.biz,
            &info.client,
            groups,
            Some((&info.node, info.conn)),
        )
        .await;
        ConnectReply { code: 0 }
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

    /// Re-asserts presence for a node's connections after a bus outage or a
    /// purge. A connection whose client has since connected elsewhere is
    /// closed with 4009.
    pub async fn resync(&self, r: Resync) -> ConnectReply {
        self.heard(&r.node);
        for info in r.conns {
            let key = presence_key(&info.biz, &info.client);
            match self.inner.store.get(&key).await {
                Ok(Some(v)) if v.value.node == info.node && v.value.conn == info.conn => {
                    self.index_put(&v.value, v.revision);
                }
                Ok(Some(_)) => {
                    let _ = self
                        .inner
                        .edges
                        .send(
                            &info.node,
                            NodeCommand::Close {
                                conn: info.conn,
                                code: CloseCode::Replaced.as_u16(),
                            },
                        )
                        .await;
                }
                Ok(None) => {
                    let value = PresenceValue {
                        node: info.node.clone(),
                        conn: info.conn,
                        biz: info.biz.clone(),
                        client: info.client.clone(),
                        groups: info.groups.clone(),
                        since: now_ms(),
                    };
                    match self.inner.store.create(&key, &value).await {
                        Ok(rev) => {
                            self.index_put(&value, rev);
                            let groups = &info.groups;
                            self.notify(
                                PresenceEvent::Online,
                                &info.biz,
                                &info.client,
                                groups,
                                Some((&info.node, info.conn)),
                            )
                            .await;
                        }
                        Err(StoreError::WrongRevision) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "resync write failed");
                            return ConnectReply {
                                code: ErrorCode::Internal.as_u16(),
                            };
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "resync read failed");
                    return ConnectReply {
                        code: ErrorCode::Internal.as_u16(),
                    };
                }
            }
        }
        ConnectReply { code: 0 }
    }

    /// Where a client is: the index, or the store when the index has not
    /// seen it yet (its watch may lag a connect handled by another router).
    async fn locate(&self, biz: &str, client: &str) -> Result<Option<(Arc<str>, u64)>, StoreError> {
        if let Some(e) = self.inner.index.lock().get(biz, client) {
            return Ok(Some((e.node.clone(), e.conn)));
        }
        let v = self.inner.store.get(&presence_key(biz, client)).await?;
        Ok(v.map(|v| (Arc::from(v.value.node.as_str()), v.value.conn)))
    }

    /// Routes a client send: renders the delivery once and sends one
    /// Deliver per node that hosts a recipient. Answered after the
    /// deliveries were handed to the bus.
    pub async fn route(&self, r: Route) -> RouteReply {
        let started = Instant::now();
        let frame = Bytes::from(frame::delivery(
            &r.target,
            r.msg_id.as_deref(),
            &r.from,
            &r.content,
            now_ms(),
        ));
        let mode = r.target.mode();
        let plan: Vec<(Arc<str>, DeliverTo)>;
        let recipients: u32;
        match &r.target {
            SendTarget::Client(target) => match self.locate(&r.biz, target).await {
                Ok(Some((node, conn))) => {
                    plan = vec![(node, DeliverTo::Conns(vec![conn]))];
                    recipients = 1;
                }
                Ok(None) => {
                    return RouteReply {
                        code: ErrorCode::Offline.as_u16(),
                        recipients: 0,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "presence lookup failed");
                    return RouteReply {
                        code: ErrorCode::Internal.as_u16(),
                        recipients: 0,
                    };
                }
            },
            SendTarget::Group(group) => {
                let ix = self.inner.index.lock();
                let (p, n) = match ix.group(&r.biz, group) {
                    Some(g) => {
                        let sender_in = ix.get(&r.biz, &r.from).is_some_and(|e| {
                            *e.node == *r.node && e.conn == r.conn && g.members.contains(r.from.as_str())
                        });
                        let p = g
                            .nodes
                            .keys()
                            .map(|node| {
                                let exclude = (**node == *r.node).then_some(r.conn);
                                (
                                    node.clone(),
                                    DeliverTo::Group {
                                        biz: r.biz.clone(),
                                        group: group.clone(),
                                        exclude,
                                    },
                                )
                            })
                            .collect();
                        (p, g.members.len() - usize::from(sender_in))
                    }
                    None => (Vec::new(), 0),
                };
                plan = p;
                recipients = u32::try_from(n).unwrap_or(u32::MAX);
            }
            SendTarget::Biz => {
                let ix = self.inner.index.lock();
                let (p, n) = match ix.biz_nodes(&r.biz) {
                    Some((nodes, total)) => {
                        let sender_in = ix
                            .get(&r.biz, &r.from)
                            .is_some_and(|e| *e.node == *r.node && e.conn == r.conn);
                        let p = nodes
                            .keys()
                            .map(|node| {
                                let exclude = (**node == *r.node).then_some(r.conn);
                                (
                                    node.clone(),
                                    DeliverTo::Biz {
                                        biz: r.biz.clone(),
                                        exclude,
                                    },
                                )
                            })
                            .collect();
                        (p, total - usize::from(sender_in))
                    }
                    None => (Vec::new(), 0),
                };
                plan = p;
                recipients = u32::try_from(n).unwrap_or(u32::MAX);
            }
        }
        for (node, to) in plan {
            let cmd = NodeCommand::Deliver {
                mode,
                to,
                frame: frame.clone(),
            };
            if let Err(e) = self.inner.edges.send(&node, cmd).await {
                tracing::warn!(node_id = %node, error = %e, "deliver failed");
                return RouteReply {
                    code: ErrorCode::Internal.as_u16(),
                    recipients: 0,
                };
            }
        }
        self.inner
            .metrics
            .route_duration
            .observe(started.elapsed().as_secs_f64());
        RouteReply { code: 0, recipients }
    }

    /// Registers a bizCode.
    pub async fn register(&self, biz: &str) -> Result<(), ErrorCode> {
        self.inner.registry.register(biz).await.map_err(|e| {
            tracing::warn!(biz, error = %e, "registration failed");
            ErrorCode::Internal
        })
    }

    /// Whether a bizCode is registered.
    pub async fn is_registered(&self, biz: &str) -> Result<bool, ErrorCode> {
        self.inner.registry.is_registered(biz).await.map_err(|e| {
            tracing::warn!(biz, error = %e, "registry lookup failed");
            ErrorCode::Internal
        })
    }

    /// Delivers one mode-100 frame to each online client of `clients`
    /// (one Deliver per node). Returns how many were online.
    pub async fn send_clients(
        &self,
        biz: &str,
        clients: &[String],
        from: &str,
        msg_id: &str,
        content: &str,
    ) -> Result<u32, ErrorCode> {
        let mut by_node: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for c in clients {
            if !seen.insert(c.as_str()) {
                continue;
            }
            match self.locate(biz, c).await {
                Ok(Some((node, conn))) => by_node.entry(node).or_default().push(conn),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "presence lookup failed");
                    return Err(ErrorCode::Internal);
                }
            }
        }
        let target = SendTarget::Client(String::new());
        let frame = Bytes::from(frame::delivery(&target, Some(msg_id), from, content, now_ms()));
        let mut n = 0u32;
        for (node, conns) in by_node {
            n += u32::try_from(conns.len()).unwrap_or(u32::MAX);
            let cmd = NodeCommand::Deliver {
                mode: frame::MODE_UNICAST,
                to: DeliverTo::Conns(conns),
                frame: frame.clone(),
            };
            if let Err(e) = self.inner.edges.send(&node, cmd).await {
                tracing::warn!(node_id = %node, error = %e, "deliver failed");
                return Err(ErrorCode::Internal);
            }
        }
        Ok(n)
    }

    /// Adds (`join`) or removes a client's connection to/from a group: the
    /// presence entry first, then the client's edge; answered after both.
    pub async fn set_group(&self, biz: &str, client: &str, group: &str, join: bool) -> Result<(), ErrorCode> {
        let key = presence_key(biz, client);
        let mut target = None;
        for _ in 0..CAS_ATTEMPTS {
            let Some(v) = self.inner.store.get(&key).await.map_err(|_| ErrorCode::Internal)? else {
                return Err(ErrorCode::Offline);
            };
            let mut value = v.value.clone();
            let has = value.groups.iter().any(|g| g == group);
            match (join, has) {
                (true, false) => {
                    if value.groups.len() >= MAX_GROUPS_PER_CLIENT {
                        return Err(ErrorCode::InvalidFrame);
                    }
                    value.groups.push(group.to_owned());
                }
                (false, true) => value.groups.retain(|g| g != group),
                _ => {
                    target = Some((value.node, value.conn));
                    break;
                }
            }
            match self.inner.store.update(&key, &value, v.revision).await {
                Ok(rev) => {
                    self.index_put(&value, rev);
                    target = Some((value.node, value.conn));
                    break;
                }
                Err(StoreError::WrongRevision) => continue,
                Err(_) => return Err(ErrorCode::Internal),
            }
        }
        let Some((node, conn)) = target else {
            return Err(ErrorCode::Internal);
        };
        let cmd = if join {
            NodeCommand::Bind {
                conn,
                group: group.to_owned(),
            }
        } else {
            NodeCommand::Unbind {
                conn,
                group: group.to_owned(),
            }
        };
        match self.inner.edges.request(&node, cmd).await {
            Ok(r) if r.found => Ok(()),
            Ok(_) => Err(ErrorCode::Offline),
            Err(e) => {
                tracing::warn!(node_id = %node, error = %e, "bind/unbind not acknowledged");
                Err(ErrorCode::Internal)
            }
        }
    }

    /// Closes a client's connection with 4000 wherever it is and removes
    /// its presence at once.
    pub async fn close_client(&self, biz: &str, client: &str) -> Result<(), ErrorCode> {
        let key = presence_key(biz, client);
        let Some(v) = self.inner.store.get(&key).await.map_err(|_| ErrorCode::Internal)? else {
            return Err(ErrorCode::Offline);
        };
        let cmd = NodeCommand::Close {
            conn: v.value.conn,
            code: CloseCode::ClosedByApi.as_u16(),
        };
        let found = match self.inner.edges.request(&v.value.node, cmd).await {
            Ok(r) => r.found,
            Err(e) => {
                tracing::warn!(node_id = %v.value.node, error = %e, "close not acknowledged");
                return Err(ErrorCode::Internal);
            }
        };
        if self.inner.store.delete(&key, v.revision).await.is_ok() {
            self.index_delete(biz, client, v.revision);
            let groups = &v.value.groups;
            self.notify(PresenceEvent::Offline, biz, client, groups, None).await;
        }
        if found {
            Ok(())
        } else {
            Err(ErrorCode::Offline)
        }
    }

    /// clientIds online in `biz` (in `group`, if given), from the index.
    pub fn online_list(&self, biz: &str, group: Option<&str>) -> Vec<String> {
        let ix = self.inner.index.lock();
        match group {
            None => ix.clients(biz),
            Some(g) => {
                let mut v: Vec<String> = ix
                    .group(biz, g)
                    .map(|g| g.members.iter().map(|c| c.to_string()).collect())
                    .unwrap_or_default();
                v.sort_unstable();
                v
            }
        }
    }

    /// Groups of `biz` with member counts, from the index.
    pub fn all_groups(&self, biz: &str) -> Vec<(String, usize)> {
        self.inner.index.lock().groups(biz)
    }

    /// Sends presence notices for `client` to the other members of each of
    /// `groups` (or of the bizCode), skipping groups over the size limit.
    async fn notify<G: AsRef<str>>(
        &self,
        event: PresenceEvent,
        biz: &str,
        client: &str,
        groups: &[G],
        skip: Option<(&str, u64)>,
    ) {
        let limit = self.inner.config.notice_max_members;
        let mut sends: Vec<(Arc<str>, NodeCommand)> = Vec::new();
        {
            let ix = self.inner.index.lock();
            let exclude_on = |node: &str| skip.and_then(|(n, c)| (n == node).then_some(c));
            match self.inner.config.presence_notices {
                NoticeScope::Off => return,
                NoticeScope::Groups => {
                    for g in groups.iter().map(AsRef::as_ref) {
                        let Some(group) = ix.group(biz, g) else {
                            continue;
                        };
                        if group.members.len() > limit {
                            continue;
                        }
                        let frame = Bytes::from(frame::presence_notice(event, client, Some(g)));
                        for node in group.nodes.keys() {
                            sends.push((
                                node.clone(),
                                NodeCommand::Deliver {
                                    mode: frame::MODE_PRESENCE,
                                    to: DeliverTo::Group {
                                        biz: biz.to_owned(),
                                        group: g.to_string(),
                                        exclude: exclude_on(node),
                                    },
                                    frame: frame.clone(),
                                },
                            ));
                        }
                    }
                }
                NoticeScope::Biz => {
                    if let Some((nodes, total)) = ix.biz_nodes(biz) {
                        if total <= limit {
                            let frame = Bytes::from(frame::presence_notice(event, client, None));
                            for node in nodes.keys() {
                                sends.push((
                                    node.clone(),
                                    NodeCommand::Deliver {
                                        mode: frame::MODE_PRESENCE,
                                        to: DeliverTo::Biz {
                                            biz: biz.to_owned(),
                                            exclude: exclude_on(node),
                                        },
                                        frame: frame.clone(),
                                    },
                                ));
                            }
                        }
                    }
                }
            }
        }
        for (node, cmd) in sends {
            let _ = self.inner.edges.send(&node, cmd).await;
        }
    }

    fn heard(&self, node: &str) -> bool {
        let mut nodes = self.inner.nodes.lock();
        match nodes.get_mut(node) {
            Some(s) => {
                s.last_heard = Instant::now();
                std::mem::replace(&mut s.dead, false)
            }
            None => {
                nodes.insert(
                    node.into(),
                    NodeState {
                        last_heard: Instant::now(),
                        dead: false,
                    },
                );
                false
            }
        }
    }

    /// Records a node heartbeat. A node we had declared dead is asked to
    /// resync (it was only partitioned or paused).
    pub async fn heartbeat(&self, hb: Heartbeat) {
        if self.heard(&hb.node) {
            tracing::info!(node_id = %hb.node, "purged node is alive again, asking it to resync");
            let _ = self.inner.edges.send(&hb.node, NodeCommand::Resync).await;
        }
    }

    /// Checks node liveness every second until `shutdown`, purging the
    /// presence of nodes silent for longer than `node_timeout`.
    pub fn spawn_liveness(&self, shutdown: CancellationToken) {
        let router = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut n = 0u64;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                n += 1;
                if n.is_multiple_of(120) {
                    router.inner.index.lock().prune_tombstones(Duration::from_secs(120));
                }
                for node in router.expired_nodes() {
                    router.purge_node(&node).await;
                }
            }
        });
    }

    fn expired_nodes(&self) -> Vec<Arc<str>> {
        let timeout = self.inner.config.node_timeout;
        let mut nodes = self.inner.nodes.lock();
        // Nodes that appear only in the index (learned from the watch) are
        // tracked from the moment we first saw them.
        {
            let ix = self.inner.index.lock();
            for node in ix.nodes() {
                nodes.entry(node.clone()).or_insert(NodeState {
                    last_heard: Instant::now(),
                    dead: false,
                });
            }
        }
        let mut expired = Vec::new();
        let ix = self.inner.index.lock();
        nodes.retain(|node, s| {
            if s.last_heard.elapsed() < timeout {
                return true;
            }
            let has_entries = !ix.node_entries(node).is_empty();
            if !s.dead || has_entries {
                s.dead = true;
                expired.push(node.clone());
            }
            // Forget long-dead nodes without entries.
            has_entries || s.last_heard.elapsed() < timeout * 20
        });
        expired
    }

    async fn purge_node(&self, node: &str) {
        let entries = self.inner.index.lock().node_entries(node);
        if entries.is_empty() {
            return;
        }
        tracing::warn!(node_id = %node, entries = entries.len(), "node silent, purging its presence");
        let mut purged = 0usize;
        for (biz, client, entry) in entries {
            let key = presence_key(&biz, &client);
            match self.inner.store.delete(&key, entry.revision).await {
                Ok(()) => {
                    purged += 1;
                    self.index_delete(&biz, &client, entry.revision);
                    self.notify(PresenceEvent::Offline, &biz, &client, &entry.groups, None)
                        .await;
                }
                Err(StoreError::WrongRevision) => {
                    // Changed under us (another router purged it, or the
                    // client reconnected): re-read so the index catches up.
                    if let Ok(v) = self.inner.store.get(&key).await {
                        match v {
                            Some(v) => self.index_put(&v.value, v.revision),
                            None => self.index_delete(&biz, &client, entry.revision),
                        }
                    }
                }
                Err(e) => tracing::warn!(node_id = %node, error = %e, "purge failed, will retry"),
            }
        }
        if purged > 0 {
            self.inner.metrics.nodes_purged.inc();
        }
    }
}
