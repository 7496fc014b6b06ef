//! Operations behind the HTTP API: registration, group membership,
//! closing clients, online lists.

use switchboard_protocol::envelope::NodeCommand;
use switchboard_protocol::event::Cause;
use switchboard_protocol::frame::PresenceEvent;
use switchboard_protocol::subject::presence_key;
use switchboard_protocol::CloseCode;

use super::{Router, CAS_ATTEMPTS, MAX_GROUPS_PER_CLIENT};
use crate::error::RouterError;
use crate::store::StoreError;

impl Router {
    /// Registers a bizCode (idempotent).
    ///
    /// # Errors
    /// [`RouterError::Store`] if the registry fails.
    pub async fn register(&self, biz: &str) -> Result<(), RouterError> {
        self.inner.registry.register(biz).await.map_err(|e| {
            tracing::warn!(biz, error = %e, "registration failed");
            e.into()
        })
    }

    /// Whether a bizCode is registered.
    ///
    /// # Errors
    /// [`RouterError::Store`] if the registry fails.
    pub async fn is_registered(&self, biz: &str) -> Result<bool, RouterError> {
        self.inner.registry.is_registered(biz).await.map_err(|e| {
            tracing::warn!(biz, error = %e, "registry lookup failed");
            e.into()
        })
    }

    /// Adds (`join`) or removes a client's connection to/from a group: the
    /// presence entry first, then the client's edge; answered after both.
    ///
    /// An unbind of a client that is not connected removes the group from
    /// its bound groups (SPEC §7), and is [`RouterError::Offline`] only if
    /// it had no such bound group.
    ///
    /// # Errors
    /// [`RouterError::Offline`] if the client is not online (or its node no
    /// longer holds it), [`RouterError::TooManyGroups`] over
    /// [`MAX_GROUPS_PER_CLIENT`], otherwise the store or node failure.
    pub async fn set_group(&self, biz: &str, client: &str, group: &str, join: bool) -> Result<(), RouterError> {
        let key = presence_key(biz, client);
        let mut target = None;
        let mut written = None;
        for _ in 0..CAS_ATTEMPTS {
            let Some(v) = self.inner.store.get(&key).await? else {
                // Binding needs a connection (SPEC §7: 1004); unbinding a
                // client that is away still ends its bound group.
                return if join {
                    Err(RouterError::Offline)
                } else {
                    self.unbind_offline(biz, client, group).await
                };
            };
            let mut value = v.value.clone();
            let has = value.groups.iter().any(|g| g == group);
            let bound = value.bound.iter().any(|g| g == group);
            match (join, has) {
                (true, false) => {
                    if value.groups.len() >= MAX_GROUPS_PER_CLIENT {
                        return Err(RouterError::TooManyGroups(MAX_GROUPS_PER_CLIENT));
                    }
                    value.groups.push(group.to_owned());
                    value.bound.push(group.to_owned());
                }
                // Named by the connection and now bound to the client too.
                (true, true) if !bound => value.bound.push(group.to_owned()),
                (false, true) => {
                    value.groups.retain(|g| g != group);
                    value.bound.retain(|g| g != group);
                }
                _ => {
                    target = Some((value.node, value.conn));
                    break;
                }
            }
            match self.inner.store.update(&key, &value, v.revision).await {
                Ok(rev) => {
                    self.index_put(&value, rev);
                    target = Some((value.node.clone(), value.conn));
                    written = Some((value, rev));
                    break;
                }
                Err(StoreError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let Some((node, conn)) = target else {
            return Err(RouterError::Contended(CAS_ATTEMPTS));
        };
        let cmd = if join {
            NodeCommand::Bind {
                conn,
                group: group.to_owned(),
            }
        } else {
            NodeCommand::Unbind {
                conn,
                group: group.to_owned(),
            }
        };
        match self.inner.edges.request(&node, cmd).await {
            // The connection has it: now it belongs to the client, and a
            // connection that replaced it meanwhile gets it too.
            Ok(r) if r.found => {
                self.set_bound(biz, client, group, join).await?;
                if written.is_some() {
                    self.emit_membership(biz, client, group, join);
                }
                self.recheck_bind(biz, client, group, join, (&node, conn)).await;
                // With history on, the partition's writer indexes the change
                // between two planned entries before the call is answered:
                // a send after the answer is planned with it (seam 2).
                if let Some((value, rev)) = written {
                    if self.history_on(biz).await.unwrap_or(false) {
                        self.join(&value, rev).await?;
                    }
                }
                Ok(())
            }
            // The connection left meanwhile: an unbind still ends the bound
            // group, also for a connection that replaced it.
            Ok(_) if !join => {
                let result = self.unbind_offline(biz, client, group).await;
                if result.is_ok() && written.is_some() {
                    self.emit_membership(biz, client, group, false);
                }
                self.recheck_bind(biz, client, group, false, (&node, conn)).await;
                result
            }
            Ok(_) => Err(RouterError::Offline),
            Err(e) => {
                tracing::warn!(node_id = %node, error = %e, "bind/unbind not acknowledged");
                Err(e.into())
            }
        }
    }

    /// Closes a client's connection with 4000 wherever it is and removes
    /// its presence at once.
    ///
    /// # Errors
    /// [`RouterError::Offline`] if the client is not online (or its node no
    /// longer held it), otherwise the store or node failure.
    pub async fn close_client(&self, biz: &str, client: &str) -> Result<(), RouterError> {
        let key = presence_key(biz, client);
        let Some(v) = self.inner.store.get(&key).await? else {
            return Err(RouterError::Offline);
        };
        let cmd = NodeCommand::Close {
            conn: v.value.conn,
            code: CloseCode::ClosedByApi.as_u16(),
        };
        let found = match self.inner.edges.request(&v.value.node, cmd).await {
            Ok(r) => r.found,
            Err(e) => {
                tracing::warn!(node_id = %v.value.node, error = %e, "close not acknowledged");
                return Err(e.into());
            }
        };
        if self.inner.store.delete(&key, v.revision).await.is_ok() {
            self.index_delete(biz, client, v.revision);
            self.emit_offline(biz, client, &v.value.node, v.value.conn, Some(Cause::ApiClose));
            let groups = &v.value.groups;
            self.notify(PresenceEvent::Offline, biz, client, groups, None).await;
            if !v.value.bound.is_empty() || self.history_on(biz).await.unwrap_or(false) {
                self.left(biz, client).await;
            }
        }
        if found {
            Ok(())
        } else {
            Err(RouterError::Offline)
        }
    }

    /// clientIds online in `biz` (in `group`, if given), from the index.
    pub fn online_list(&self, biz: &str, group: Option<&str>) -> Vec<String> {
        let ix = self.inner.index.lock();
        match group {
            None => ix.clients(biz),
            Some(g) => {
                let mut v: Vec<String> = ix
                    .group(biz, g)
                    .map(|g| g.members.iter().map(|c| c.to_string()).collect())
                    .unwrap_or_default();
                v.sort_unstable();
                v
            }
        }
    }

    /// Groups of `biz` with member counts, from the index.
    pub fn all_groups(&self, biz: &str) -> Vec<(String, usize)> {
        self.inner.index.lock().groups(biz)
    }

    /// Nodes hosting clients of `biz`, each with how many, sorted by node
    /// id, from the index.
    pub fn node_counts(&self, biz: &str) -> Vec<(String, u32)> {
        let ix = self.inner.index.lock();
        let mut v: Vec<(String, u32)> = ix
            .biz_nodes(biz)
            .map(|(nodes, _)| nodes.iter().map(|(n, c)| (n.to_string(), *c)).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }
}
