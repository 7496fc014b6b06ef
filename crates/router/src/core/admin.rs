//! Operations behind the HTTP API: registration, group membership,
//! closing clients, online lists.

use super::*;

impl Router {
    /// Registers a bizCode.
    pub async fn register(&self, biz: &str) -> Result<(), ErrorCode> {
        self.inner.registry.register(biz).await.map_err(|e| {
            tracing::warn!(biz, error = %e, "registration failed");
            ErrorCode::Internal
        })
    }

    /// Whether a bizCode is registered.
    pub async fn is_registered(&self, biz: &str) -> Result<bool, ErrorCode> {
        self.inner.registry.is_registered(biz).await.map_err(|e| {
            tracing::warn!(biz, error = %e, "registry lookup failed");
            ErrorCode::Internal
        })
    }

    /// Adds (`join`) or removes a client's connection to/from a group: the
    /// presence entry first, then the client's edge; answered after both.
    pub async fn set_group(&self, biz: &str, client: &str, group: &str, join: bool) -> Result<(), ErrorCode> {
        let key = presence_key(biz, client);
        let mut target = None;
        for _ in 0..CAS_ATTEMPTS {
            let Some(v) = self.inner.store.get(&key).await.map_err(|_| ErrorCode::Internal)? else {
                return Err(ErrorCode::Offline);
            };
            let mut value = v.value.clone();
            let has = value.groups.iter().any(|g| g == group);
            match (join, has) {
                (true, false) => {
                    if value.groups.len() >= MAX_GROUPS_PER_CLIENT {
                        return Err(ErrorCode::InvalidFrame);
                    }
                    value.groups.push(group.to_owned());
                }
                (false, true) => value.groups.retain(|g| g != group),
                _ => {
                    target = Some((value.node, value.conn));
                    break;
                }
            }
            match self.inner.store.update(&key, &value, v.revision).await {
                Ok(rev) => {
                    self.index_put(&value, rev);
                    target = Some((value.node, value.conn));
                    break;
                }
                Err(StoreError::WrongRevision) => continue,
                Err(_) => return Err(ErrorCode::Internal),
            }
        }
        let Some((node, conn)) = target else {
            return Err(ErrorCode::Internal);
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
            Ok(r) if r.found => Ok(()),
            Ok(_) => Err(ErrorCode::Offline),
            Err(e) => {
                tracing::warn!(node_id = %node, error = %e, "bind/unbind not acknowledged");
                Err(ErrorCode::Internal)
            }
        }
    }

    /// Closes a client's connection with 4000 wherever it is and removes
    /// its presence at once.
    pub async fn close_client(&self, biz: &str, client: &str) -> Result<(), ErrorCode> {
        let key = presence_key(biz, client);
        let Some(v) = self.inner.store.get(&key).await.map_err(|_| ErrorCode::Internal)? else {
            return Err(ErrorCode::Offline);
        };
        let cmd = NodeCommand::Close {
            conn: v.value.conn,
            code: CloseCode::ClosedByApi.as_u16(),
        };
        let found = match self.inner.edges.request(&v.value.node, cmd).await {
            Ok(r) => r.found,
            Err(e) => {
                tracing::warn!(node_id = %v.value.node, error = %e, "close not acknowledged");
                return Err(ErrorCode::Internal);
            }
        };
        if self.inner.store.delete(&key, v.revision).await.is_ok() {
            self.index_delete(biz, client, v.revision);
            let groups = &v.value.groups;
            self.notify(PresenceEvent::Offline, biz, client, groups, None).await;
        }
        if found {
            Ok(())
        } else {
            Err(ErrorCode::Offline)
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
}
