//! Each bizCode's own limits on this edge (the noisy-tenant limits,
//! [`BizLimits`], set through the API's `set_limits`): its connections
//! here, and one token bucket shared by all its client sends here.
//!
//! The limits live in the routers' settings store; an edge keeps a
//! [`Tenant`] per bizCode it serves. A bizCode new to the edge is asked
//! about before its first handshake is admitted ([`Tenants::admit`]), and
//! [`spawn_refresher`] asks again every `edge.biz_limits_refresh` for every
//! bizCode with connections here or a recent handshake, in batches. When no
//! router answers, the edge keeps what it knew (limits off for a bizCode it
//! never heard of): it fails open, so a bus outage never locks tenants out.
//!
//! Cost on the hot path: a send of a bizCode without a sends limit reads
//! one atomic; with one, it takes its bizCode's bucket lock for a few
//! instructions. A handshake takes the map lock once and counts itself in
//! its bizCode with a compare-and-swap.
//!
//! The map is bounded: entries without connections are dropped after
//! [`IDLE_ROUNDS`] refreshes without a handshake, and at [`MAX_TENANTS`]
//! a bizCode gets an entry outside the map (its limits read once, its
//! connections not counted together), which is logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard_protocol::envelope::{BizLimits, MAX_LIMITS_QUERY};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::edge::EdgeInner;
use crate::link::{LinkError, RouterLink};

/// Most bizCodes an edge keeps limits for.
const MAX_TENANTS: usize = 100_000;

/// Refreshes an entry without connections or handshakes survives.
const IDLE_ROUNDS: u32 = 30;

/// Longest wait for a new bizCode's limits before its first handshake
/// (then admitted without them: fail open).
const FIRST_ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// One bizCode's limits and counts on this edge.
#[derive(Debug)]
pub(crate) struct Tenant {
    biz: Arc<str>,
    /// The bizCode's own connection cap (0: off).
    max_connections: AtomicU32,
    /// Its connections admitted here and not yet ended.
    conns: AtomicU32,
    /// Whether a sends limit is on: sends skip the bucket when it is not.
    sends_on: AtomicBool,
    bucket: Mutex<Bucket>,
    /// A handshake came since the refresher last looked.
    used: AtomicBool,
    /// Done once the first answer, or the failure to get one, is in.
    first: OnceCell<()>,
}

/// The sends bucket of a bizCode.
#[derive(Debug)]
struct Bucket {
    rate: u32,
    burst: u32,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * f64::from(self.rate)).min(f64::from(self.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Tenant {
    fn new(biz: &str) -> Self {
        Self {
            biz: biz.into(),
            max_connections: AtomicU32::new(0),
            conns: AtomicU32::new(0),
            sends_on: AtomicBool::new(false),
            bucket: Mutex::new(Bucket {
                rate: 0,
                burst: 0,
                tokens: 0.0,
                last: Instant::now(),
            }),
            used: AtomicBool::new(true),
            first: OnceCell::new(),
        }
    }

    /// Applies limits heard from a router. A changed sends limit starts
    /// with a full burst only when it was off before; otherwise the tokens
    /// left carry over (capped by the new burst).
    fn apply(&self, l: BizLimits) {
        self.max_connections.store(l.max_connections, Ordering::Relaxed);
        let mut b = self.bucket.lock();
        let (rate, burst) = (l.sends_per_sec, l.burst());
        if (b.rate, b.burst) != (rate, burst) {
            let was_off = b.rate == 0;
            b.rate = rate;
            b.burst = burst;
            b.tokens = if was_off {
                f64::from(burst)
            } else {
                b.tokens.min(f64::from(burst))
            };
            b.last = Instant::now();
        }
        self.sends_on.store(rate > 0, Ordering::Relaxed);
    }

    /// Whether a client send of this bizCode may go now (takes a token).
    pub(crate) fn allow_send(&self) -> bool {
        !self.sends_on.load(Ordering::Relaxed) || self.bucket.lock().take(Instant::now())
    }

    /// Counts a new connection unless the bizCode holds `cap` already
    /// (the lower of its own cap and `edge_cap`; 0 is off).
    fn enter(self: &Arc<Self>, edge_cap: u32) -> Option<TenantSlot> {
        let own = self.max_connections.load(Ordering::Relaxed);
        let cap = match (own, edge_cap) {
            (0, c) | (c, 0) => c,
            (a, b) => a.min(b),
        };
        self.conns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (cap == 0 || n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(TenantSlot(self.clone()))
    }
}

/// A connection's place in its bizCode's count, and its way to the
/// bizCode's sends bucket; given back on drop.
#[derive(Debug)]
pub(crate) struct TenantSlot(Arc<Tenant>);

impl std::ops::Deref for TenantSlot {
    type Target = Tenant;
    fn deref(&self) -> &Tenant {
        &self.0
    }
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An entry of the map, with the refreshes it went without use.
#[derive(Debug)]
struct Held {
    tenant: Arc<Tenant>,
    idle_rounds: u32,
}

/// The bizCodes this edge keeps limits for.
#[derive(Debug, Default)]
pub(crate) struct Tenants {
    map: Mutex<HashMap<Arc<str>, Held>>,
}

impl Tenants {
    /// Admits a handshake of `biz` against its connection cap (its own,
    /// and `edge_cap`, `edge.max_connections_per_biz`): asks the routers
    /// for its limits first if the edge never heard of it. `None`: the
    /// bizCode is at its cap (429).
    pub(crate) async fn admit(&self, router: &dyn RouterLink, biz: &str, edge_cap: u32) -> Option<TenantSlot> {
        let tenant = self.entry(biz);
        tenant
            .first
            .get_or_init(|| async {
                let bizs = vec![biz.to_owned()];
                match tokio::time::timeout(FIRST_ASK_TIMEOUT, router.biz_limits(bizs)).await {
                    Ok(Ok(limits)) => {
                        if let Some(l) = limits.first() {
                            tenant.apply(*l);
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(biz, error = %e, "bizCode limits unknown, admitting without them"),
                    Err(_) => tracing::warn!(
                        biz,
                        "no router told the bizCode's limits in time, admitting without them"
                    ),
                }
            })
            .await;
        tenant.enter(edge_cap)
    }

    /// `biz`'s entry, made if new (outside the map when it is full).
    fn entry(&self, biz: &str) -> Arc<Tenant> {
        let mut map = self.map.lock();
        if let Some(held) = map.get_mut(biz) {
            held.tenant.used.store(true, Ordering::Relaxed);
            return held.tenant.clone();
        }
        if map.len() >= MAX_TENANTS {
            // Only the map holds them: no connection counts in them.
            map.retain(|_, h| Arc::strong_count(&h.tenant) > 1);
        }
        let tenant = Arc::new(Tenant::new(biz));
        if map.len() >= MAX_TENANTS {
            tracing::warn!(
                biz,
                "limits kept for {MAX_TENANTS} bizCodes already; this one's connections are not counted together"
            );
            return tenant;
        }
        let held = Held {
            tenant: tenant.clone(),
            idle_rounds: 0,
        };
        map.insert(tenant.biz.clone(), held);
        tenant
    }

    /// The entries to ask about again: those with connections or a recent
    /// handshake. Drops the ones idle for [`IDLE_ROUNDS`].
    fn due(&self) -> Vec<Arc<Tenant>> {
        let mut map = self.map.lock();
        let mut due = Vec::new();
        map.retain(|_, h| {
            // Under the map lock nobody can take a new reference: a count
            // of one means no connection holds it.
            let in_use = Arc::strong_count(&h.tenant) > 1 || h.tenant.used.swap(false, Ordering::Relaxed);
            if in_use {
                h.idle_rounds = 0;
                due.push(h.tenant.clone());
                return true;
            }
            h.idle_rounds += 1;
            h.idle_rounds < IDLE_ROUNDS
        });
        due
    }
}

/// Asks the routers for the limits of `tenants` and applies them, in
/// batches of at most [`MAX_LIMITS_QUERY`].
///
/// # Errors
/// The first batch no router answered; the ones before it are applied.
async fn refresh(router: &dyn RouterLink, tenants: &[Arc<Tenant>]) -> Result<(), LinkError> {
    for chunk in tenants.chunks(MAX_LIMITS_QUERY) {
        let bizs = chunk.iter().map(|t| t.biz.to_string()).collect();
        let limits = router.biz_limits(bizs).await?;
        if limits.len() != chunk.len() {
            return Err(LinkError::BadAnswer(format!(
                "{} limits for {} bizCodes",
                limits.len(),
                chunk.len()
            )));
        }
        for (t, l) in chunk.iter().zip(limits) {
            t.apply(l);
        }
    }
    Ok(())
}

/// Starts the task that asks the routers for the limits of the bizCodes
/// this edge serves every `edge.biz_limits_refresh`, until `shutdown`.
pub(crate) fn spawn_refresher(edge: Arc<EdgeInner>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(edge.config().biz_limits_refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let due = edge.tenants().due();
            match refresh(edge.router().as_ref(), &due).await {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "bizCode limits not refreshed, keeping the last known");
                    }
                    failing = true;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: u32, sends_per_sec: u32, sends_burst: u32) -> BizLimits {
        BizLimits {
            max_connections,
            sends_per_sec,
            sends_burst,
        }
    }

    #[test]
    fn connections_are_capped_by_the_lower_cap_and_given_back() {
        let t = Arc::new(Tenant::new("d1"));
        let all: Vec<_> = (0..10).filter_map(|_| t.enter(0)).collect();
        assert_eq!(all.len(), 10, "no cap: everyone");
        t.apply(limits(12, 0, 0));
        assert!(t.enter(10).is_none(), "the edge's cap is lower");
        let a = t.enter(0).expect("11th");
        let b = t.enter(0).expect("12th");
        assert!(t.enter(0).is_none(), "the bizCode's own cap");
        drop(a);
        assert!(t.enter(0).is_some());
        drop(b);
        drop(all);
        assert_eq!(t.conns.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn sends_share_one_bucket_and_a_change_applies() {
        let t = Tenant::new("d1");
        assert!((0..1000).all(|_| t.allow_send()), "off by default");
        t.apply(limits(0, 1, 3));
        assert_eq!((0..10).filter(|_| t.allow_send()).count(), 3, "the burst");
        t.apply(limits(0, 0, 0));
        assert!(t.allow_send(), "removed");
        t.apply(limits(0, 100_000, 0));
        assert!((0..1000).filter(|_| t.allow_send()).count() >= 1000, "raised");
    }

    #[test]
    fn idle_entries_are_dropped_and_held_ones_kept() {
        let tenants = Tenants::default();
        let held = tenants.entry("busy").enter(0);
        let _ = tenants.entry("idle");
        assert_eq!(tenants.due().len(), 2, "both were just used");
        for _ in 0..IDLE_ROUNDS {
            assert_eq!(tenants.due().len(), 1, "only the one with a connection");
        }
        assert_eq!(tenants.map.lock().len(), 1, "the idle one is gone");
        drop(held);
    }
}
