//! Resync and reconcile: a node re-asserts its connections after a bus
//! outage or a purge, and the router makes the node's entries match what
//! the node holds.
//!
//! # Why a resync asks the node before it announces
//!
//! Issue 9 found presence ghosts made by this interleaving (seen in the
//! logs of a 2-router, 2-edge cluster around a NATS restart):
//!
//! 1. NATS comes back; edge 1 reconnects and snapshots its registry
//!    (client A, conn 1) for a resync.
//! 2. The resync request finds no responder yet (the routers' queue
//!    subscriptions are not re-established) and the edge retries 500 ms
//!    later, with the same snapshot.
//! 3. Meanwhile everything is ready again: A resets its connection, the
//!    edge removes it and sends A's disconnect; a router deletes A's entry
//!    and announces `offline`.
//! 4. The retried resync arrives: A's key is absent, so the router created
//!    the entry again (a revision newer than the departure) and announced
//!    `online`. No disconnect for conn 1 ever follows: the entry stayed for
//!    good, routing sends into the void.
//!
//! The same holds for any snapshot that reaches a router after a
//! disconnect: a slow chunk, a retry, a second router. So a disconnect must
//! win over every snapshot taken before it, and the only party that knows
//! is the node. Hence:
//!
//! - The edge rebuilds each chunk from its registry right before each
//!   attempt (it never re-asserts what it no longer holds when it sends),
//!   and says which connection ids the chunk speaks for
//!   ([`Resync::covers`]).
//! - An entry a resync (re)creates is announced only after the node
//!   confirms it still holds the connection ([`NodeCommand::Holds`],
//!   asked *after* the write); otherwise the write is withdrawn. This is
//!   airtight: the edge removes a connection from its registry before it
//!   sends the disconnect, so either the node still held it when asked and
//!   its disconnect reaches the store after our write (and deletes it), or
//!   the node no longer held it and we delete our own write
//!   (compare-and-set on its revision).
//! - Entries of the node in the covered range that the chunk does not list
//!   are stale (a departure whose disconnect was lost, a connect applied
//!   after the edge gave up on it): after the node confirms it does not
//!   hold them they are removed with an `offline` notice. The revision is
//!   read before asking, so a connection that registers meanwhile is never
//!   removed (its write changes the revision).
//! - Between resyncs, heartbeats that report fewer connections than the
//!   index holds entries of the node trigger the same check (an audit).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard_protocol::envelope::{ConnInfo, NodeCommand, Resync};
use switchboard_protocol::frame::PresenceEvent;
use switchboard_protocol::subject::presence_key;
use switchboard_protocol::CloseCode;

use super::{presence_value, Router};
use crate::error::RouterError;
use crate::index::Entry;
use crate::store::StoreError;

/// Heartbeats in a row with more index entries than reported connections
/// before a node's entries are audited (a connect or disconnect in flight
/// makes the counts differ for a moment, a stale entry for good).
pub(super) const AUDIT_BEATS: u32 = 3;

/// Least time between two audits of one node.
pub(super) const AUDIT_INTERVAL: Duration = Duration::from_secs(30);

/// How often [`Router::check_late_write`] looks at the key.
const LATE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long it keeps looking while the store does not answer.
const LATE_CHECK_FOR: Duration = Duration::from_secs(600);

/// How long the store must have answered without the entry before a
/// late-write check stops: a write proposed without a quorum lands, if at
/// all, soon after the quorum is back (issue 13: stopping after two
/// answers, 5 s apart, missed one that landed later, a ghost for up to an
/// audit interval).
const LATE_CHECK_QUORUM_BACK: Duration = Duration::from_secs(60);

/// Most late-write checks at once.
const LATE_CHECKS_MAX: usize = 1024;

/// An entry this resync wrote and has not announced yet.
struct Created {
    info: ConnInfo,
    key: String,
    revision: u64,
}

impl Router {
    /// Re-asserts presence for a node's connections after a bus outage or a
    /// purge, and reconciles the node's entries in the range the message
    /// covers (see the module docs). A connection whose client has since
    /// connected elsewhere is closed with 4009.
    ///
    /// # Errors
    /// [`RouterError::Store`] if the store fails (the entries after the
    /// failure are not written; the rest of the reconciliation still runs),
    /// [`RouterError::Node`] if the node cannot confirm what was written
    /// (which is then withdrawn). Either way the node retries the chunk.
    pub async fn resync(&self, r: Resync) -> Result<(), RouterError> {
        self.resync_counted(r).await.0
    }

    /// [`Router::resync`], and how many of the listed connections it wrote
    /// again because their entries were gone (the node had been purged
    /// while alive): then sends to them were stored and not delivered, and
    /// the node heals them from the log.
    pub async fn resync_counted(&self, r: Resync) -> (Result<(), RouterError>, u32) {
        let mut recreated = 0u32;
        let outcome = self.resync_inner(r, &mut recreated).await;
        (outcome, recreated)
    }

    async fn resync_inner(&self, r: Resync, recreated: &mut u32) -> Result<(), RouterError> {
        self.heard(&r.node);
        let checked = r.covers.is_some();
        let mut failed: Option<RouterError> = None;
        let mut created = Vec::new();
        for info in &r.conns {
            let key = presence_key(&info.biz, &info.client);
            match self.inner.store.get(&key).await {
                Ok(Some(v)) if v.value.node == info.node && v.value.conn == info.conn => {
                    self.index_put(&v.value, v.revision);
                }
                Ok(Some(_)) => {
                    let close = NodeCommand::Close {
                        conn: info.conn,
                        code: CloseCode::Replaced.as_u16(),
                    };
                    let _ = self.inner.edges.send(&info.node, close).await;
                }
                Ok(None) => {
                    let value = presence_value(info);
                    match self.inner.store.create(&key, &value).await {
                        Ok(revision) => {
                            self.index_put(&value, revision);
                            if checked {
                                created.push(Created {
                                    info: info.clone(),
                                    key,
                                    revision,
                                });
                            } else {
                                // An edge from before reconciling.
                                *recreated += 1;
                                self.notify_online(info).await;
                                self.emit_online(&info.biz, &info.client, &info.node, info.conn);
                            }
                        }
                        Err(StoreError::WrongRevision) => {}
                        Err(e) => {
                            tracing::warn!(node_id = %r.node, error = %e, "resync write failed");
                            failed = Some(e.into());
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(node_id = %r.node, error = %e, "resync read failed");
                    failed = Some(e.into());
                    break;
                }
            }
        }
        let outcome = failed.map_or(Ok(()), Err);
        let Some(covers) = r.covers else {
            return outcome;
        };
        let listed: HashSet<u64> = r.conns.iter().map(|c| c.conn).collect();
        // Read before asking the node (see the module docs).
        let unlisted: Vec<_> = self
            .inner
            .index
            .lock()
            .node_entries(&r.node)
            .into_iter()
            .filter(|(_, _, e)| covers.contains(e.conn) && !listed.contains(&e.conn))
            .collect();
        if created.is_empty() && unlisted.is_empty() {
            return outcome;
        }
        let ask = created
            .iter()
            .map(|c| c.info.conn)
            .chain(unlisted.iter().map(|(_, _, e)| e.conn))
            .collect();
        let held: HashSet<u64> = match self.inner.edges.holds(&r.node, ask).await {
            Ok(held) => held.into_iter().collect(),
            Err(e) => {
                // Unconfirmed writes are withdrawn; the node retries the
                // chunk on 1500 and the retry asks again.
                tracing::warn!(node_id = %r.node, error = %e, "cannot confirm a resync with its node");
                for c in &created {
                    self.withdraw(c).await;
                }
                return Err(e.into());
            }
        };
        for c in &created {
            if held.contains(&c.info.conn) {
                *recreated += 1;
                self.notify_online(&c.info).await;
                self.emit_online(&c.info.biz, &c.info.client, &c.info.node, c.info.conn);
            } else {
                tracing::info!(node_id = %r.node, conn_id = c.info.conn, biz = %c.info.biz, client_id = %c.info.client, "resync asserted a connection its node no longer holds; withdrawn");
                self.withdraw(c).await;
            }
        }
        for (biz, client, entry) in unlisted {
            if !held.contains(&entry.conn) {
                self.remove_stale(&r.node, &biz, &client, &entry).await;
            }
        }
        outcome
    }

    /// Deletes an entry this resync wrote and never announced.
    async fn withdraw(&self, c: &Created) {
        match self.inner.store.delete(&c.key, c.revision).await {
            Ok(()) => self.index_delete(&c.info.biz, &c.info.client, c.revision),
            // Replaced or removed since: that write is the newer truth.
            Err(StoreError::WrongRevision) => {}
            Err(e) => {
                tracing::warn!(node_id = %c.info.node, conn_id = c.info.conn, error = %e, "cannot withdraw a resync entry");
            }
        }
    }

    /// Removes an entry of `node` that the node confirmed it does not hold,
    /// if it is still at the revision read before asking; announces
    /// `offline`.
    async fn remove_stale(&self, node: &str, biz: &str, client: &str, entry: &Entry) {
        let key = presence_key(biz, client);
        match self.inner.store.delete(&key, entry.revision).await {
            Ok(()) => {
                tracing::info!(node_id = %node, conn_id = entry.conn, biz = %biz, client_id = %client, "stale presence entry removed");
                self.index_delete(biz, client, entry.revision);
                self.emit_offline(biz, client, node, entry.conn, None);
                self.notify(PresenceEvent::Offline, biz, client, &entry.groups, None)
                    .await;
            }
            Err(StoreError::WrongRevision) => {
                // Written since we read it: never delete a write we did not
                // judge. Let the index catch up; the next check decides.
                if let Ok(v) = self.inner.store.get(&key).await {
                    match v {
                        Some(v) => self.index_put(&v.value, v.revision),
                        None => self.index_delete(biz, client, entry.revision),
                    }
                }
            }
            Err(e) => tracing::warn!(node_id = %node, error = %e, "cannot remove a stale entry"),
        }
    }

    /// Watches the key of a presence write whose outcome is unknown (the
    /// store timed out or failed: a JetStream leader election, no quorum).
    /// Such a write may still land once the store answers again, after the
    /// edge gave the connection up (1013) and its disconnect found nothing
    /// to delete: a ghost until a heartbeat audit, which runs at most every
    /// [`AUDIT_INTERVAL`] (issue 13 saw three with 2 of 3 NATS servers
    /// lost). So every [`LATE_CHECK_EVERY`], until the store has answered
    /// without it for [`LATE_CHECK_QUORUM_BACK`] (or holds another
    /// connection's entry): an entry of this connection its node does not
    /// hold is removed. At most [`LATE_CHECKS_MAX`] run at once; past that the
    /// audits find what they would have.
    pub(super) fn check_late_write(&self, info: &ConnInfo) {
        let running = &self.inner.late_checks;
        if running.fetch_add(1, Ordering::Relaxed) >= LATE_CHECKS_MAX {
            running.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let (router, info) = (self.clone(), info.clone());
        tokio::spawn(async move {
            let key = presence_key(&info.biz, &info.client);
            let deadline = tokio::time::Instant::now() + LATE_CHECK_FOR;
            // Since when the store has answered without our entry.
            let mut absent_since: Option<tokio::time::Instant> = None;
            while tokio::time::Instant::now() < deadline
                && absent_since.is_none_or(|t| t.elapsed() < LATE_CHECK_QUORUM_BACK)
            {
                tokio::time::sleep(LATE_CHECK_EVERY).await;
                let v = match router.inner.store.get(&key).await {
                    Ok(Some(v)) if v.value.node == info.node && v.value.conn == info.conn => v,
                    // Another connection's entry: a create of ours can no
                    // longer land.
                    Ok(Some(_)) => break,
                    Ok(None) => {
                        absent_since.get_or_insert_with(tokio::time::Instant::now);
                        continue;
                    }
                    Err(_) => {
                        absent_since = None;
                        continue;
                    }
                };
                match router.inner.edges.holds(&info.node, vec![info.conn]).await {
                    Ok(held) if held.contains(&info.conn) => break,
                    Ok(_) => {
                        let entry = Entry {
                            node: info.node.as_str().into(),
                            conn: info.conn,
                            groups: v.value.groups.iter().map(|g| g.as_str().into()).collect(),
                            revision: v.revision,
                        };
                        router.remove_stale(&info.node, &info.biz, &info.client, &entry).await;
                        break;
                    }
                    Err(_) => {}
                }
            }
            router.inner.late_checks.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Checks every entry of `node` against what the node holds and removes
    /// those it does not (the audit that heartbeats trigger).
    pub(super) async fn audit(&self, node: &str) {
        let entries = self.inner.index.lock().node_entries(node);
        if entries.is_empty() {
            return;
        }
        let ask = entries.iter().map(|(_, _, e)| e.conn).collect();
        let held: HashSet<u64> = match self.inner.edges.holds(node, ask).await {
            Ok(held) => held.into_iter().collect(),
            Err(e) => {
                tracing::debug!(node_id = %node, error = %e, "cannot audit a node's entries");
                return;
            }
        };
        for (biz, client, entry) in entries {
            if !held.contains(&entry.conn) {
                self.remove_stale(node, &biz, &client, &entry).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use switchboard_protocol::envelope::{ConnRange, Heartbeat};

    use super::*;
    use crate::core::testing::{disconnect, entry, info, online, router};

    /// Issue 9: a resync snapshot taken while A was connected, applied after
    /// A's disconnect, must not bring A back (nor announce it).
    #[tokio::test]
    async fn a_disconnect_beats_an_older_resync() {
        let (router, node, store) = router();
        let (a, peer) = (info("e1", 1, "a"), info("e2", 1, "peer"));
        node.held.lock().insert(1);
        router.connect(peer.clone()).await.expect("accepted");
        router.connect(a.clone()).await.expect("accepted");
        // The edge's snapshot for its resync, taken now...
        let snapshot = Resync {
            node: "e1".into(),
            conns: vec![a.clone()],
            covers: Some(ConnRange::ALL),
        };
        // ...then A leaves: the edge drops it, then its disconnect lands.
        node.held.lock().remove(&1);
        router.disconnect(disconnect(&a)).await.expect("accepted");
        assert_eq!(entry(&*store, "a").await, None);
        let before = node.notices_to("e2");
        assert_eq!(before.last(), Some(&("offline".to_owned(), "a".to_owned())));

        // The late snapshot.
        router.resync(snapshot).await.expect("accepted");
        assert_eq!(entry(&*store, "a").await, None, "the resync brought A back");
        assert!(!online(&router, "a"));
        assert_eq!(node.notices_to("e2"), before, "no notice, above all no false online");
        assert_eq!(entry(&*store, "peer").await, Some(("e2".into(), 1)));
    }

    /// A resync that (re)creates an entry of a connection its node still
    /// holds announces it, once confirmed.
    #[tokio::test]
    async fn a_resync_of_a_held_connection_restores_and_announces_it() {
        let (router, node, store) = router();
        let peer = info("e2", 1, "peer");
        router.connect(peer).await.expect("accepted");
        let before = node.notices_to("e2").len();
        node.held.lock().insert(4);
        let a = info("e1", 4, "a");
        let r = Resync {
            node: "e1".into(),
            conns: vec![a],
            covers: Some(ConnRange::ALL),
        };
        router.resync(r).await.expect("accepted");
        assert_eq!(entry(&*store, "a").await, Some(("e1".into(), 4)));
        assert!(online(&router, "a"));
        assert_eq!(node.notices_to("e2")[before..], [("online".to_owned(), "a".to_owned())]);
        // Applied again (a retry): nothing new to announce.
        let again = Resync {
            node: "e1".into(),
            conns: vec![info("e1", 4, "a")],
            covers: Some(ConnRange::ALL),
        };
        router.resync(again).await.expect("accepted");
        assert_eq!(node.notices_to("e2").len(), before + 1);
    }

    /// Entries of the node in the covered range that the resync does not
    /// list, and the node does not hold, are removed with an offline
    /// notice; held ones (still registering) and ones outside the range
    /// stay.
    #[tokio::test]
    async fn a_resync_removes_the_node_entries_it_does_not_list() {
        let (router, node, store) = router();
        router.connect(info("e2", 1, "peer")).await.expect("accepted");
        for (conn, client) in [(1, "gone"), (2, "kept"), (3, "registering"), (9, "outside")] {
            router.connect(info("e1", conn, client)).await.expect("accepted");
        }
        node.held.lock().extend([2, 3]);
        let r = Resync {
            node: "e1".into(),
            conns: vec![info("e1", 2, "kept")],
            covers: Some(ConnRange { from: 0, to: 5 }),
        };
        let before = node.notices_to("e2").len();
        router.resync(r).await.expect("accepted");
        assert_eq!(entry(&*store, "gone").await, None);
        assert!(!online(&router, "gone"));
        for c in ["kept", "registering", "outside"] {
            assert!(entry(&*store, c).await.is_some(), "{c} was removed");
            assert!(online(&router, c), "{c}");
        }
        assert_eq!(
            node.notices_to("e2")[before..],
            [("offline".to_owned(), "gone".to_owned())]
        );

        // A node with no connection left clears everything it had.
        node.held.lock().clear();
        let empty = Resync {
            node: "e1".into(),
            conns: vec![],
            covers: Some(ConnRange::ALL),
        };
        router.resync(empty).await.expect("accepted");
        for c in ["kept", "registering", "outside"] {
            assert_eq!(entry(&*store, c).await, None, "{c}");
        }
        assert_eq!(router.inner.index.lock().node_len("e1"), 0);
        assert_eq!(entry(&*store, "peer").await, Some(("e2".into(), 1)));
    }

    /// A stale entry is only removed at the revision read before asking the
    /// node: a connection of the same client that registers meanwhile stays.
    #[tokio::test]
    async fn a_stale_entry_rewritten_meanwhile_is_not_removed() {
        let (router, _node, store) = router();
        router.connect(info("e1", 1, "a")).await.expect("accepted");
        let (_, _, e) = router.inner.index.lock().node_entries("e1").remove(0);
        // A reconnects on the same node before the removal lands.
        router.connect(info("e1", 2, "a")).await.expect("accepted");
        router.remove_stale("e1", "b", "a", &e).await;
        assert_eq!(entry(&*store, "a").await, Some(("e1".into(), 2)));
        assert!(online(&router, "a"));
    }

    /// If the node cannot confirm, what the resync wrote is withdrawn and
    /// the node is told to retry (1500); nothing is removed either.
    #[tokio::test]
    async fn an_unconfirmed_resync_is_withdrawn_and_retried() {
        let (router, node, store) = router();
        router.connect(info("e2", 1, "peer")).await.expect("accepted");
        router.connect(info("e1", 1, "old")).await.expect("accepted");
        let before = node.notices_to("e2");
        node.mute(true);
        let r = Resync {
            node: "e1".into(),
            conns: vec![info("e1", 2, "new")],
            covers: Some(ConnRange::ALL),
        };
        assert!(matches!(router.resync(r.clone()).await, Err(RouterError::Node(_))));
        assert_eq!(entry(&*store, "new").await, None);
        assert!(entry(&*store, "old").await.is_some());
        assert_eq!(node.notices_to("e2"), before);

        node.mute(false);
        node.held.lock().insert(2);
        router.resync(r).await.expect("accepted");
        assert_eq!(entry(&*store, "new").await, Some(("e1".into(), 2)));
        assert_eq!(entry(&*store, "old").await, None);
    }

    /// A resync from an edge without `covers` behaves as before: it creates
    /// and announces, and reconciles nothing.
    #[tokio::test]
    async fn a_resync_without_covers_is_applied_as_before() {
        let (router, node, store) = router();
        router.connect(info("e2", 1, "peer")).await.expect("accepted");
        router.connect(info("e1", 1, "other")).await.expect("accepted");
        let r = Resync {
            node: "e1".into(),
            conns: vec![info("e1", 2, "a")],
            covers: None,
        };
        router.resync(r).await.expect("accepted");
        assert_eq!(entry(&*store, "a").await, Some(("e1".into(), 2)));
        assert!(entry(&*store, "other").await.is_some());
        assert!(node.notices_to("e2").contains(&("online".to_owned(), "a".to_owned())));
    }

    /// Heartbeats that report fewer connections than the index holds, a few
    /// in a row, have the node's entries checked: a ghost goes away without
    /// waiting for a resync.
    #[tokio::test]
    async fn heartbeats_below_the_index_count_trigger_an_audit() {
        let (router, node, store) = router();
        router.connect(info("e1", 1, "ghost")).await.expect("accepted");
        router.connect(info("e1", 2, "live")).await.expect("accepted");
        node.held.lock().insert(2);
        let hb = || Heartbeat {
            node: "e1".into(),
            conns: 1,
        };
        for _ in 1..AUDIT_BEATS {
            router.heartbeat(hb()).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(entry(&*store, "ghost").await.is_some(), "audited too early");
        router.heartbeat(hb()).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while entry(&*store, "ghost").await.is_some() {
            assert!(Instant::now() < deadline, "the ghost was not audited away");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(entry(&*store, "live").await.is_some());
        assert!(!online(&router, "ghost"));
    }
}
