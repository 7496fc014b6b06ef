//! One storm client: holds its connection, reading probes; when the
//! connection drops, reconnects with backoff, trying the targets in turn
//! from the one after its last (a client-side endpoint list; behind a load
//! balancer every target would be the balancer), and asks for a probe
//! after the welcome.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::backoff::Backoff;
use super::probe::{probe_in, Probe};
use super::state::{Shared, AWAITING_PROBE, DOWN, REACHABLE};
use crate::client::{self, Ws};

/// What one client task needs.
pub(crate) struct ClientCtx {
    /// Its index (slot, client id).
    pub(crate) i: usize,
    pub(crate) shared: Arc<Shared>,
    /// The distinct targets, tried in turn.
    pub(crate) endpoints: Arc<Vec<String>>,
    pub(crate) source: IpAddr,
    pub(crate) query: String,
    pub(crate) backoff: Backoff,
    pub(crate) attempt_timeout: Duration,
}

/// The targets without repeats, in order (a target listed twice gets twice
/// the initial clients, but is tried once in a reconnect round).
pub(crate) fn distinct(targets: &[String]) -> Arc<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for t in targets {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Arc::new(out)
}

/// Holds `ws` (connected to `endpoints[at]`), reading probes; when it
/// drops, reconnects with backoff and asks for a probe after the welcome.
/// Runs until aborted.
pub(crate) async fn run_client(ctx: ClientCtx, mut ws: Ws, mut at: usize) {
    let slot = &ctx.shared.slots[ctx.i];
    loop {
        read_until_closed(&ctx, &mut ws).await;
        // Its socket goes now, not when the new one is in: 10k clients
        // reconnecting at once would otherwise hold two descriptors each.
        drop(ws);
        if ctx.shared.kill_at.get().is_none() {
            ctx.shared.closed_before_kill.fetch_add(1, Ordering::Relaxed);
        }
        slot.state.store(DOWN, Ordering::Release);
        if slot.lost_ns.load(Ordering::Relaxed) == 0 {
            slot.lost_ns.store(ctx.shared.since_kill(), Ordering::Relaxed);
        }
        let mut attempt = 0u32;
        ws = loop {
            tokio::time::sleep(ctx.backoff.delay(attempt)).await;
            attempt = attempt.saturating_add(1);
            at = (at + 1) % ctx.endpoints.len();
            let started = ctx.shared.since_kill();
            let _ = slot
                .first_attempt_ns
                .compare_exchange(0, started, Ordering::Relaxed, Ordering::Relaxed);
            ctx.shared.attempts.fetch_add(1, Ordering::Relaxed);
            let tried = tokio::time::timeout(
                ctx.attempt_timeout,
                client::connect(&ctx.endpoints[at], ctx.source, &ctx.query),
            )
            .await;
            match tried {
                Ok(Ok((ws, took))) => {
                    ctx.shared.reconnect_latency.lock().await.record(took);
                    break ws;
                }
                Ok(Err(e)) => count_failure(&ctx.shared, &e).await,
                Err(_) => {
                    ctx.shared.timed_out.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let now = ctx.shared.since_kill();
        slot.registered_ns.store(now, Ordering::Relaxed);
        slot.probed_ns.store(now, Ordering::Relaxed);
        slot.state.store(AWAITING_PROBE, Ordering::Release);
        let _ = ctx.shared.probe_queue.send(ctx.i);
    }
}

/// Reads until the connection ends, marking probes as they arrive.
async fn read_until_closed(ctx: &ClientCtx, ws: &mut Ws) {
    let slot = &ctx.shared.slots[ctx.i];
    while let Some(Ok(m)) = ws.next().await {
        match probe_in(&m) {
            None => {}
            Some(Probe::Final) => slot.final_probe.store(1, Ordering::Release),
            Some(Probe::Reconnected) => {
                ctx.shared.probes_received.fetch_add(1, Ordering::Relaxed);
                if slot.state.load(Ordering::Acquire) == AWAITING_PROBE {
                    slot.reachable_ns.store(ctx.shared.since_kill(), Ordering::Relaxed);
                    slot.state.store(REACHABLE, Ordering::Release);
                }
            }
        }
    }
}

/// Counts a failed attempt: refused (the edge is gone) or anything else
/// (the first of those is kept for the report).
async fn count_failure(shared: &Shared, e: &anyhow::Error) {
    let refused = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    if refused {
        shared.refused.fetch_add(1, Ordering::Relaxed);
    } else {
        shared.other_failures.fetch_add(1, Ordering::Relaxed);
        shared.first_error.lock().await.get_or_insert_with(|| format!("{e:#}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_try_each_target_once_per_round() {
        let t = distinct(&["a".into(), "a".into(), "b".into()]);
        assert_eq!(*t, vec!["a".to_owned(), "b".to_owned()]);
    }
}
