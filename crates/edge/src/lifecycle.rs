//! The node's life after start-up: the sweeper that runs while it serves
//! (coarse clock, token expiry, idle timeouts) and the drain that ends it
//! (SIGTERM: presence first, then the sockets, spread over a window).
//!
//! The sweeper walks every connection twice a second instead of giving
//! each connection its own timers: an idle session then holds no timer.

use std::time::Duration;

use switchboard_protocol::envelope::Resync;
use switchboard_protocol::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::edge::Edge;
use crate::resync::RESYNC_CHUNK;

/// How often the sweeper runs.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Batches the drain spreads its closes over.
const DRAIN_BATCHES: usize = 10;

/// Attempts per chunk of the drain's presence removal.
const DRAIN_ATTEMPTS: u32 = 3;

impl Edge {
    /// Starts the twice-a-second sweeper: advances the coarse clock, closes
    /// connections whose token expired (4001) and connections idle for
    /// longer than the idle timeout (1001). Starts the refresher of the
    /// bizCodes' limits too (every `edge.biz_limits_refresh`).
    pub fn spawn_sweeper(&self, shutdown: CancellationToken) {
        let inner = self.inner().clone();
        crate::tenant::spawn_refresher(inner.clone(), shutdown.clone());
        tokio::spawn(async move {
            let idle = inner.config().idle_timeout().as_secs().max(1);
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let now = inner.tick_clock();
                let unix = switchboard_runtime::now_ms() / 1000;
                inner.registry().for_each(|c| {
                    if c.expires_at != 0 && unix >= c.expires_at {
                        if c.outbox.close(CloseCode::TokenExpired) {
                            tracing::debug!(conn_id = c.id, biz = %c.biz, client_id = %c.client, "token expired");
                        }
                    } else if now.saturating_sub(c.last_seen()) >= idle && c.outbox.close(CloseCode::GoingAway) {
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
        let inner = self.inner();
        let node = inner.node_id();
        inner.health().set_draining();
        let conns = inner.registry().all();
        tracing::info!(node_id = %node, connections = conns.len(), "draining");

        // Presence first: peers stop routing here, reconnects elsewhere win.
        inner.drop_presence();
        let infos: Vec<_> = conns.iter().filter(|c| c.is_active()).map(|c| c.info(node)).collect();
        let mut pending = Vec::new();
        for chunk in infos.chunks(RESYNC_CHUNK) {
            let msg = Resync {
                node: node.to_owned(),
                conns: chunk.to_vec(),
                covers: None,
            };
            let router = inner.router().clone();
            pending.push(tokio::spawn(async move {
                for attempt in 0..DRAIN_ATTEMPTS {
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
        tracing::info!(node_id = %node, removed = infos.len(), "drain: presence removed");

        let n = conns.len().max(1);
        let batches = DRAIN_BATCHES.min(n);
        let per_batch = n.div_ceil(batches);
        let pause = window / u32::try_from(batches).unwrap_or(1);
        for (i, chunk) in conns.chunks(per_batch).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for c in chunk {
                c.outbox.close(CloseCode::Draining);
            }
        }
        inner.tasks().close();
        let _ = tokio::time::timeout(window + inner.config().close_grace * 2, inner.tasks().wait()).await;
        tracing::info!(node_id = %node, "drain complete");
    }
}
