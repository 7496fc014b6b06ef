//! The router's NATS side: the `sb.router.*` subjects (queue group
//! `sb-router`, so routers share work), node heartbeats (every router), and
//! [`NatsEdges`], the router → edge seam over node inbox subjects.
//!
//! An adapter at the edge of the crate: it decodes a request, calls the
//! core, and answers with the wire reply [`crate::wire`] makes of the
//! result. Sends arrive only in batches (`sb.router.route_batch`; a single
//! send is a batch of one).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use switchboard_protocol::envelope::{
    self, BizQuery, CommandReply, Heartbeat, HeldReply, LimitsQuery, LimitsReply, NodeCommand, RouteBatch,
    RouteBatchReply,
};
use switchboard_protocol::{subject, ErrorCode};
use switchboard_runtime::nats::LinkState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod owners;

pub use owners::{serve_partitions, NatsOwners};

use crate::core::Router;
use crate::link::{EdgeError, EdgeLink};
use crate::settle::Settle;
use crate::wire;

/// [`EdgeLink`] over NATS: publishes to `sb.node.<b64 node id>`.
///
/// For a window after this router's bus link comes back, a command to a
/// node waits until the node's inbox answers again ([`crate::settle`]):
/// core NATS would drop it while the node is still reconnecting.
#[derive(Debug, Clone)]
pub struct NatsEdges {
    client: Client,
    settle: Arc<Settle>,
    /// Test hook (`SWITCHBOARD_TEST_DROP_LOGGED_DELIVERIES=<n>`): every
    /// n-th numbered delivery is dropped instead of published, to prove
    /// the loss is detected and healed (docs/recovery.md, seam 3). 0: off.
    drop_every: u64,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// The test hook's variable (see [`NatsEdges`]).
const DROP_HOOK: &str = "SWITCHBOARD_TEST_DROP_LOGGED_DELIVERIES";

impl NatsEdges {
    /// Wraps a connected client. Every time `link` turns
    /// [`LinkState::Up`] again, commands to each node wait for up to
    /// `settle` until that node answers (see [`crate::settle`]); pass the
    /// longest reconnect backoff of the processes plus a margin.
    pub fn new(client: Client, mut link: watch::Receiver<(u64, LinkState)>, settle: Duration) -> Self {
        let gate = Arc::new(Settle::default());
        let window = gate.clone();
        tokio::spawn(async move {
            let mut was_up = link.borrow_and_update().1 == LinkState::Up;
            while link.changed().await.is_ok() {
                let up = link.borrow_and_update().1 == LinkState::Up;
                if up && !was_up {
                    window.open(settle);
                }
                was_up = up;
            }
        });
        let drop_every = std::env::var(DROP_HOOK).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        if drop_every > 0 {
            tracing::warn!("test hook {DROP_HOOK}: every {drop_every}th numbered delivery is dropped");
        }
        Self {
            client,
            settle: gate,
            drop_every,
            dropped: Arc::default(),
        }
    }

    /// Whether the test hook drops `cmd`.
    fn hook_drops(&self, cmd: &NodeCommand) -> bool {
        if self.drop_every == 0 {
            return false;
        }
        let numbered = matches!(cmd, NodeCommand::Deliver { order: Some(o), .. } if !o.tick);
        numbered
            && (self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1).is_multiple_of(self.drop_every)
    }

    /// Asks `node` with `cmd` and decodes its answer.
    async fn ask<T: DeserializeOwned>(&self, node: &str, cmd: &NodeCommand) -> Result<T, EdgeError> {
        let payload = envelope::encode(cmd).map_err(|e| EdgeError(e.to_string()))?;
        let msg = self
            .client
            .request(subject::node_inbox(node), payload)
            .await
            .map_err(|e| EdgeError(e.to_string()))?;
        envelope::decode(&msg.payload).map_err(|e| EdgeError(e.to_string()))
    }

    /// Whether `node`'s inbox answers (an empty `Holds` question).
    async fn ping(&self, node: &str) -> bool {
        let cmd = NodeCommand::Holds { conns: Vec::new() };
        self.ask::<HeldReply>(node, &cmd).await.is_ok()
    }
}

/// How long [`EdgeLink::round_trip`] waits for the server's answer.
const ROUND_TRIP_PATIENCE: Duration = Duration::from_secs(1);

#[async_trait]
impl EdgeLink for NatsEdges {
    /// A message to a fresh subject of this router's own inbox prefix
    /// (which it may publish and subscribe to), back through the server:
    /// nothing else can answer or swallow it.
    async fn round_trip(&self) -> bool {
        let inbox = self.client.new_inbox();
        let probe = async {
            let mut sub = self.client.subscribe(inbox.clone()).await.ok()?;
            self.client.publish(inbox, Bytes::new()).await.ok()?;
            sub.next().await
        };
        matches!(tokio::time::timeout(ROUND_TRIP_PATIENCE, probe).await, Ok(Some(_)))
    }

    async fn send(&self, node: &str, cmd: NodeCommand) -> Result<(), EdgeError> {
        if self.hook_drops(&cmd) {
            return Ok(());
        }
        let payload = envelope::encode(&cmd).map_err(|e| EdgeError(e.to_string()))?;
        // The turn is held across the publish, which only buffers: the
        // node gets its commands in order.
        let _turn = self.settle.turn(node, || self.ping(node)).await;
        self.client
            .publish(subject::node_inbox(node), payload)
            .await
            .map_err(|e| EdgeError(e.to_string()))
    }

    async fn request(&self, node: &str, cmd: NodeCommand) -> Result<CommandReply, EdgeError> {
        // Waits its turn, but does not block the node's line for its answer.
        drop(self.settle.turn(node, || self.ping(node)).await);
        self.ask(node, &cmd).await
    }

    async fn holds(&self, node: &str, conns: Vec<u64>) -> Result<Vec<u64>, EdgeError> {
        drop(self.settle.turn(node, || self.ping(node)).await);
        let mut held = Vec::new();
        for chunk in conns.chunks(HOLDS_CHUNK) {
            let cmd = NodeCommand::Holds { conns: chunk.to_vec() };
            let reply: HeldReply = self.ask(node, &cmd).await?;
            held.extend(reply.held);
        }
        Ok(held)
    }
}

/// Most connection ids in one [`NodeCommand::Holds`] question (≈ 150 KB,
/// well under NATS' 1 MiB payload limit).
const HOLDS_CHUNK: usize = 16 * 1024;

/// Subscribes the router subjects and serves them until `shutdown`, then
/// lets in-flight requests finish (tracked by `tasks`).
///
/// # Errors
/// If a subscription cannot be made.
pub async fn serve(
    router: Router,
    client: Client,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), async_nats::Error> {
    let q = subject::ROUTER_QUEUE;
    let sub = |subject: &'static str| client.queue_subscribe(subject, q.into());
    let connect = sub(subject::ROUTER_CONNECT).await?;
    let disconnect = sub(subject::ROUTER_DISCONNECT).await?;
    let route_batch = sub(subject::ROUTER_ROUTE_BATCH).await?;
    let resync = sub(subject::ROUTER_RESYNC).await?;
    let check_biz = sub(subject::ROUTER_CHECK_BIZ).await?;
    let drain = sub(subject::ROUTER_DRAIN).await?;
    let biz_limits = sub(subject::ROUTER_BIZ_LIMITS).await?;
    let mut heartbeat = client.subscribe(subject::ROUTER_HEARTBEAT).await?;
    // Every router hears every ack: the one waiting for it may be any.
    let mut acks = client.subscribe(subject::ROUTER_ACK).await?;
    client.flush().await?;

    let ctx = (&client, &tasks, &shutdown, &router);
    spawn_handler(connect, ctx, |r, m| async move {
        wire::connected_reply(&r.connect(m).await)
    });
    spawn_handler(disconnect, ctx, |r, m| async move {
        wire::connect_reply(&r.disconnect(m).await)
    });
    spawn_handler(route_batch, ctx, |r, b: RouteBatch| async move {
        let replies = r.route_sends(&b.routes).await.iter().map(wire::route_reply).collect();
        RouteBatchReply { replies }
    });
    spawn_handler(resync, ctx, |r, m| async move {
        wire::resync_reply(&r.resync_counted(m).await)
    });
    spawn_handler(drain, ctx, |r, m| async move { wire::connect_reply(&r.drain(m).await) });
    spawn_handler(check_biz, ctx, |r, q: BizQuery| async move {
        wire::registered_reply(&r.is_registered(&q.biz).await)
    });
    spawn_handler(biz_limits, ctx, |r, q: LimitsQuery| async move {
        if q.bizs.len() > envelope::MAX_LIMITS_QUERY {
            return LimitsReply {
                code: ErrorCode::InvalidFrame.as_u16(),
                limits: Vec::new(),
            };
        }
        wire::limits_reply(r.biz_limits(&q.bizs).await)
    });

    let (stop, ack_router) = (shutdown.clone(), router.clone());
    tokio::spawn(async move {
        while let Some(msg) = next_or_stop(&mut acks, &stop).await {
            match envelope::decode::<envelope::Ack>(&msg.payload) {
                Ok(a) => ack_router.ack(&a),
                Err(e) => tracing::debug!(error = %e, "bad ack ignored"),
            }
        }
    });
    let (stop, client) = (shutdown.clone(), client.clone());
    tokio::spawn(async move {
        while let Some(msg) = next_or_stop(&mut heartbeat, &stop).await {
            match envelope::decode::<Heartbeat>(&msg.payload) {
                Ok(hb) => {
                    // Heard: the edge learns from the answer that it was
                    // not cut off long enough to be purged (edges from
                    // before this publish without asking).
                    if let Some(to) = msg.reply.filter(|r| subject::is_edge_reply(r)) {
                        let _ = client.publish(to, Bytes::new()).await;
                    }
                    router.heartbeat(hb).await;
                }
                Err(e) => tracing::debug!(error = %e, "bad heartbeat ignored"),
            }
        }
    });
    Ok(())
}

/// The next message of `sub`; `None` once `stop` is cancelled or the
/// subscription ended.
///
/// # Cancel safety
/// Cancel safe: a subscription's `next` is.
async fn next_or_stop(sub: &mut async_nats::Subscriber, stop: &CancellationToken) -> Option<Message> {
    tokio::select! {
        () = stop.cancelled() => None,
        m = sub.next() => m,
    }
}

fn spawn_handler<Q, A, F, Fut>(
    mut sub: async_nats::Subscriber,
    (client, tasks, shutdown, router): (&Client, &TaskTracker, &CancellationToken, &Router),
    handle: F,
) where
    Q: DeserializeOwned + Send + 'static,
    A: Serialize + Send + 'static,
    F: Fn(Router, Q) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = A> + Send + 'static,
{
    let (client, tasks2, stop, router) = (client.clone(), tasks.clone(), shutdown.clone(), router.clone());
    tasks.spawn(async move {
        while let Some(msg) = next_or_stop(&mut sub, &stop).await {
            let q: Q = match envelope::decode(&msg.payload) {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "undecodable request dropped");
                    continue;
                }
            };
            let (client, router) = (client.clone(), router.clone());
            tasks2.spawn(async move {
                let answer = handle(router, q).await;
                // Only into an edge's inbox: NATS does not check a reply
                // subject against the requester's permissions, so any other
                // reply subject would let an edge write where only a router
                // may (a presence key, another edge's inbox).
                let reply = msg.reply.filter(|r| subject::is_edge_reply(r));
                if let (Some(reply), Ok(bytes)) = (reply, envelope::encode(&answer)) {
                    if let Err(e) = client.publish(reply, bytes).await {
                        tracing::warn!(error = %e, "reply failed");
                    }
                }
            });
        }
        let _ = sub.unsubscribe().await;
    });
}
