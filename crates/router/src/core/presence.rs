//! Presence writes: a connection comes (replacing an older one of the
//! same bizCode+clientId), goes, or leaves with its draining node.
//!
//! Every write is a compare-and-set on the entry's store revision, so two
//! routers (or a late message) never overwrite a newer connection: a
//! connect re-reads and retries on a conflict, a disconnect only removes
//! the entry if it is still that connection's.

use std::sync::Arc;

use switchboard_protocol::envelope::{ConnInfo, Disconnect, NodeCommand, PresenceValue, Resync};
use switchboard_protocol::event::Cause;
use switchboard_protocol::frame::PresenceEvent;
use switchboard_protocol::subject::presence_key;
use switchboard_protocol::CloseCode;

use super::{presence_value, Connected, Router, CAS_ATTEMPTS};
use crate::error::RouterError;
use crate::index::Entry;
use crate::outbound::Origin;
use crate::store::{StoreError, Versioned};

impl Router {
    /// Registers a connection's presence, replacing (4009) an older
    /// connection of the same bizCode+clientId wherever it is, with the
    /// groups bound to the client added to those it named; answers the
    /// bound groups (SPEC §7), which its edge adds before the welcome, and
    /// with history on where the connection joined its bizCode's log.
    ///
    /// # Errors
    /// [`RouterError::Store`] if the store fails, [`RouterError::Contended`]
    /// if the entry kept changing.
    pub async fn connect(&self, mut info: ConnInfo) -> Result<Connected, RouterError> {
        self.heard(&info.node);
        let key = presence_key(&info.biz, &info.client);
        let mut value = presence_value(&info);
        // Create first (one round trip for a new client); on conflict read
        // the latest entry and replace it, compare-and-set on its revision.
        let mut current: Option<Versioned> = None;
        let mut written = None;
        for attempt in 0..CAS_ATTEMPTS {
            let result = if attempt == 0 {
                self.inner.store.create(&key, &value).await
            } else {
                match self.inner.store.get(&key).await {
                    Ok(None) => {
                        current = None;
                        self.inner.store.create(&key, &value).await
                    }
                    Ok(Some(v)) => {
                        let r = self.inner.store.update(&key, &value, v.revision).await;
                        current = Some(v);
                        r
                    }
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(rev) => {
                    written = Some(rev);
                    break;
                }
                Err(StoreError::WrongRevision) => continue,
                Err(e) => {
                    tracing::warn!(node_id = %info.node, conn_id = info.conn, biz = %info.biz, client_id = %info.client, error = %e, "presence write failed");
                    if matches!(e, StoreError::Unavailable(_)) {
                        self.check_late_write(&info);
                    }
                    return Err(e.into());
                }
            }
        }
        let Some(mut revision) = written else {
            return Err(RouterError::Contended(CAS_ATTEMPTS));
        };
        // Bound groups are read after the entry is written: a bind racing
        // this connect either wrote the record before this read, or reads
        // presence after our write and binds us itself (`recheck_bind`).
        let bound = match self.restore_bound(&info.biz, &info.client).await {
            Ok(bound) => bound,
            Err(e) => {
                // Not welcomed without its bound groups (SPEC §7): the entry
                // is taken back and the edge tries again (a KV leader
                // election, a store outage).
                tracing::warn!(biz = %info.biz, client_id = %info.client, error = %e, "bound groups not restored; connection refused");
                if self.inner.store.delete(&key, revision).await.is_ok() {
                    self.index_delete(&info.biz, &info.client, revision);
                }
                return Err(e);
            }
        };
        let bound = if bound.is_empty() {
            bound
        } else {
            let mut merged = info.clone();
            for g in &bound {
                if !merged.groups.contains(g) {
                    merged.groups.push(g.clone());
                }
            }
            let mut full = presence_value(&merged);
            full.bound.clone_from(&bound);
            match self.inner.store.update(&key, &full, revision).await {
                Ok(rev) => {
                    (info, value, revision) = (merged, full, rev);
                    bound
                }
                // Replaced by a newer connection meanwhile (its 4009 is on
                // the way; it restores the groups for itself), or the store
                // failed: this connection goes on without them.
                Err(e) => {
                    tracing::debug!(biz = %info.biz, client_id = %info.client, error = %e, "bound groups not added");
                    Vec::new()
                }
            }
        };
        // A first connection: the store held no entry before (a
        // replacement updated it, and is neither offline nor online).
        let first = current.is_none();
        let old = self.index_replace(&value, revision, current);
        if let Some(old) = old {
            if !(*old.node == *info.node && old.conn == info.conn) {
                let close = NodeCommand::Close {
                    conn: old.conn,
                    code: CloseCode::Replaced.as_u16(),
                };
                let _ = self.inner.edges.send(&old.node, close).await;
                let origin = Origin {
                    node: &old.node,
                    conn: old.conn,
                };
                self.notify(
                    PresenceEvent::Offline,
                    &info.biz,
                    &info.client,
                    &old.groups,
                    Some(origin),
                )
                .await;
            }
        }
        self.notify_online(&info).await;
        // After the index holds the connection (seam 2, docs/recovery.md).
        let history = match self.join(&value, revision).await {
            Ok(h) => h,
            Err(e) => {
                // No welcome without a log position (SPEC §7): the entry is
                // taken back and the edge closes with 1013, so the client
                // tries again (e.g. once a partition's new owner took over).
                tracing::warn!(biz = %info.biz, client_id = %info.client, error = %e, "cannot join the log; connection refused");
                if self.inner.store.delete(&key, revision).await.is_ok() {
                    self.index_delete(&info.biz, &info.client, revision);
                }
                return Err(e);
            }
        };
        if first {
            self.emit_online(&info.biz, &info.client, &info.node, info.conn);
        }
        Ok(Connected { groups: bound, history })
    }

    /// Online notices for a connection that just entered presence (not to
    /// the connection itself).
    pub(super) async fn notify_online(&self, info: &ConnInfo) {
        let origin = Origin {
            node: &info.node,
            conn: info.conn,
        };
        self.notify(
            PresenceEvent::Online,
            &info.biz,
            &info.client,
            &info.groups,
            Some(origin),
        )
        .await;
    }

    /// Applies our own write to the index and returns the entry it replaced
    /// (from the index, or from what the store held before the write).
    fn index_replace(&self, value: &PresenceValue, revision: u64, before: Option<Versioned>) -> Option<Entry> {
        let mut ix = self.inner.index.lock();
        let (_, old) = ix.put(value, revision);
        self.inner.metrics.presence_entries.set(ix.len() as i64);
        old.or_else(|| {
            before.map(|v| Entry {
                node: v.value.node.as_str().into(),
                conn: v.value.conn,
                groups: v.value.groups.iter().map(|g| Arc::from(g.as_str())).collect(),
                revision: v.revision,
            })
        })
    }

    /// Removes a connection's presence if the entry is still that
    /// connection's (a stale disconnect never removes a newer connection).
    /// Removing what is already gone succeeds.
    ///
    /// # Errors
    /// [`RouterError::Store`] if the store fails, [`RouterError::Contended`]
    /// if the entry kept changing.
    pub async fn disconnect(&self, d: Disconnect) -> Result<(), RouterError> {
        self.disconnect_for(d, None).await
    }

    /// [`disconnect`](Self::disconnect), its `offline` event saying
    /// `cause` when the router knows it.
    async fn disconnect_for(&self, d: Disconnect, cause: Option<Cause>) -> Result<(), RouterError> {
        let key = presence_key(&d.biz, &d.client);
        for _ in 0..CAS_ATTEMPTS {
            let current = match self.inner.store.get(&key).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(conn_id = d.conn, biz = %d.biz, client_id = %d.client, error = %e, "presence read failed");
                    return Err(e.into());
                }
            };
            let Some(v) = current else {
                return Ok(());
            };
            if v.value.node != d.node || v.value.conn != d.conn {
                return Ok(());
            }
            match self.inner.store.delete(&key, v.revision).await {
                Ok(()) => {
                    self.index_delete(&d.biz, &d.client, v.revision);
                    self.emit_offline(&d.biz, &d.client, &d.node, d.conn, cause);
                    let groups = &v.value.groups;
                    self.notify(PresenceEvent::Offline, &d.biz, &d.client, groups, None)
                        .await;
                    if !v.value.bound.is_empty() || self.history_on(&d.biz).await.unwrap_or(false) {
                        self.left(&d.biz, &d.client).await;
                    }
                    return Ok(());
                }
                Err(StoreError::WrongRevision) => continue,
                Err(e) => {
                    tracing::warn!(conn_id = d.conn, error = %e, "presence delete failed");
                    return Err(e.into());
                }
            }
        }
        Err(RouterError::Contended(CAS_ATTEMPTS))
    }

    /// A draining node's connections leave presence now (with offline
    /// notices), each only if the entry is still that connection's.
    ///
    /// # Errors
    /// The last failure, if a connection could not be removed (the others
    /// still are).
    pub async fn drain(&self, d: Resync) -> Result<(), RouterError> {
        let mut result = Ok(());
        for c in d.conns {
            let d = Disconnect {
                node: c.node,
                conn: c.conn,
                biz: c.biz,
                client: c.client,
            };
            if let Err(e) = self.disconnect_for(d, Some(Cause::Drain)).await {
                result = Err(e);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use parking_lot::Mutex;
    use switchboard_protocol::envelope::PresenceValue;
    use switchboard_protocol::CloseCode;
    use tokio::sync::mpsc;

    use super::*;
    use crate::core::testing::{disconnect, entry, info, online, router, router_on};
    use crate::store::{MemoryStore, PresenceStore, WatchEvent};

    /// A newer connection of the same bizCode+clientId wins, wherever it
    /// is: the entry is its, the older one is closed with 4009 and its
    /// group peers hear `offline` then `online`.
    #[tokio::test]
    async fn a_newer_connection_of_the_same_client_wins() {
        let (router, nodes, store) = router();
        router.connect(info("e2", 1, "peer")).await.expect("peer");
        nodes.sent.lock().clear();
        router.connect(info("e1", 1, "a")).await.expect("first");
        router.connect(info("e3", 5, "a")).await.expect("second");
        assert_eq!(entry(&*store, "a").await, Some(("e3".into(), 5)));
        assert_eq!(nodes.closes(), vec![("e1".to_owned(), 1, CloseCode::Replaced.as_u16())]);
        let said: Vec<_> = nodes.notices_to("e2").into_iter().map(|(e, _)| e).collect();
        assert_eq!(said, ["online", "offline", "online"]);
        // The same connection connecting again replaces nothing.
        router.connect(info("e3", 5, "a")).await.expect("again");
        assert_eq!(nodes.closes().len(), 1);
    }

    /// A disconnect of a connection that was since replaced leaves the
    /// newer entry (and says nothing); the current one's removes it.
    #[tokio::test]
    async fn a_stale_disconnect_does_not_remove_a_newer_entry() {
        let (router, nodes, store) = router();
        router.connect(info("e2", 1, "peer")).await.expect("peer");
        let (old, new) = (info("e1", 1, "a"), info("e1", 2, "a"));
        router.connect(old.clone()).await.expect("old");
        router.connect(new.clone()).await.expect("new");
        let before = nodes.notices_to("e2");
        router.disconnect(disconnect(&old)).await.expect("stale disconnect");
        assert_eq!(entry(&*store, "a").await, Some(("e1".into(), 2)));
        assert!(online(&router, "a"));
        assert_eq!(nodes.notices_to("e2"), before);

        router.disconnect(disconnect(&new)).await.expect("disconnect");
        assert_eq!(entry(&*store, "a").await, None);
        assert!(!online(&router, "a"));
        assert_eq!(
            nodes.notices_to("e2").last(),
            Some(&("offline".to_owned(), "a".to_owned()))
        );
        // Gone already: still fine.
        router.disconnect(disconnect(&new)).await.expect("twice");
    }

    /// A drain removes each listed connection only if the entry is still
    /// that connection's.
    #[tokio::test]
    async fn a_drain_removes_only_its_own_entries() {
        let (router, _nodes, store) = router();
        let (a, b) = (info("e1", 1, "a"), info("e1", 2, "b"));
        router.connect(a.clone()).await.expect("a");
        router.connect(b.clone()).await.expect("b");
        router.connect(info("e2", 9, "b")).await.expect("b elsewhere");
        let drain = Resync {
            node: "e1".into(),
            conns: vec![a, b],
            covers: None,
        };
        router.drain(drain).await.expect("drain");
        assert_eq!(entry(&*store, "a").await, None);
        assert_eq!(entry(&*store, "b").await, Some(("e2".into(), 9)));
    }

    /// A store where another writer replaces the entry right before each
    /// of our first `races` compare-and-set writes lands.
    struct Racing {
        store: MemoryStore,
        races: Mutex<usize>,
    }

    impl Racing {
        async fn race(&self, key: &str) {
            let rival = {
                let mut races = self.races.lock();
                if *races == 0 {
                    return;
                }
                *races -= 1;
                presence_value(&info("rival", 100 + *races as u64, "a"))
            };
            match self.store.get(key).await.expect("get") {
                Some(v) => self.store.update(key, &rival, v.revision).await.expect("rival update"),
                None => self.store.create(key, &rival).await.expect("rival create"),
            };
        }
    }

    #[async_trait]
    impl PresenceStore for Racing {
        async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
            self.store.get(key).await
        }
        async fn create(&self, key: &str, value: &PresenceValue) -> Result<u64, StoreError> {
            self.race(key).await;
            self.store.create(key, value).await
        }
        async fn update(&self, key: &str, value: &PresenceValue, revision: u64) -> Result<u64, StoreError> {
            self.race(key).await;
            self.store.update(key, value, revision).await
        }
        async fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError> {
            self.store.delete(key, revision).await
        }
        async fn watch(&self) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
            self.store.watch().await
        }
    }

    fn racing(races: usize) -> Arc<Racing> {
        Arc::new(Racing {
            store: MemoryStore::default(),
            races: Mutex::new(races),
        })
    }

    /// A connect that loses compare-and-set races re-reads and retries, and
    /// closes (4009) the connection that held the entry when it won; one
    /// that loses every attempt gives up with `Contended` and writes nothing.
    #[tokio::test]
    async fn a_connect_retries_lost_races_then_gives_up() {
        let store = racing(3);
        let (router, nodes) = router_on(store.clone());
        router
            .connect(info("e1", 1, "a"))
            .await
            .expect("connect after 3 lost races");
        assert_eq!(entry(&*store, "a").await, Some(("e1".into(), 1)));
        assert_eq!(
            nodes.closes(),
            vec![("rival".to_owned(), 100, CloseCode::Replaced.as_u16())]
        );

        let store = racing(CAS_ATTEMPTS);
        let (router, _) = router_on(store.clone());
        let e = router.connect(info("e1", 1, "a")).await.expect_err("every race lost");
        assert!(matches!(e, RouterError::Contended(CAS_ATTEMPTS)), "{e}");
        assert_eq!(entry(&*store, "a").await.map(|(node, _)| node), Some("rival".into()));
        assert!(!online(&router, "a"));
    }
}
