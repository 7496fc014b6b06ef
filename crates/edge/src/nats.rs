//! The edge's NATS side: the router client ([`NatsRouter`]), the node inbox
//! subscriber (router commands, `Holds` questions), the liveness heartbeat
//! and the resync after a reconnect.
//!
//! Every task started here runs on one [`Tasks`], which the binary stops
//! and waits for at shutdown, after the edge drained and before the NATS
//! client drains.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use switchboard_protocol::envelope::{
    self, Ack, BizLimits, BizQuery, ConnInfo, ConnectReply, ConnectedReply, Disconnect, Heartbeat, LimitsQuery,
    LimitsReply, NodeCommand, Resync, Route, RouteBatch, RouteBatchReply, RouteReply,
};
use switchboard_protocol::{subject, ErrorCode};
use switchboard_runtime::nats::LinkState;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::edge::Edge;
use crate::heard::SUSPECT_AFTER_BEATS;
use crate::link::{LinkError, RouterLink};
use crate::registry::Dirty;
use crate::resync;

/// Most sends in one route batch.
pub const ROUTE_BATCH: usize = 128;
/// Most route batches of one edge awaiting their answer.
pub const ROUTES_IN_FLIGHT: usize = 4;
/// Most content bytes in one route batch (NATS' default payload limit is
/// 1 MiB; one send's content is at most `edge.max_frame_bytes`).
const ROUTE_BATCH_BYTES: usize = 256 * 1024;
/// Most inbox messages handled before the queued frames are written.
const INBOX_BATCH: usize = 256;

/// The edge's NATS background tasks: the route batcher and its requests,
/// the node inbox, the heartbeat, the reconnect watcher and the resyncs.
///
/// Cheap to clone (clones share the tasks). Tasks run until
/// [`shutdown`](Self::shutdown); the heartbeat and the resyncs stop earlier,
/// at the `shutdown` token given to [`attach`].
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(task);
    }

    /// Stops the tasks (the inbox stops taking commands, the batcher new
    /// sends) and waits, at most `grace`, for them to end: call once the
    /// edge has drained, before the NATS client drains.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                left = self.tracker.len(),
                "NATS tasks still running after the grace period"
            );
        }
    }
}

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
    /// Wraps a connected client and starts the route batcher on `tasks`
    /// (call within a Tokio runtime).
    pub fn new(client: Client, tasks: &Tasks) -> Self {
        let (routes, rx) = mpsc::unbounded_channel();
        tasks.spawn(batch_routes(client.clone(), rx, tasks.clone()));
        Self { client, routes }
    }

    async fn request<Q: Serialize, A: DeserializeOwned>(&self, subject: &'static str, q: &Q) -> Result<A, LinkError> {
        let payload = envelope::encode(q).map_err(|e| LinkError::BadAnswer(e.to_string()))?;
        let msg = self
            .client
            .request(subject, payload)
            .await
            .map_err(|e| LinkError::Unavailable(e.to_string()))?;
        envelope::decode(&msg.payload).map_err(|e| LinkError::BadAnswer(e.to_string()))
    }
}

/// Takes queued sends in batches (by count and bytes) and asks a router
/// for each batch in its own task. At most [`ROUTES_IN_FLIGHT`] batches
/// are outstanding: while they are, new sends queue up and go together in
/// the next batch, so batches grow with the load (at low load a batch is
/// one send and nothing waits). Ends at [`Tasks::shutdown`].
async fn batch_routes(client: Client, mut rx: mpsc::UnboundedReceiver<RouteWaiter>, tasks: Tasks) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ROUTES_IN_FLIGHT));
    let mut queued = Vec::with_capacity(ROUTE_BATCH);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // `recv_many` is cancel safe: nothing is taken from the queue
        // unless it returns. Biased: while sends are waiting, the stop
        // token is not even polled (no cost on the send path).
        let received = tokio::select! {
            biased;
            n = rx.recv_many(&mut queued, ROUTE_BATCH) => n,
            () = tasks.stop.cancelled() => return,
        };
        if received == 0 {
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
            tasks.spawn(async move {
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

/// A removal answered 1500 (retry: the router's store failed) is an error
/// the caller retries; any other answer is final.
fn retry_on_internal(code: u16, what: &str) -> Result<(), LinkError> {
    if code == ErrorCode::Internal.as_u16() {
        return Err(LinkError::Unavailable(format!("{what} answered {code}")));
    }
    Ok(())
}

#[async_trait]
impl RouterLink for NatsRouter {
    async fn connect(&self, info: ConnInfo) -> Result<ConnectedReply, LinkError> {
        self.request(subject::ROUTER_CONNECT, &info).await
    }
    async fn ack(&self, a: Ack) -> Result<(), LinkError> {
        let payload = envelope::encode(&a).map_err(|e| LinkError::BadAnswer(e.to_string()))?;
        self.client
            .publish(subject::ROUTER_ACK, payload)
            .await
            .map_err(|e| LinkError::Unavailable(e.to_string()))
    }
    async fn disconnect(&self, d: Disconnect) -> Result<(), LinkError> {
        // 1500: the router's store failed (e.g. no JetStream quorum) and the
        // entry is still there: try again, or it stays a ghost until a
        // reconciliation finds it.
        let a: ConnectReply = self.request(subject::ROUTER_DISCONNECT, &d).await?;
        retry_on_internal(a.code, "disconnect")
    }
    async fn route(&self, r: Route) -> Result<RouteReply, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.routes
            .send((r, tx))
            .map_err(|_| LinkError::Unavailable("route batcher stopped".into()))?;
        rx.await
            .map_err(|_| LinkError::Unavailable("route batcher stopped".into()))?
    }
    async fn resync(&self, r: Resync) -> Result<u32, LinkError> {
        // 1500: the router could not apply it all (its store was not back
        // yet, or it could not confirm with us): try again.
        let a: ConnectReply = self.request(subject::ROUTER_RESYNC, &r).await?;
        match ErrorCode::from_u16(a.code) {
            Some(ErrorCode::Ok) => Ok(a.recreated),
            _ => Err(LinkError::Unavailable(format!("resync answered {}", a.code))),
        }
    }
    async fn drain(&self, d: Resync) -> Result<(), LinkError> {
        let a: ConnectReply = self.request(subject::ROUTER_DRAIN, &d).await?;
        retry_on_internal(a.code, "drain")
    }
    async fn is_registered(&self, biz: &str) -> Result<bool, LinkError> {
        let r: ConnectReply = self
            .request(subject::ROUTER_CHECK_BIZ, &BizQuery { biz: biz.to_owned() })
            .await?;
        match ErrorCode::from_u16(r.code) {
            Some(ErrorCode::Ok) => Ok(true),
            Some(ErrorCode::UnknownBiz) => Ok(false),
            _ => Err(LinkError::Unavailable(format!("registry answered {}", r.code))),
        }
    }
    async fn biz_limits(&self, bizs: Vec<String>) -> Result<Vec<BizLimits>, LinkError> {
        let r: LimitsReply = self.request(subject::ROUTER_BIZ_LIMITS, &LimitsQuery { bizs }).await?;
        match ErrorCode::from_u16(r.code) {
            Some(ErrorCode::Ok) => Ok(r.limits),
            _ => Err(LinkError::Unavailable(format!("limits answered {}", r.code))),
        }
    }
}

/// Subscribes the node inbox and starts, on `tasks`, the inbox, heartbeat
/// and resync tasks. Returns once the inbox subscription is registered
/// with the server. The heartbeat and the resyncs stop at `shutdown`; the
/// inbox runs until [`Tasks::shutdown`].
///
/// # Errors
/// If the subscription cannot be made.
pub async fn attach(
    edge: Edge,
    client: Client,
    mut link: watch::Receiver<(u64, LinkState)>,
    shutdown: CancellationToken,
    tasks: &Tasks,
) -> Result<(), async_nats::Error> {
    let node = edge.node_id().to_owned();
    let mut inbox = client.subscribe(subject::node_inbox(&node)).await?;
    client.flush().await?;
    // One resync at a time; triggers while it runs make one more run.
    let resync = Arc::new(resync::Trigger::default());

    let (e, c, r, stop) = (edge.clone(), client.clone(), resync.clone(), tasks.stop.clone());
    tasks.spawn(async move {
        // Commands already waiting are taken as a batch: deliveries only
        // queue, then every touched connection is written once, so under
        // load frames for one connection share a write.
        let mut dirty = Dirty::default();
        loop {
            // A subscriber's `next` is cancel safe (a channel receive).
            // Biased: while commands are waiting, the stop token is not
            // even polled (no cost on the delivery path).
            let msg = tokio::select! {
                biased;
                msg = inbox.next() => msg,
                () = stop.cancelled() => break,
            };
            let Some(msg) = msg else { break };
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

    // The heartbeat is a request every router answers: the answers tell
    // the node whether routers may have purged it (`crate::heard`).
    let (e, c, r, stop) = (edge.clone(), client.clone(), resync.clone(), shutdown.clone());
    tasks.spawn(async move {
        let beat = e.config().node_heartbeat;
        let mut tick = tokio::time::interval(beat);
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
            let Ok(bytes) = envelope::encode(&hb) else { continue };
            // Answered on its own task: a silent bus never delays the
            // next heartbeat.
            let (e, c, r) = (e.clone(), c.clone(), r.clone());
            tokio::spawn(async move {
                let sent = std::time::Instant::now();
                let asked = c.request(subject::ROUTER_HEARTBEAT, bytes);
                if let Ok(Ok(_)) = tokio::time::timeout(beat * SUSPECT_AFTER_BEATS, asked).await {
                    if e.inner().heard().answered(sent) {
                        tracing::warn!(
                            node_id = %e.node_id(),
                            "the routers had not heard this node for longer than they may wait: holding its connections and resyncing"
                        );
                        r.resync();
                    }
                }
            });
        }
    });

    let (wake, stop) = (resync.clone(), tasks.stop.clone());
    tasks.spawn(async move {
        link.mark_unchanged();
        loop {
            // `changed` is cancel safe.
            let changed = tokio::select! {
                () = stop.cancelled() => break,
                changed = link.changed() => changed,
            };
            if changed.is_err() {
                break;
            }
            let state = link.borrow_and_update().1;
            if state == LinkState::Up {
                tracing::info!(node_id = %node, "bus reconnected, resyncing presence");
                wake.resync();
            }
        }
    });
    tasks.spawn(resync::run_resyncs(edge, resync, shutdown));
    Ok(())
}

/// Decodes one inbox message, applies it and answers it if asked to.
async fn handle_message(
    edge: &Edge,
    client: &Client,
    resync: &resync::Trigger,
    msg: async_nats::Message,
    dirty: &mut Dirty,
) {
    let cmd: NodeCommand = match envelope::decode(&msg.payload) {
        Ok(cmd) => cmd,
        Err(err) => {
            tracing::warn!(error = %err, "undecodable node command dropped");
            return;
        }
    };
    let reply = match cmd {
        NodeCommand::Resync => {
            // Purged while alive: what was sent meanwhile was stored, not
            // delivered. The resync re-asserts presence first (a client
            // that connected elsewhere meanwhile gets 4009 here), then
            // connections with history heal from the log.
            resync.resync_and_heal();
            return;
        }
        NodeCommand::Holds { conns } => envelope::encode(&edge.holds(conns)),
        cmd => match edge.handle_command_deferred(cmd, dirty) {
            Some(reply) => envelope::encode(&reply),
            None => return,
        },
    };
    // Only into a router's inbox (see subject::is_router_reply).
    let to = msg.reply.filter(|r| subject::is_router_reply(r));
    if let (Some(to), Ok(bytes)) = (to, reply) {
        let _ = client.publish(to, bytes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_answered_1500_is_retried() {
        assert!(retry_on_internal(ErrorCode::Internal.as_u16(), "disconnect").is_err());
        assert!(retry_on_internal(ErrorCode::Ok.as_u16(), "disconnect").is_ok());
    }
}
