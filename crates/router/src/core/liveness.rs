//! Node liveness: heartbeats, silent-node detection and purge.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_protocol::envelope::{Heartbeat, NodeCommand};
use switchboard_protocol::frame::PresenceEvent;
use switchboard_protocol::subject::presence_key;
use switchboard_runtime::nats::LinkState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::resync::{AUDIT_BEATS, AUDIT_INTERVAL};

/// How often the liveness loop looks for silent nodes.
const LIVENESS_TICK: Duration = Duration::from_millis(500);

use super::{NodeState, Router};
use crate::store::StoreError;

impl Router {
    pub(super) fn heard(&self, node: &str) -> bool {
        let mut nodes = self.inner.nodes.lock();
        match nodes.get_mut(node) {
            Some(s) => {
                s.last_heard = Instant::now();
                std::mem::replace(&mut s.dead, false)
            }
            None => {
                nodes.insert(node.into(), NodeState::new());
                false
            }
        }
    }

    /// Records a node heartbeat. A node we had declared dead is asked to
    /// resync (it was only partitioned or paused). A node that reports fewer
    /// connections than the index holds entries of it, for
    /// [`AUDIT_BEATS`] heartbeats in a row, has its entries checked
    /// against what it holds (at most every [`AUDIT_INTERVAL`]), in
    /// the background.
    pub async fn heartbeat(&self, hb: Heartbeat) {
        if self.heard(&hb.node) {
            tracing::info!(node_id = %hb.node, "purged node is alive again, asking it to resync");
            let _ = self.inner.edges.send(&hb.node, NodeCommand::Resync).await;
            return;
        }
        if self.audit_due(&hb) {
            let router = self.clone();
            tokio::spawn(async move { router.audit(&hb.node).await });
        }
    }

    /// Counts heartbeats whose connection count is below the node's index
    /// entries; true when an audit is due.
    fn audit_due(&self, hb: &Heartbeat) -> bool {
        let entries = self.inner.index.lock().node_len(&hb.node) as u64;
        let mut nodes = self.inner.nodes.lock();
        let Some(s) = nodes.get_mut(hb.node.as_str()) else {
            return false;
        };
        if entries <= hb.conns {
            s.excess_beats = 0;
            return false;
        }
        s.excess_beats += 1;
        if s.excess_beats < AUDIT_BEATS || s.audited.is_some_and(|t| t.elapsed() < AUDIT_INTERVAL) {
            return false;
        }
        s.excess_beats = 0;
        s.audited = Some(Instant::now());
        true
    }

    /// Checks node liveness twice a second until `shutdown`, purging the
    /// presence of nodes silent for longer than `node_timeout`.
    ///
    /// Silence only counts while this router's own bus link is up (`link`):
    /// during an outage no heartbeat can arrive, so nothing is judged, and
    /// when the link comes back every node gets a fresh timeout window.
    pub fn spawn_liveness(&self, shutdown: CancellationToken, mut link: watch::Receiver<(u64, LinkState)>) {
        let router = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIVENESS_TICK);
            let mut n = 0u64;
            let mut was_up = true;
            let mut last_round = Instant::now();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                n += 1;
                // This router itself did not run (frozen with SIGSTOP, a
                // paused VM, a starved process): the heartbeats that came
                // meanwhile wait unread in its socket, so every node looks
                // silent. Judge nobody on that (a thawed owner purged every
                // healthy edge, and their clients missed what was sent).
                // A gap of half the node timeout or less cannot make a
                // node that heartbeats (every `edge.node_heartbeat`, at
                // most half the timeout) look silent.
                let gap = last_round.elapsed();
                last_round = Instant::now();
                if gap > (router.inner.config.node_timeout / 2).max(LIVENESS_TICK * 2) {
                    router.restart_liveness_window();
                    tracing::warn!(
                        stalled_ms = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
                        "this router did not run for a while (frozen?): every node gets a fresh liveness window"
                    );
                    continue;
                }
                if n.is_multiple_of(120) {
                    router.inner.index.lock().prune_tombstones(Duration::from_secs(120));
                }
                let up = link.borrow_and_update().1 == LinkState::Up;
                if !up {
                    was_up = false;
                    continue;
                }
                if !was_up {
                    was_up = true;
                    router.restart_liveness_window();
                    tracing::info!("bus link back: every node gets a fresh liveness window");
                    continue;
                }
                let expired = router.expired_nodes();
                if expired.is_empty() {
                    continue;
                }
                // A silent link of our own makes every node look silent
                // until its pings time out: purge only what a working
                // link failed to hear (issue 13: a router black-holed from
                // NATS purged healthy edges).
                if !router.inner.edges.round_trip().await {
                    tracing::warn!(
                        nodes = expired.len(),
                        "nodes look silent but the bus does not answer this router either; not purging"
                    );
                    router.spare(&expired);
                    router.restart_liveness_window();
                    continue;
                }
                for node in expired {
                    router.purge_node(&node).await;
                }
            }
        });
    }

    /// Takes back the judgement of `expired_nodes` on `nodes` (nothing was
    /// purged): they are not asked to resync when heard again, which would
    /// make them hold and heal for nothing.
    fn spare(&self, nodes: &[Arc<str>]) {
        let mut all = self.inner.nodes.lock();
        for node in nodes {
            if let Some(s) = all.get_mut(node) {
                s.dead = false;
            }
        }
    }

    /// Every known node counts as heard now.
    fn restart_liveness_window(&self) {
        let now = Instant::now();
        for s in self.inner.nodes.lock().values_mut() {
            s.last_heard = now;
        }
    }

    pub(super) fn expired_nodes(&self) -> Vec<Arc<str>> {
        let timeout = self.inner.config.node_timeout;
        let mut nodes = self.inner.nodes.lock();
        // Nodes that appear only in the index (learned from the watch) are
        // tracked from the moment we first saw them.
        {
            let ix = self.inner.index.lock();
            for node in ix.nodes() {
                nodes.entry(node.clone()).or_insert_with(NodeState::new);
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

    pub(super) async fn purge_node(&self, node: &str) {
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
                    self.emit_purged(&biz, &client, node, entry.conn);
                    self.notify(PresenceEvent::Offline, &biz, &client, &entry.groups, None)
                        .await;
                    // Unicasts to it are stored from now on (SPEC §7).
                    if self.history_on(&biz).await.unwrap_or(false) {
                        self.left(&biz, &client).await;
                    }
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
