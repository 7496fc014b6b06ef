//! Durable group membership (SPEC §7): groups bound with `bind_to_group`
//! belong to bizCode+clientId. They are restored when the client connects
//! again (on any edge), until they are unbound or the client has been
//! offline for longer than `membership.ttl`.
//!
//! The record ([`Membership`]) lives in its own store, keyed like presence.
//! Presence entries name which of their groups are bound
//! ([`PresenceValue::bound`]), so a departure touches the record only for
//! clients that have bound groups. Paths that remove presence without that
//! knowledge (a purged node, a stale entry) are caught up by the sweeper:
//! a record with no offline stamp and no presence entry is stamped then,
//! so its countdown starts up to one sweep late.
//!
//! [`PresenceValue::bound`]: switchboard_protocol::envelope::PresenceValue

use std::time::Duration;

use switchboard_protocol::envelope::NodeCommand;
use switchboard_protocol::subject::{parse_presence_key, presence_key};
use switchboard_runtime::now_ms;
use tokio_util::sync::CancellationToken;

use super::{Router, CAS_ATTEMPTS, MAX_GROUPS_PER_CLIENT};
use crate::error::RouterError;
use crate::store::{Membership, StoreError};

impl Router {
    /// Whether a record stamped offline at `since` has outlived
    /// `membership.ttl`.
    fn expired(&self, since: u64) -> bool {
        let ttl = u64::try_from(self.inner.config.membership.ttl.as_millis()).unwrap_or(u64::MAX);
        now_ms().saturating_sub(since) >= ttl
    }

    /// Whether a client offline since `since` still gets its unicasts
    /// stored (`history.ttl`).
    fn history_keeps(&self, since: u64) -> bool {
        self.inner.history.as_ref().is_some_and(|h| {
            let ttl = u64::try_from(h.config().ttl.as_millis()).unwrap_or(u64::MAX);
            now_ms().saturating_sub(since) < ttl
        })
    }

    /// The groups bound to a client that is connecting now; clears its
    /// offline stamp. An expired record is removed and yields none.
    ///
    /// # Errors
    /// [`RouterError::Store`] if the store fails, [`RouterError::Contended`]
    /// if the record kept changing.
    pub(super) async fn restore_bound(&self, biz: &str, client: &str) -> Result<Vec<String>, RouterError> {
        let key = presence_key(biz, client);
        let members = &self.inner.members;
        // With history on the record stays while the client is online (it
        // is made now if absent): a unicast in the moment between its
        // presence entry leaving and the offline stamp is still stored for
        // it (SPEC §7), however fast it reconnects.
        let keep = self.history_on(biz).await.unwrap_or(false);
        for _ in 0..CAS_ATTEMPTS {
            let Some((m, rev)) = members.get(&key).await? else {
                if !keep {
                    return Ok(Vec::new());
                }
                return match members.put(&key, &Membership::default(), None).await {
                    Ok(_) => Ok(Vec::new()),
                    Err(StoreError::WrongRevision) => continue,
                    Err(e) => Err(e.into()),
                };
            };
            let Some(since) = m.offline_since else {
                return Ok(m.bound);
            };
            let expired = self.expired(since);
            let written = if (expired || m.bound.is_empty()) && !keep {
                members.delete(&key, rev).await.map(|()| Vec::new())
            } else {
                let bound = if expired { Vec::new() } else { m.bound };
                let online = Membership {
                    bound: bound.clone(),
                    offline_since: None,
                };
                members.put(&key, &online, Some(rev)).await.map(|_| bound)
            };
            match written {
                Ok(restored) => return Ok(restored),
                Err(StoreError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RouterError::Contended(CAS_ATTEMPTS))
    }

    /// After a bind or unbind changed the record: if presence now holds a
    /// connection other than `applied` (one that connected meanwhile and
    /// may have read the record before the change), the change is applied
    /// to it too. A connect reads the record after its presence write, so
    /// one of the two always sees the other.
    pub(super) async fn recheck_bind(&self, biz: &str, client: &str, group: &str, join: bool, applied: (&str, u64)) {
        let key = presence_key(biz, client);
        for _ in 0..CAS_ATTEMPTS {
            let Ok(Some(v)) = self.inner.store.get(&key).await else {
                return;
            };
            if v.value.node == applied.0 && v.value.conn == applied.1 {
                return;
            }
            let mut value = v.value.clone();
            let has = value.groups.iter().any(|g| g == group);
            match (join, has) {
                (true, false) if value.groups.len() < MAX_GROUPS_PER_CLIENT => {
                    value.groups.push(group.to_owned());
                    value.bound.push(group.to_owned());
                }
                (false, true) if value.bound.iter().any(|g| g == group) => {
                    value.groups.retain(|g| g != group);
                    value.bound.retain(|g| g != group);
                }
                _ => return,
            }
            match self.inner.store.update(&key, &value, v.revision).await {
                Ok(rev) => {
                    self.index_put(&value, rev);
                    let cmd = if join {
                        NodeCommand::Bind {
                            conn: value.conn,
                            group: group.to_owned(),
                        }
                    } else {
                        NodeCommand::Unbind {
                            conn: value.conn,
                            group: group.to_owned(),
                        }
                    };
                    let _ = self.inner.edges.request(&value.node, cmd).await;
                    return;
                }
                Err(StoreError::WrongRevision) => continue,
                Err(_) => return,
            }
        }
    }

    /// Binds (`join`) or unbinds `group` in the client's record; answers
    /// whether the record changed.
    ///
    /// # Errors
    /// As [`Router::restore_bound`].
    pub(super) async fn set_bound(
        &self,
        biz: &str,
        client: &str,
        group: &str,
        join: bool,
    ) -> Result<bool, RouterError> {
        let key = presence_key(biz, client);
        let members = &self.inner.members;
        for _ in 0..CAS_ATTEMPTS {
            let current = members.get(&key).await?;
            let (mut m, rev) = match current {
                Some((m, rev)) => (m, Some(rev)),
                None if join => (Membership::default(), None),
                None => return Ok(false),
            };
            let has = m.bound.iter().any(|g| g == group);
            let written = match (join, has) {
                (true, true) | (false, false) => return Ok(false),
                (true, false) => {
                    if m.bound.len() >= MAX_GROUPS_PER_CLIENT {
                        return Err(RouterError::TooManyGroups(MAX_GROUPS_PER_CLIENT));
                    }
                    m.bound.push(group.to_owned());
                    members.put(&key, &m, rev).await.map(|_| ())
                }
                (false, true) => {
                    m.bound.retain(|g| g != group);
                    match rev {
                        Some(rev) if m.bound.is_empty() => members.delete(&key, rev).await,
                        _ => members.put(&key, &m, rev).await.map(|_| ()),
                    }
                }
            };
            match written {
                Ok(()) => return Ok(true),
                Err(StoreError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RouterError::Contended(CAS_ATTEMPTS))
    }

    /// Unbinds `group` from a client that is not connected: its record
    /// only. [`RouterError::Offline`] if the record did not have it.
    pub(super) async fn unbind_offline(&self, biz: &str, client: &str, group: &str) -> Result<(), RouterError> {
        if self.set_bound(biz, client, group, false).await? {
            Ok(())
        } else {
            Err(RouterError::Offline)
        }
    }

    /// Stamps the record of a client whose connection just left presence,
    /// unless it is connected again; with history on a record is made if
    /// there is none, so unicasts to the client are stored for
    /// `history.ttl` (SPEC §7). Best effort: the sweeper catches up on a
    /// failure.
    pub(super) async fn left(&self, biz: &str, client: &str) {
        let key = presence_key(biz, client);
        if let Err(e) = self.stamp_offline(&key).await {
            tracing::debug!(biz, client_id = client, error = %e, "cannot stamp a bound client offline; the sweeper will");
        }
    }

    async fn stamp_offline(&self, key: &str) -> Result<(), RouterError> {
        for _ in 0..CAS_ATTEMPTS {
            let (m, rev) = match self.inner.members.get(key).await? {
                Some((m, rev)) => (m, Some(rev)),
                // No bound groups: recorded for history's sake only.
                None if self.inner.history.is_some() => (Membership::default(), None),
                None => return Ok(()),
            };
            if m.offline_since.is_some() || self.inner.store.get(key).await?.is_some() {
                return Ok(());
            }
            let offline = Membership {
                bound: m.bound,
                offline_since: Some(now_ms()),
            };
            match self.inner.members.put(key, &offline, rev).await {
                Ok(_) => return Ok(()),
                Err(StoreError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RouterError::Contended(CAS_ATTEMPTS))
    }

    /// Sweeps membership records every quarter of `membership.ttl` (at
    /// least every second, at most every 30 s) until `shutdown`.
    pub fn spawn_member_sweeper(&self, shutdown: CancellationToken) {
        let router = self.clone();
        let every = (self.inner.config.membership.ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = router.sweep().await {
                    tracing::debug!(error = %e, "membership sweep incomplete");
                }
            }
        });
    }

    /// One pass: removes expired records, stamps those whose client left
    /// unseen, clears the stamp of those whose client is back. Whether a
    /// client is online comes from this router's index; the store is read
    /// only to confirm before a record is stamped or removed. Every write
    /// is a compare-and-set, so routers sweeping at once do no harm. A
    /// record that fails is skipped (the next pass retries it); the pass
    /// reports the last failure.
    pub(super) async fn sweep(&self) -> Result<(), RouterError> {
        let members = &self.inner.members;
        let mut failed = None;
        for key in members.keys().await? {
            if let Err(e) = self.sweep_one(&key).await {
                failed = Some(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn sweep_one(&self, key: &str) -> Result<(), RouterError> {
        let members = &self.inner.members;
        let Some((m, rev)) = members.get(key).await? else {
            return Ok(());
        };
        let indexed =
            parse_presence_key(key).is_some_and(|(biz, client)| self.inner.index.lock().get(&biz, &client).is_some());
        let write = match (m.offline_since, indexed) {
            (None, true) => return Ok(()),
            (Some(since), false) if !(self.expired(since) || m.bound.is_empty()) => return Ok(()),
            // Bound groups expired (or none), but history still stores
            // unicasts for the client: keep the stamp, drop the groups.
            (Some(since), false) if self.history_keeps(since) => {
                if m.bound.is_empty() || self.inner.store.get(key).await?.is_some() {
                    return Ok(());
                }
                let stamped = Membership {
                    bound: Vec::new(),
                    offline_since: Some(since),
                };
                members.put(key, &stamped, Some(rev)).await.map(|_| ())
            }
            (Some(_), true) => {
                let back = Membership {
                    bound: m.bound,
                    offline_since: None,
                };
                members.put(key, &back, Some(rev)).await.map(|_| ())
            }
            // Not in our index: confirm with the store before a stamp or
            // a removal (the index may lag another router's write).
            (offline, false) => {
                if self.inner.store.get(key).await?.is_some() {
                    return Ok(());
                }
                if offline.is_some() {
                    members.delete(key, rev).await
                } else {
                    let stamped = Membership {
                        bound: m.bound,
                        offline_since: Some(now_ms()),
                    };
                    members.put(key, &stamped, Some(rev)).await.map(|_| ())
                }
            }
        };
        match write {
            Ok(()) | Err(StoreError::WrongRevision) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{info, router, router_on, Gated};

    #[tokio::test]
    async fn bound_groups_come_back_with_the_next_connection_until_unbound() {
        let (r, _nodes, _store) = router();
        assert!(r.connect(info("n1", 1, "a")).await.is_ok());
        assert!(r.set_group("b", "a", "room", true).await.is_ok());
        let gone = switchboard_protocol::envelope::Disconnect {
            node: "n1".into(),
            conn: 1,
            biz: "b".into(),
            client: "a".into(),
        };
        assert!(r.disconnect(gone).await.is_ok());
        let m = r.inner.members.get(&presence_key("b", "a")).await.ok().flatten();
        assert!(m.is_some_and(|(m, _)| m.offline_since.is_some()), "stamped offline");
        let bound = r
            .connect(info("n2", 2, "a"))
            .await
            .map(|c| c.groups)
            .unwrap_or_default();
        assert_eq!(bound, vec!["room".to_owned()]);
        assert_eq!(r.online_list("b", Some("room")), vec!["a".to_owned()]);
        assert_eq!(r.online_list("b", Some("g")), vec!["a".to_owned()]);
        assert!(r.set_group("b", "a", "room", false).await.is_ok());
        assert!(r
            .inner
            .members
            .get(&presence_key("b", "a"))
            .await
            .ok()
            .flatten()
            .is_none());
    }

    #[tokio::test]
    async fn the_sweeper_stamps_unseen_departures_and_removes_expired_records() {
        let (r, _nodes, _store) = router();
        let key = presence_key("b", "z");
        let m = Membership {
            bound: vec!["g".into()],
            offline_since: None,
        };
        assert!(r.inner.members.put(&key, &m, None).await.is_ok());
        assert!(r.sweep().await.is_ok());
        let stamped = r.inner.members.get(&key).await.ok().flatten();
        assert!(stamped.as_ref().is_some_and(|(m, _)| m.offline_since.is_some()));
        // Backdate the stamp past the ttl.
        if let Some((_, rev)) = stamped {
            let old = Membership {
                bound: vec!["g".into()],
                offline_since: Some(1),
            };
            assert!(r.inner.members.put(&key, &old, Some(rev)).await.is_ok());
        }
        assert!(r.sweep().await.is_ok());
        assert!(r.inner.members.get(&key).await.ok().flatten().is_none());
    }

    /// Review finding: an unbind that lands while the client reconnects
    /// (after the new connection read the record, before its presence
    /// write) must not leave the new connection in the group.
    #[tokio::test]
    async fn an_unbind_during_a_reconnect_reaches_the_new_connection() {
        let store = Gated::new();
        let (r, _nodes) = router_on(store.clone());
        assert!(r.connect(info("e1", 1, "a")).await.is_ok());
        assert!(r.set_group("b", "a", "room", true).await.is_ok());
        store.hold(true, 2);
        let r2 = r.clone();
        let y = tokio::spawn(async move { r2.connect(info("e2", 2, "a")).await });
        store.held().await;
        assert!(r.set_group("b", "a", "room", false).await.is_ok());
        store.go();
        let bound = y.await.ok().and_then(Result::ok).map(|c| c.groups).unwrap_or_default();
        assert!(bound.is_empty(), "the new connection restored {bound:?}");
        assert!(r.online_list("b", Some("room")).is_empty());
    }

    /// Review finding: a bind that lands while the client reconnects must
    /// reach the new connection.
    #[tokio::test]
    async fn a_bind_during_a_reconnect_reaches_the_new_connection() {
        let store = Gated::new();
        let (r, _nodes) = router_on(store.clone());
        assert!(r.connect(info("e1", 1, "a")).await.is_ok());
        store.hold(false, 2);
        let r2 = r.clone();
        let y = tokio::spawn(async move { r2.connect(info("e2", 2, "a")).await });
        store.held().await;
        assert!(r.set_group("b", "a", "room", true).await.is_ok());
        store.go();
        let bound = y.await.ok().and_then(Result::ok).map(|c| c.groups).unwrap_or_default();
        assert_eq!(bound, vec!["room".to_owned()]);
        assert_eq!(r.online_list("b", Some("room")), vec!["a".to_owned()]);
    }
}
