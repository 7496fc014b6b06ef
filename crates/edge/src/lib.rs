//! Switchboard edge: terminates client WebSockets and fans deliveries out
//! to local sockets. It asks the router for everything that needs cluster
//! knowledge and never talks to another edge.
//!
//! Architecture: `protocol` ← `runtime` ← **`edge`**, `router` ← `switchboard`.
//!
//! - [`config`]: `[edge]` settings.
//! - [`handshake`]: query checks before the upgrade.
//! - [`auth`]: connection JWTs and the `Origin` allow-list.
//! - `address`: the client's address (trusted proxies) and the cap on
//!   connections per address.
//! - [`registry`]: local connections by id, by (bizCode, group), by bizCode.
//! - [`outbox`]: each connection's bounded send queue and direct writes.
//! - `session`: one task per connection: the reader, and a writer for what
//!   a direct write left (see [`outbox`]).
//! - `wsread`: a lean RFC 6455 frame reader (small buffer while idle).
//! - `message`: frames → messages (fragmentation, UTF-8, close frames).
//! - [`link`]: the edge → router seam ([`link::RouterLink`]).
//! - [`nats`]: the seam over NATS, the node inbox, heartbeats, resync.
//! - `fuzzing`: entry points of the fuzz targets (`fuzz/`), not API.

mod address;
pub mod auth;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod link;
mod message;
pub mod nats;
pub mod outbox;
pub mod registry;
mod session;
mod wsread;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use switchboard_protocol::envelope::{CommandReply, Disconnect, NodeCommand, Resync};
use switchboard_protocol::frame;
use switchboard_protocol::ids::{self, IdKind};
use switchboard_protocol::{CloseCode, ErrorCode};
use switchboard_runtime::http::{self as h, Handler, Response, ResponseFuture};
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::ops::{self, Health};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{AuthConfig, AuthMode, Verifier};
pub use config::EdgeConfig;

/// Registered bizCodes remembered by an edge (registration is permanent).
const KNOWN_BIZ_CACHE: usize = 100_000;
pub use link::{LinkError, RouterLink};
pub use registry::Dirty;
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
    /// Checks client tokens; `None` when authentication is off.
    pub(crate) verifier: Option<Arc<Verifier>>,
    /// Set by drain once presence of every connection was removed.
    presence_dropped: Arc<std::sync::atomic::AtomicBool>,
    /// Live connections per client address (`max_connections_per_address`).
    addresses: address::SlotLimiter<std::net::IpAddr>,
    /// Live connections per bizCode (`max_connections_per_biz`).
    bizs: address::SlotLimiter<Arc<str>>,
    /// bizCodes known to be registered.
    known_biz: parking_lot::Mutex<std::collections::HashSet<String>>,
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

    /// Sends a text payload of `mode` to one connection (written at once
    /// when its queue is empty).
    pub(crate) fn push(&self, conn: &Conn, mode: u16, payload: &[u8]) {
        self.metrics.frames_sent.get(mode).inc();
        if conn
            .outbox
            .push_text(outbox::text_frame(payload), self.config.send_queue_bytes)
            == outbox::Pushed::Overflow
        {
            self.slow_consumer(conn);
        }
    }

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
                config,
                node_id,
                registry: Registry::default(),
                router,
                metrics,
                health,
                verifier,
                known_biz: parking_lot::Mutex::new(std::collections::HashSet::new()),
                addresses: address::SlotLimiter::default(),
                bizs: address::SlotLimiter::default(),
                presence_dropped: Arc::new(std::sync::atomic::AtomicBool::new(false)),
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
    /// connection was found; Deliver answers nothing and writes at once.
    pub fn handle_command(&self, cmd: NodeCommand) -> Option<CommandReply> {
        let mut dirty = Dirty::default();
        let reply = self.handle_command_deferred(cmd, &mut dirty);
        dirty.flush();
        reply
    }

    /// Like [`handle_command`](Self::handle_command), but a delivery only
    /// queues: the connections to write are added to `dirty`, which the
    /// caller flushes after a batch of commands, so frames for the same
    /// connection share one write.
    pub fn handle_command_deferred(&self, cmd: NodeCommand, dirty: &mut Dirty) -> Option<CommandReply> {
        let inner = &self.inner;
        match cmd {
            NodeCommand::Deliver { mode, to, frame } => {
                let framed = outbox::text_frame(&frame);
                let d = inner
                    .registry
                    .deliver(&to, &framed, inner.config.send_queue_bytes, dirty);
                inner.metrics.deliveries.inc_by(d.queued);
                inner.metrics.slow_consumer_closes.inc_by(d.overflowed);
                inner.metrics.frames_sent.get(mode).inc_by(d.queued);
                None
            }
            NodeCommand::Close { conn, code } => {
                let found = inner.registry.get(conn).map(|c| c.close_after_welcome(code)).is_some();
                Some(CommandReply { found })
            }
            NodeCommand::Bind { conn, group } => Some(CommandReply {
                found: inner.registry.bind(conn, &group),
            }),
            NodeCommand::Unbind { conn, group } => Some(CommandReply {
                found: inner.registry.unbind(conn, &group),
            }),
            // Resync and Holds need the bus; the NATS inbox handles them.
            NodeCommand::Resync | NodeCommand::Holds { .. } => None,
            NodeCommand::Batch(cmds) => {
                for cmd in cmds {
                    self.handle_command_deferred(cmd, dirty);
                }
                None
            }
        }
    }

    /// Starts the twice-a-second sweeper: advances the coarse clock, closes
    /// connections whose token expired (4001) and connections idle for
    /// longer than the idle timeout (1001).
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
                let unix = switchboard_runtime::now_ms() / 1000;
                inner.registry.for_each(|c| {
                    if c.expires_at != 0 && unix >= c.expires_at {
                        if c.outbox.close(CloseCode::TokenExpired.as_u16()) {
                            tracing::debug!(conn_id = c.id, biz = %c.biz, client_id = %c.client, "token expired");
                        }
                    } else if now.saturating_sub(c.last_seen()) >= idle && c.outbox.close(CloseCode::GoingAway.as_u16())
                    {
                        tracing::debug!(conn_id = c.id, biz = %c.biz, client_id = %c.client, "idle timeout");
                    }
                });
            }
        });
    }

    /// Drains (SIGTERM): reports not-ready and refuses upgrades at once,
    /// removes every local connection from presence at once, closes the
    /// sockets with 1012 spread over `window` (no reconnect stampede), and
    /// waits (up to `window` + 2 × close grace) for the sessions to end.
    pub async fn drain(&self, window: Duration) {
        let inner = &self.inner;
        inner.health.set_draining();
        let conns = inner.registry.all();
        tracing::info!(node_id = %inner.node_id, connections = conns.len(), "draining");

        // Presence first: peers stop routing here, reconnects elsewhere win.
        inner.presence_dropped.store(true, Ordering::Release);
        let infos: Vec<_> = conns
            .iter()
            .filter(|c| c.is_active())
            .map(|c| c.info(&inner.node_id))
            .collect();
        let mut pending = Vec::new();
        for chunk in infos.chunks(nats::RESYNC_CHUNK) {
            let msg = Resync {
                node: inner.node_id.clone(),
                conns: chunk.to_vec(),
                covers: None,
            };
            let router = inner.router.clone();
            pending.push(tokio::spawn(async move {
                for attempt in 0..3u32 {
                    match router.drain(msg.clone()).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, attempt, "drain: presence removal failed, retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }));
        }
        for p in pending {
            let _ = p.await;
        }
        tracing::info!(node_id = %inner.node_id, removed = infos.len(), "drain: presence removed");

        let n = conns.len().max(1);
        let batches = 10usize.min(n);
        let per_batch = n.div_ceil(batches);
        let pause = window / u32::try_from(batches).unwrap_or(1);
        for (i, chunk) in conns.chunks(per_batch).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for c in chunk {
                c.outbox.close(CloseCode::Draining.as_u16());
            }
        }
        inner.tasks.close();
        let _ = tokio::time::timeout(window + inner.config.close_grace * 2, inner.tasks.wait()).await;
        tracing::info!(node_id = %inner.node_id, "drain complete");
    }

    async fn upgrade(self, mut req: Request<Incoming>, peer: SocketAddr) -> Response {
        match self.admit(&req, peer).await {
            Ok(admission) => {
                let (res, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
                    Ok(x) => x,
                    Err(e) => {
                        return self.refuse(
                            StatusCode::BAD_REQUEST,
                            ErrorCode::InvalidFrame.as_u16(),
                            &e.to_string(),
                        )
                    }
                };
                let edge = self.inner.clone();
                self.inner.tasks.spawn(async move {
                    match fut.await {
                        Ok(ws) => session::run(edge, ws.into_inner(), admission).await,
                        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                    }
                });
                let (parts, _) = res.into_parts();
                http::Response::from_parts(parts, Full::new(Bytes::new()))
            }
            Err((status, code, msg)) => self.refuse(status, code, &msg),
        }
    }

    fn refuse(&self, status: StatusCode, code: u16, msg: &str) -> Response {
        self.inner.metrics.handshake_refusals.inc();
        let mut res = h::error(status, code, msg);
        if status == StatusCode::UPGRADE_REQUIRED {
            // RFC 6455 §4.4: name the version we speak, so a client can fall back.
            let headers = res.headers_mut();
            headers.insert(
                http::header::SEC_WEBSOCKET_VERSION,
                http::HeaderValue::from_static("13"),
            );
            headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("5"));
        }
        res
    }

    /// `GET /echo` (only with `edge.echo_endpoint`): upgrades without
    /// admission and echoes every message (conformance tests).
    fn upgrade_echo(&self, mut req: Request<Incoming>) -> Response {
        if let Err(e) = handshake::check_upgrade(&req) {
            return self.refuse(e.status(), 1001, &e.to_string());
        }
        let (res, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
            Ok(x) => x,
            Err(e) => return self.refuse(StatusCode::BAD_REQUEST, 1001, &e.to_string()),
        };
        let edge = self.inner.clone();
        self.inner.tasks.spawn(async move {
            match fut.await {
                Ok(ws) => session::run_echo(edge, ws.into_inner()).await,
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
        let (parts, _) = res.into_parts();
        http::Response::from_parts(parts, Full::new(Bytes::new()))
    }

    /// Every check before the upgrade (SPEC §2 "Connecting").
    async fn admit(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<session::Admission, (StatusCode, u16, String)> {
        let inner = &self.inner;
        let bad =
            |status: StatusCode, code: u16, msg: &str| -> (StatusCode, u16, String) { (status, code, msg.to_owned()) };
        if inner.health.draining() {
            return Err(bad(
                StatusCode::SERVICE_UNAVAILABLE,
                1500,
                "node draining, reconnect elsewhere",
            ));
        }
        if !inner.health.bus_up() {
            return Err(bad(StatusCode::SERVICE_UNAVAILABLE, 1500, "bus unavailable"));
        }
        if !inner.config.allowed_origins.is_empty() {
            if let Some(origin) = req.headers().get(http::header::ORIGIN) {
                let origin = origin.to_str().unwrap_or_default();
                if !auth::origin_allowed(&inner.config.allowed_origins, origin) {
                    return Err(bad(StatusCode::FORBIDDEN, 403, "origin not allowed"));
                }
            }
        }
        let hs = handshake::parse(req.uri().query().unwrap_or(""), inner.config.max_groups)
            .map_err(|e| bad(StatusCode::BAD_REQUEST, 1001, &e.to_string()))?;
        let bearer = h::bearer_token(req.headers());
        let mut admission = match &inner.verifier {
            None => session::Admission {
                biz: hs
                    .biz
                    .ok_or_else(|| bad(StatusCode::BAD_REQUEST, 1001, "bizCode is required"))?,
                client: hs.client.unwrap_or_else(new_client_id),
                groups: hs.groups,
                expires_at: 0,
                send_groups: None,
                slots: None,
            },
            Some(verifier) => {
                let token = hs
                    .token
                    .as_deref()
                    .or(bearer)
                    .ok_or_else(|| bad(StatusCode::UNAUTHORIZED, 401, "token required"))?;
                let claims = verifier
                    .verify(token)
                    .map_err(|e| bad(StatusCode::UNAUTHORIZED, 401, &e.to_string()))?;
                let forbid = |m: &str| bad(StatusCode::FORBIDDEN, 403, m);
                if hs.biz.as_ref().is_some_and(|b| *b != claims.biz) {
                    return Err(forbid("the token does not allow this bizCode"));
                }
                if hs.client.as_ref().is_some_and(|c| *c != claims.sub) {
                    return Err(forbid("the token does not allow this clientId"));
                }
                ids::validate(IdKind::Biz, &claims.biz).map_err(|e| forbid(&format!("token: {e}")))?;
                ids::validate(IdKind::Client, &claims.sub).map_err(|e| forbid(&format!("token: {e}")))?;
                if let Some(allowed) = &claims.groups {
                    if let Some(g) = hs.groups.iter().find(|g| !allowed.contains(g)) {
                        return Err(forbid(&format!("the token does not allow group {g}")));
                    }
                }
                session::Admission {
                    biz: claims.biz,
                    client: claims.sub,
                    groups: hs.groups,
                    expires_at: claims.expires_at,
                    send_groups: claims.groups.map(Vec::into_boxed_slice),
                    slots: None,
                }
            }
        };
        handshake::check_upgrade(req).map_err(|e| bad(e.status(), 1001, &e.to_string()))?;
        let too_many = |what: &str| {
            bad(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited.as_u16(),
                &format!("too many connections {what}"),
            )
        };
        let mut slots = address::Slots::default();
        if inner.config.max_connections_per_address > 0 {
            let ip = address::client_addr(peer.ip(), req.headers(), &inner.config.trusted_proxies);
            let slot = inner.addresses.acquire(&ip, inner.config.max_connections_per_address);
            slots.address = Some(slot.ok_or_else(|| too_many("from this address"))?);
        }
        if inner.config.max_connections_per_biz > 0 {
            let biz: Arc<str> = admission.biz.as_str().into();
            let slot = inner.bizs.acquire(&biz, inner.config.max_connections_per_biz);
            slots.biz = Some(slot.ok_or_else(|| too_many("for this bizCode on this edge"))?);
        }
        if slots.address.is_some() || slots.biz.is_some() {
            admission.slots = Some(Box::new(slots));
        }
        if inner.config.require_registration && !inner.known_biz.lock().contains(admission.biz.as_str()) {
            match inner.router.is_registered(&admission.biz).await {
                Ok(true) => {
                    let mut known = inner.known_biz.lock();
                    if known.len() < KNOWN_BIZ_CACHE {
                        known.insert(admission.biz.clone());
                    }
                }
                Ok(false) => return Err(bad(StatusCode::FORBIDDEN, 1007, "unknown bizCode")),
                Err(e) => {
                    tracing::warn!(error = %e, "registration check failed");
                    return Err(bad(StatusCode::SERVICE_UNAVAILABLE, 1500, "bus unavailable"));
                }
            }
        }
        Ok(admission)
    }
}

impl Handler for Edge {
    fn call(&self, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture {
        let path = req.uri().path();
        let res = if path == "/ws" || path == "/api/websocket/ws" {
            if req.method() == Method::GET {
                return Box::pin(self.clone().upgrade(req, peer));
            } else {
                h::error(StatusCode::METHOD_NOT_ALLOWED, 405, "method not allowed")
            }
        } else if path == "/echo" && self.inner.config.echo_endpoint && req.method() == Method::GET {
            self.upgrade_echo(req)
        } else if let Some(res) = ops::handle(req.method(), path, &self.inner.health, &self.inner.metrics) {
            res
        } else {
            h::error(StatusCode::NOT_FOUND, 404, "not found")
        };
        Box::pin(std::future::ready(res))
    }
}
