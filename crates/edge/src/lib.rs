//! Switchboard edge: terminates client WebSockets and fans deliveries out
//! to local sockets. It asks the router for everything that needs cluster
//! knowledge and never talks to another edge.
//!
//! Architecture: `protocol` ← `runtime` ← **`edge`**, `router` ← `switchboard`.
//!
//! - [`config`]: `[edge]` settings.
//! - [`handshake`]: query checks before the upgrade.
//! - [`registry`]: local connections by id, by (bizCode, group), by bizCode.
//! - [`outbox`]: each connection's bounded send queue.
//! - `session`: one task per connection, reader + coalescing writer.
//! - [`link`]: the edge → router seam ([`link::RouterLink`]).
//! - [`nats`]: the seam over NATS, the node inbox, heartbeats, resync.

pub mod config;
pub mod handshake;
pub mod link;
pub mod nats;
pub mod outbox;
pub mod registry;
mod session;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use switchboard_protocol::envelope::{CommandReply, Disconnect, NodeCommand};
use switchboard_protocol::frame;
use switchboard_protocol::{CloseCode, ErrorCode};
use switchboard_runtime::http::{self as h, Handler, Response, ResponseFuture};
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::ops::{self, Health};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::EdgeConfig;
pub use link::{LinkError, RouterLink};
use registry::{Conn, Registry};

/// A node id unique per process incarnation: `<name>-<8 hex>`.
pub fn new_node_id(name: &str) -> String {
    let name = if name.is_empty() { "edge" } else { name };
    format!("{name}-{:08x}", rand::random::<u32>())
}

/// A server-assigned clientId: 16 lowercase hex chars.
pub fn new_client_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The edge: cheap to clone, shared by the HTTP server, the node inbox and
/// the sessions.
#[derive(Clone)]
pub struct Edge {
    pub(crate) inner: Arc<EdgeInner>,
}

pub(crate) struct EdgeInner {
    pub(crate) config: EdgeConfig,
    pub(crate) node_id: String,
    pub(crate) registry: Registry,
    pub(crate) router: Arc<dyn RouterLink>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
    /// Sessions and disconnect tasks, awaited on drain.
    pub(crate) tasks: TaskTracker,
    next_conn: AtomicU64,
    /// Coarse seconds since start, advanced by the sweeper (idle timeouts
    /// without a timer per connection).
    clock: AtomicU64,
    started: Instant,
}

impl EdgeInner {
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn clock(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// Queues a frame of `mode` for one connection.
    pub(crate) fn push(&self, conn: &Conn, mode: u16, frame: Bytes) {
        self.metrics.frames_sent.get(mode).inc();
        if conn.outbox.push_text(frame, self.config.send_queue_bytes) == outbox::Pushed::Overflow {
            self.slow_consumer(conn);
        }
    }

    pub(crate) fn slow_consumer(&self, conn: &Conn) {
        self.metrics.slow_consumer_closes.inc();
        tracing::info!(conn_id = conn.id, biz = %conn.biz, client_id = %conn.client, "send queue overflowed, closing slow consumer (4008)");
    }

    /// Queues a mode-2 reply.
    pub(crate) fn reply(
        &self,
        conn: &Conn,
        msg_id: Option<&str>,
        code: ErrorCode,
        msg: &str,
        recipients: Option<u32>,
    ) {
        let bytes = frame::reply(msg_id, code, msg, recipients);
        self.push(conn, frame::MODE_REPLY, Bytes::from(bytes));
    }

    /// Removes presence in the background, retrying while no router answers.
    pub(crate) fn spawn_disconnect(&self, d: Disconnect) {
        let router = self.router.clone();
        self.tasks.spawn(async move {
            for attempt in 0..5u32 {
                match router.disconnect(d.clone()).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(conn_id = d.conn, biz = %d.biz, client_id = %d.client, error = %e, attempt, "disconnect not acknowledged, retrying");
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                }
            }
        });
    }
}

impl Edge {
    /// Creates an edge with node id `node_id` that asks `router`.
    pub fn new(
        config: EdgeConfig,
        node_id: String,
        router: Arc<dyn RouterLink>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            inner: Arc::new(EdgeInner {
                config,
                node_id,
                registry: Registry::default(),
                router,
                metrics,
                health,
                tasks: TaskTracker::new(),
                next_conn: AtomicU64::new(1),
                clock: AtomicU64::new(0),
                started: Instant::now(),
            }),
        }
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

    /// Applies a router command. Bind/Unbind/Close answer whether the
    /// connection was found; Deliver answers nothing.
    pub fn handle_command(&self, cmd: NodeCommand) -> Option<CommandReply> {
        let inner = &self.inner;
        match cmd {
            NodeCommand::Deliver { mode, to, frame } => {
                let d = inner
                    .registry
                    .deliver(&to, &frame, inner.config.send_queue_bytes);
                inner.metrics.deliveries.inc_by(d.queued);
                inner.metrics.slow_consumer_closes.inc_by(d.overflowed);
                inner.metrics.frames_sent.get(mode).inc_by(d.queued);
                None
            }
            NodeCommand::Close { conn, code } => {
                let found = inner
                    .registry
                    .get(conn)
                    .map(|c| c.outbox.close(code))
                    .is_some();
                Some(CommandReply { found })
            }
            NodeCommand::Bind { conn, group } => Some(CommandReply {
                found: inner.registry.bind(conn, &group),
            }),
            NodeCommand::Unbind { conn, group } => Some(CommandReply {
                found: inner.registry.unbind(conn, &group),
            }),
            // Resync needs the bus; the NATS inbox handles it.
            NodeCommand::Resync => None,
        }
    }

    /// Starts the once-a-second sweeper: advances the coarse clock and
    /// closes connections idle for longer than the idle timeout (1001).
    pub fn spawn_sweeper(&self, shutdown: CancellationToken) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let idle = inner.config.idle_timeout().as_secs().max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let now = inner.started.elapsed().as_secs();
                inner.clock.store(now, Ordering::Relaxed);
                for c in inner.registry.all() {
                    if now.saturating_sub(c.last_seen()) >= idle
                        && c.outbox.close(CloseCode::GoingAway.as_u16())
                    {
                        tracing::debug!(conn_id = c.id, biz = %c.biz, client_id = %c.client, "idle timeout");
                    }
                }
            }
        });
    }

    /// Drains: stops taking upgrades, closes every connection with 1012
    /// spread over `window`, and waits (up to `window` + close grace) for the
    /// sessions to end and their presence to be removed.
    pub async fn drain(&self, window: Duration) {
        let inner = &self.inner;
        inner.health.set_draining();
        let conns = inner.registry.all();
        let n = conns.len().max(1);
        let batches = 10usize.min(n);
        let per_batch = n.div_ceil(batches);
        let pause = window / u32::try_from(batches).unwrap_or(1);
        tracing::info!(node_id = %inner.node_id, connections = conns.len(), "draining");
        for (i, chunk) in conns.chunks(per_batch).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for c in chunk {
                c.outbox.close(CloseCode::Draining.as_u16());
            }
        }
        inner.tasks.close();
        let _ =
            tokio::time::timeout(window + inner.config.close_grace * 2, inner.tasks.wait()).await;
    }

    fn upgrade(&self, mut req: Request<Incoming>) -> Response {
        let inner = &self.inner;
        let refuse = |status, code: ErrorCode, msg: &str| {
            inner.metrics.handshake_refusals.inc();
            h::error(status, code.as_u16(), msg)
        };
        if inner.health.draining() {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal,
                "node draining, reconnect elsewhere",
            );
        }
        if !inner.health.bus_up() {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal,
                "bus unavailable",
            );
        }
        let hs = match handshake::parse(req.uri().query().unwrap_or(""), inner.config.max_groups) {
            Ok(hs) => hs,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidFrame,
                    &e.to_string(),
                )
            }
        };
        if !fastwebsockets::upgrade::is_upgrade_request(&req) {
            return refuse(
                StatusCode::UPGRADE_REQUIRED,
                ErrorCode::InvalidFrame,
                "expected a WebSocket upgrade",
            );
        }
        let (res, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
            Ok(x) => x,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidFrame,
                    &e.to_string(),
                )
            }
        };
        let client = hs.client.unwrap_or_else(new_client_id);
        let edge = inner.clone();
        inner.tasks.spawn(async move {
            match fut.await {
                Ok(ws) => session::run(edge, ws.into_inner(), hs.biz, client, hs.groups).await,
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
        let (parts, _) = res.into_parts();
        http::Response::from_parts(parts, Full::new(Bytes::new()))
    }
}

impl Handler for Edge {
    fn call(&self, req: Request<Incoming>, _peer: SocketAddr) -> ResponseFuture {
        let path = req.uri().path();
        let res = if path == "/ws" || path == "/api/websocket/ws" {
            if req.method() == Method::GET {
                self.upgrade(req)
            } else {
                h::error(StatusCode::METHOD_NOT_ALLOWED, 405, "method not allowed")
            }
        } else if let Some(res) =
            ops::handle(req.method(), path, &self.inner.health, &self.inner.metrics)
        {
            res
        } else {
            h::error(StatusCode::NOT_FOUND, 404, "not found")
        };
        Box::pin(std::future::ready(res))
    }
}
