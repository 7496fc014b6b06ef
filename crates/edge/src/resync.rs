//! Resync: re-asserting this node's presence after the bus came back (or
//! when a router asks), so routers that lost or never saw some of it learn
//! it again. Presence goes in chunks that each say which connection ids
//! they speak for, so a router can also drop what the node no longer holds.
//!
//! Transport-free: it asks through the edge's [`RouterLink`]; the NATS side
//! only decides when to wake it.
//!
//! [`RouterLink`]: crate::link::RouterLink

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_protocol::envelope::{ConnInfo, ConnRange, Resync};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::edge::Edge;

/// Most connections per resync or drain message (keeps each under NATS'
/// 1 MiB payload).
pub(crate) const RESYNC_CHUNK: usize = 500;

/// Attempts per resync chunk before the resync is given up (the next
/// reconnect or a router's request starts another).
const RESYNC_ATTEMPTS: u32 = 10;

/// What starts a resync: the bus came back (presence only), or a router
/// purged this node while it was alive (presence, then a heal from the
/// log). Triggers while one runs make one more run.
#[derive(Default)]
pub(crate) struct Trigger {
    wake: Notify,
    heal: AtomicBool,
}

impl Trigger {
    /// Re-asserts presence: after a reconnect, or when a heartbeat's
    /// answer shows the routers may have purged this node. A delivery lost
    /// while the link was down shows up as a gap in the owners' numbering
    /// and heals by itself; sends stored while a router had purged this
    /// node do not (the owners stop numbering for a purged node): when the
    /// node is suspect ([`crate::heard`]) the resync holds and heals first.
    pub(crate) fn resync(&self) {
        self.wake.notify_one();
    }

    /// Re-asserts presence and then heals every connection with history
    /// from the log: a router purged this node while it was alive (its
    /// `Resync` command), so sends to its clients were stored meanwhile and
    /// never numbered for this node.
    pub(crate) fn resync_and_heal(&self) {
        self.heal.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// Where a resync's hold stands ([`run_resyncs`]): a doubt about a
/// delivery ([`crate::order`]) that finds a connection held for the
/// resync leaves it to the resync's heal, as long as that heal has not
/// started reading; otherwise the connection owes a heal of its own, read
/// when the resync releases it ([`crate::registry::Conn::hold_or_owe`]).
#[derive(Debug, Default)]
pub(crate) struct ResyncHold(AtomicU8);

/// No connection is held for a resync, or its heal has started.
const IDLE: u8 = 0;
/// Connections are held; the heal has not started reading.
const HOLDING: u8 = 1;
/// As [`HOLDING`], and a delivery was doubted: the resync must heal.
const DOUBTED: u8 = 2;

impl ResyncHold {
    fn begin(&self) {
        self.0.store(HOLDING, Ordering::SeqCst);
    }

    /// A delivery to a connection held for the resync is in doubt: true
    /// if the resync's heal will cover it.
    pub(crate) fn doubted(&self) -> bool {
        match self
            .0
            .compare_exchange(HOLDING, DOUBTED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(state) => state == DOUBTED,
        }
    }

    /// Ends the hold without a heal, unless a doubt came (false: heal).
    fn end_without_heal(&self) -> bool {
        self.0
            .compare_exchange(HOLDING, IDLE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The heal starts reading: later doubts owe what they find held a heal
    /// of its own.
    fn end(&self) {
        self.0.store(IDLE, Ordering::SeqCst);
    }
}

/// Runs one resync per wake-up until `shutdown`.
///
/// When a router asked (it purged this node while it was alive), or this
/// node suspects it may have been purged ([`crate::heard`]), the resync
/// first holds every connection with history, so no live delivery moves a
/// position past what was stored meanwhile. Then:
/// - asked by a router: the held connections heal from the log;
/// - only suspected: they heal if the routers wrote any presence entry
///   again (it was gone: purged), the resync failed (unknown) or a
///   delivery to one of them was doubted meanwhile ([`ResyncHold`]), and
///   are released as they are otherwise (nothing was purged or stored).
pub(crate) async fn run_resyncs(edge: Edge, trigger: Arc<Trigger>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = trigger.wake.notified() => {}
        }
        let asked = trigger.heal.swap(false, Ordering::SeqCst);
        let heard = edge.inner().heard();
        let suspected = heard.suspect();
        let held = if asked || suspected {
            edge.inner().resync_hold().begin();
            let held = edge.inner().hold_everything().await;
            // New connections may register from here: they hold too.
            heard.held(Instant::now());
            Some(held)
        } else {
            None
        };
        // Stops mid-resync at shutdown too (the drain that follows removes
        // the node's presence anyway), so it never holds the shutdown.
        let recreated = tokio::select! {
            () = shutdown.cancelled() => return,
            recreated = resync(&edge) => recreated,
        };
        let Some(held) = held else { continue };
        if !asked && recreated == Some(0) && edge.inner().resync_hold().end_without_heal() {
            tracing::info!(node_id = %edge.node_id(), "every presence entry was still there: nothing to heal");
            edge.inner().release_held_all(held);
            continue;
        }
        // The owners learn the re-created entries through their KV watch: a
        // send appended before an owner indexed them went to no node, so
        // the log is read once that had time to happen (issue 13: a frozen
        // edge's client missed a broadcast when the heal came first).
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(HEAL_SETTLE) => {
                edge.inner().resync_hold().end();
                edge.inner().heal_held(held);
            }
        }
    }
}

/// How long after a resync the log is read: the owners learn the
/// re-created presence entries through their KV watch, which takes
/// milliseconds; this leaves room for a loaded owner.
const HEAL_SETTLE: Duration = Duration::from_secs(1);

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
///
/// Answers how many entries the routers wrote again (they were gone),
/// `None` if a chunk was given up.
///
/// # Cancel safety
/// Cancelled between or during attempts: a chunk the router applied is
/// whole (it re-checks with `Holds`), one not yet sent is simply not sent.
async fn resync(edge: &Edge) -> Option<u32> {
    let node = edge.node_id();
    let mut ids = Vec::new();
    edge.inner().registry().for_each(|c| {
        if c.is_active() {
            ids.push(c.id);
        }
    });
    ids.sort_unstable();
    let mut recreated = Some(0u32);
    for (covers, ids) in plan(&ids, RESYNC_CHUNK) {
        let mut written = None;
        for attempt in 0..RESYNC_ATTEMPTS {
            let msg = Resync {
                node: node.to_owned(),
                conns: held(edge, ids),
                covers: Some(covers),
            };
            match edge.inner().router().resync(msg).await {
                Ok(n) => {
                    written = Some(n);
                    break;
                }
                Err(e) => {
                    tracing::warn!(node_id = %node, error = %e, attempt, "resync failed, retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        recreated = match (recreated, written) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            _ => None,
        };
    }
    recreated
}

/// The connections of `ids` that are still here and welcomed, as presence.
fn held(edge: &Edge, ids: &[u64]) -> Vec<ConnInfo> {
    let registry = edge.inner().registry();
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
