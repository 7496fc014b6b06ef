//! The edge's NATS side: the router client ([`NatsRouter`]), the node inbox
//! subscriber (router commands, `Holds` questions), the liveness heartbeat
//! and resync after a reconnect.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use switchboard_protocol::envelope::{
    self, BizQuery, ConnInfo, ConnRange, ConnectReply, Disconnect, Heartbeat, HeldReply, NodeCommand, Resync, Route,
    RouteBatch, RouteBatchReply, RouteReply,
};
use switchboard_protocol::subject;
use switchboard_runtime::nats::LinkState;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::link::{LinkError, RouterLink};
use crate::{Dirty, Edge};

/// Most connections per resync message (keeps each under NATS' 1 MiB payload).
pub const RESYNC_CHUNK: usize = 500;

/// Most sends in one route batch.
pub const ROUTE_BATCH: usize = 128;
/// Most route batches of one edge awaiting their answer.
pub const ROUTES_IN_FLIGHT: usize = 4;
/// Most content bytes in one route batch (NATS' default payload limit is
/// 1 MiB; one send's content is at most `edge.max_frame_bytes`).
const ROUTE_BATCH_BYTES: usize = 256 * 1024;

type RouteWaiter = (Route, oneshot::Sender<Result<RouteReply, LinkError>>);

/// [`RouterLink`] over NATS request/reply to the `sb-router` queue group.
///
/// Sends from all sessions go through one batcher: whatever queued up while
/// it was busy goes out as one [`RouteBatch`] (no waiting: at low load a
/// batch is one send), and several batches can be in flight.
#[derive(Debug, Clone)]
pub struct NatsRouter {
    client: Client,
    routes: mpsc::UnboundedSender<RouteWaiter>,
}

impl NatsRouter {
    /// Wraps a connected client and starts the route batcher (call within
    /// a Tokio runtime).
    pub fn new(client: Client) -> Self {
        let (routes, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_routes(client.clone(), rx));
        Self { client, routes }
    }

    async fn request<Q: Serialize, A: DeserializeOwned>(&self, subject: &'static str, q: &Q) -> Result<A, LinkError> {
        request(&self.client, subject, q).await
    }
}

async fn request<Q: Serialize, A: DeserializeOwned>(
    client: &Client,
    subject: &'static str,
    q: &Q,
) -> Result<A, LinkError> {
    let payload = envelope::encode(q).map_err(|e| LinkError::BadAnswer(e.to_string()))?;
    let msg = client
        .request(subject, payload)
        .await
        .map_err(|e| LinkError::Unavailable(e.to_string()))?;
    envelope::decode(&msg.payload).map_err(|e| LinkError::BadAnswer(e.to_string()))
}

/// Takes queued sends in batches (by count and bytes) and asks a router
/// for each batch in its own task. At most [`ROUTES_IN_FLIGHT`] batches
/// are outstanding: while they are, new sends queue up and go together in
/// the next batch, so batches grow with the load (at low load a batch is
/// one send and nothing waits).
async fn batch_routes(client: Client, mut rx: mpsc::UnboundedReceiver<RouteWaiter>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ROUTES_IN_FLIGHT));
    let mut queued = Vec::with_capacity(ROUTE_BATCH);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if rx.recv_many(&mut queued, ROUTE_BATCH).await == 0 {
            return;
        }
        let mut slot = Some(slot);
        let mut pending = queued.drain(..).peekable();
        while pending.peek().is_some() {
            let mut routes = Vec::new();
            let mut waiters = Vec::new();
            let mut bytes = 0;
            while let Some((route, waiter)) =
                pending.next_if(|(r, _)| routes.is_empty() || bytes + r.content.len() <= ROUTE_BATCH_BYTES)
            {
                bytes += route.content.len();
                routes.push(route);
                waiters.push(waiter);
            }
            // Only the first chunk holds the slot: extra chunks (large
            // contents) are rare and must not wait behind each other.
            let slot = slot.take();
            let client = client.clone();
            tokio::spawn(async move {
                for (w, r) in waiters.into_iter().zip(route_batch(&client, routes).await) {
                    let _ = w.send(r);
                }
                drop(slot);
            });
        }
    }
}

/// Asks a router to route `routes`; one answer per route, in order.
async fn route_batch(client: &Client, routes: Vec<Route>) -> Vec<Result<RouteReply, LinkError>> {
    let n = routes.len();
    let all = |e: LinkError| (0..n).map(|_| Err(e.clone())).collect();
    let payload = match envelope::encode(&RouteBatch { routes }) {
        Ok(p) => p,
        Err(e) => return all(LinkError::BadAnswer(e.to_string())),
    };
    match client.request(subject::ROUTER_ROUTE_BATCH, payload).await {
        Ok(msg) => match envelope::decode::<RouteBatchReply>(&msg.payload) {
            Ok(a) if a.replies.len() == n => a.replies.into_iter().map(Ok).collect(),
            Ok(a) => all(LinkError::BadAnswer(format!(
                "{} answers to {n} sends",
                a.replies.len()
            ))),
            Err(e) => all(LinkError::BadAnswer(e.to_string())),
        },
        Err(e) => all(LinkError::Unavailable(e.to_string())),
    }
}

#[async_trait]
impl RouterLink for NatsRouter {
    async fn connect(&self, info: ConnInfo) -> Result<ConnectReply, LinkError> {
        self.request(subject::ROUTER_CONNECT, &info).await
    }
    async fn disconnect(&self, d: Disconnect) -> Result<(), LinkError> {
        let _: ConnectReply = self.request(subject::ROUTER_DISCONNECT, &d).await?;
        Ok(())
    }
    async fn route(&self, r: Route) -> Result<RouteReply, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.routes
            .send((r, tx))
            .map_err(|_| LinkError::Unavailable("route batcher stopped".into()))?;
        rx.await
            .map_err(|_| LinkError::Unavailable("route batcher stopped".into()))?
    }
    async fn resync(&self, r: Resync) -> Result<(), LinkError> {
        // 1500: the router could not apply it all (its store was not back
        // yet, or it could not confirm with us): try again.
        let a: ConnectReply = self.request(subject::ROUTER_RESYNC, &r).await?;
        match a.code {
            0 => Ok(()),
            code => Err(LinkError::Unavailable(format!("resync answered {code}"))),
        }
    }
    async fn drain(&self, d: Resync) -> Result<(), LinkError> {
        let _: ConnectReply = self.request(subject::ROUTER_DRAIN, &d).await?;
        Ok(())
    }
    async fn is_registered(&self, biz: &str) -> Result<bool, LinkError> {
        let r: ConnectReply = self
            .request(subject::ROUTER_CHECK_BIZ, &BizQuery { biz: biz.to_owned() })
            .await?;
        match r.code {
            0 => Ok(true),
            1007 => Ok(false),
            code => Err(LinkError::Unavailable(format!("registry answered {code}"))),
        }
    }
}

/// Subscribes the node inbox and starts the heartbeat and resync tasks.
/// Returns once the inbox subscription is registered with the server.
///
/// # Errors
/// If the subscription cannot be made.
pub async fn attach(
    edge: Edge,
    client: Client,
    mut link: watch::Receiver<(u64, LinkState)>,
    shutdown: CancellationToken,
) -> Result<(), async_nats::Error> {
    let node = edge.node_id().to_owned();
    let mut inbox = client.subscribe(subject::node_inbox(&node)).await?;
    client.flush().await?;
    // One resync at a time; triggers while it runs make one more run.
    let resync = Arc::new(Notify::new());

    let (e, c, r) = (edge.clone(), client.clone(), resync.clone());
    tokio::spawn(async move {
        // Commands already waiting are taken as a batch: deliveries only
        // queue, then every touched connection is written once, so under
        // load frames for one connection share a write.
        let mut dirty = Dirty::default();
        while let Some(msg) = inbox.next().await {
            handle_message(&e, &c, &r, msg, &mut dirty).await;
            for _ in 1..INBOX_BATCH {
                match inbox.next().now_or_never() {
                    Some(Some(msg)) => handle_message(&e, &c, &r, msg, &mut dirty).await,
                    _ => break,
                }
            }
            dirty.flush();
        }
    });

    let (e, c, stop) = (edge.clone(), client.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(e.config().node_heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let hb = Heartbeat {
                node: e.node_id().to_owned(),
                conns: e.connections() as u64,
            };
            if let Ok(bytes) = envelope::encode(&hb) {
                let _ = c.publish(subject::ROUTER_HEARTBEAT, bytes).await;
            }
        }
    });

    let wake = resync.clone();
    let node = edge.node_id().to_owned();
    tokio::spawn(async move {
        link.mark_unchanged();
        while link.changed().await.is_ok() {
            let state = link.borrow_and_update().1;
            if state == LinkState::Up {
                tracing::info!(node_id = %node, "bus reconnected, resyncing presence");
                wake.notify_one();
            }
        }
    });
    tokio::spawn(run_resyncs(edge, resync, shutdown));
    Ok(())
}

/// Most inbox messages handled before the queued frames are written.
const INBOX_BATCH: usize = 256;

async fn handle_message(edge: &Edge, client: &Client, resync: &Notify, msg: async_nats::Message, dirty: &mut Dirty) {
    let cmd: NodeCommand = match envelope::decode(&msg.payload) {
        Ok(cmd) => cmd,
        Err(err) => {
            tracing::warn!(error = %err, "undecodable node command dropped");
            return;
        }
    };
    let reply = match cmd {
        NodeCommand::Resync => {
            resync.notify_one();
            return;
        }
        NodeCommand::Holds { conns } => {
            let registry = &edge.inner.registry;
            let held = conns.into_iter().filter(|&id| registry.get(id).is_some()).collect();
            envelope::encode(&HeldReply { held })
        }
        cmd => match edge.handle_command_deferred(cmd, dirty) {
            Some(reply) => envelope::encode(&reply),
            None => return,
        },
    };
    if let (Some(to), Ok(bytes)) = (msg.reply, reply) {
        let _ = client.publish(to, bytes).await;
    }
}

/// Attempts per resync chunk before the resync is given up (the next
/// reconnect or a router's request starts another).
const RESYNC_ATTEMPTS: u32 = 10;

/// Runs one resync per wake-up until `shutdown`.
async fn run_resyncs(edge: Edge, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
        }
        resync(&edge).await;
    }
}

/// Re-asserts every welcomed local connection's presence, in chunks that
/// together cover every connection id, retrying while no router answers.
///
/// A snapshot can be late: issue 9 saw a retry (the first attempt found no
/// router yet after a NATS restart) re-assert a client that had left in
/// the meantime, after its disconnect was applied — a ghost entry for good.
/// So each attempt is rebuilt from the registry right before it is sent
/// (a connection gone by then is not asserted, and its entry, if any, is
/// reconciled away), and the router confirms with us (`Holds`) what it
/// (re)creates or removes, which closes the window between sending and
/// applying (see the router's `core::resync`).
async fn resync(edge: &Edge) {
    let node = edge.node_id();
    let mut ids = Vec::new();
    edge.inner.registry.for_each(|c| {
        if c.is_active() {
            ids.push(c.id);
        }
    });
    ids.sort_unstable();
    for (covers, ids) in plan(&ids, RESYNC_CHUNK) {
        for attempt in 0..RESYNC_ATTEMPTS {
            let msg = Resync {
                node: node.to_owned(),
                conns: held(edge, ids),
                covers: Some(covers),
            };
            match edge.inner.router.resync(msg).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(node_id = %node, error = %e, attempt, "resync failed, retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// The connections of `ids` that are still here and welcomed, as presence.
fn held(edge: &Edge, ids: &[u64]) -> Vec<ConnInfo> {
    let registry = &edge.inner.registry;
    ids.iter()
        .filter_map(|&id| registry.get(id))
        .filter(|c| c.is_active())
        .map(|c| c.info(edge.node_id()))
        .collect()
}

/// Splits sorted connection ids into chunks of at most `size`, each with
/// the id range it speaks for; the ranges are contiguous and cover every
/// id (no connection at all: one empty chunk for everything, which clears
/// whatever the router still holds of the node).
fn plan(ids: &[u64], size: usize) -> Vec<(ConnRange, &[u64])> {
    if ids.is_empty() {
        return vec![(ConnRange::ALL, ids)];
    }
    let chunks: Vec<&[u64]> = ids.chunks(size.max(1)).collect();
    let mut from = 0;
    let mut out = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        let to = chunks.get(i + 1).map_or(u64::MAX, |next| next[0]);
        out.push((ConnRange { from, to }, *chunk));
        from = to;
    }
    out
}

/// Wraps the shared edge in a [`RouterLink`]-using `Arc` (helper for tests).
pub fn router_link(client: Client) -> Arc<dyn RouterLink> {
    Arc::new(NatsRouter::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_chunks_cover_every_id_contiguously() {
        assert_eq!(plan(&[], 2), vec![(ConnRange::ALL, &[][..])]);
        let ids = [3, 5, 8, 13, 21];
        let p = plan(&ids, 2);
        let ranges: Vec<(u64, u64)> = p.iter().map(|(r, _)| (r.from, r.to)).collect();
        assert_eq!(ranges, vec![(0, 8), (8, 21), (21, u64::MAX)]);
        for (r, chunk) in &p {
            assert!(chunk.iter().all(|&id| r.contains(id)));
        }
        let ids: Vec<u64> = (1..=1000).collect();
        let p = plan(&ids, RESYNC_CHUNK);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].0.from, p[1].0.to), (0, u64::MAX));
        assert_eq!(p[0].0.to, p[1].0.from);
    }
}
