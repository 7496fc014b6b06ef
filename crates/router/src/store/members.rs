//! Durable group membership (SPEC §7): the groups bound to a
//! bizCode+clientId with `bind_to_group`, which outlive its connections,
//! and since when the client has been offline. Keyed like presence
//! ([`presence_key`]), in its own bucket so that presence keeps meaning
//! "a live connection" for every reader (older routers included).
//!
//! [`presence_key`]: switchboard_protocol::subject::presence_key

use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use switchboard_protocol::envelope;

use super::kv::{cas_delete, cas_write, open_bucket, unavailable};
use super::memory::CasMap;
use super::seam::StoreError;

/// What outlives a client's connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Groups bound with `bind_to_group`, in binding order.
    pub bound: Vec<String>,
    /// When the client went offline, ms since the epoch; `None` while it
    /// is online (or not yet seen to have left).
    #[serde(default)]
    pub offline_since: Option<u64>,
}

/// Membership records with compare-and-set, like presence.
#[async_trait]
pub trait MemberStore: Send + Sync + 'static {
    /// The record and its revision, `None` if absent.
    async fn get(&self, key: &str) -> Result<Option<(Membership, u64)>, StoreError>;
    /// Writes the record if it is still at `revision` (`None`: absent);
    /// returns the new revision.
    async fn put(&self, key: &str, m: &Membership, revision: Option<u64>) -> Result<u64, StoreError>;
    /// Removes the record if it is still at `revision`.
    async fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError>;
    /// Every key (for the sweeper).
    async fn keys(&self) -> Result<Vec<String>, StoreError>;
}

/// Membership in a JetStream KV bucket (routers).
#[derive(Debug, Clone)]
pub struct KvMembers {
    kv: Store,
    marker_ttl: Duration,
}

impl KvMembers {
    /// Opens (creating or updating) the bucket `name` with `replicas`;
    /// removal markers expire after `marker_ttl`.
    ///
    /// # Errors
    /// If JetStream is not available or refuses the bucket.
    pub async fn open(
        js: &async_nats::jetstream::Context,
        name: &str,
        replicas: usize,
        marker_ttl: Duration,
    ) -> Result<Self, StoreError> {
        let description = "Switchboard durable membership: <b64 bizCode>.<b64 clientId> -> bound groups";
        let kv = open_bucket(js, name, description, replicas, Some(marker_ttl)).await?;
        Ok(Self { kv, marker_ttl })
    }
}

#[async_trait]
impl MemberStore for KvMembers {
    async fn get(&self, key: &str) -> Result<Option<(Membership, u64)>, StoreError> {
        let Some(e) = self.kv.entry(key).await.map_err(unavailable)? else {
            return Ok(None);
        };
        match e.operation {
            Operation::Put => match envelope::decode::<Membership>(&e.value) {
                Ok(m) => Ok(Some((m, e.revision))),
                Err(err) => {
                    // Not ours to read: treated as no record, and replaced
                    // by the next write (compare-and-set on its revision).
                    tracing::warn!(key, error = %err, "undecodable membership record ignored");
                    Ok(Some((Membership::default(), e.revision)))
                }
            },
            Operation::Delete | Operation::Purge => Ok(None),
        }
    }

    async fn put(&self, key: &str, m: &Membership, revision: Option<u64>) -> Result<u64, StoreError> {
        cas_write(&self.kv, key, envelope::encode(m).map_err(unavailable)?, revision).await
    }

    async fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError> {
        cas_delete(&self.kv, key, revision, self.marker_ttl).await
    }

    async fn keys(&self) -> Result<Vec<String>, StoreError> {
        match self.kv.keys().await {
            Ok(keys) => keys.try_collect().await.map_err(unavailable),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// Membership in memory, for `standalone`.
#[derive(Debug, Default)]
pub struct MemoryMembers {
    map: CasMap<Membership>,
}

#[async_trait]
impl MemberStore for MemoryMembers {
    async fn get(&self, key: &str) -> Result<Option<(Membership, u64)>, StoreError> {
        Ok(self.map.get(key))
    }

    async fn put(&self, key: &str, m: &Membership, revision: Option<u64>) -> Result<u64, StoreError> {
        self.map.put(key, m, revision)
    }

    async fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError> {
        self.map.delete(key, revision)
    }

    async fn keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.map.keys())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_members_compare_and_set() {
        let s = MemoryMembers::default();
        let m = Membership {
            bound: vec!["g".into()],
            offline_since: None,
        };
        let r1 = s.put("k", &m, None).await.unwrap_or_default();
        assert!(matches!(s.put("k", &m, None).await, Err(StoreError::WrongRevision)));
        let r2 = s.put("k", &Membership::default(), Some(r1)).await.unwrap_or_default();
        assert!(r2 > r1);
        assert!(matches!(s.delete("k", r1).await, Err(StoreError::WrongRevision)));
        assert!(s.delete("k", r2).await.is_ok());
        assert!(matches!(s.get("k").await, Ok(None)));
        assert!(s.keys().await.is_ok_and(|k| k.is_empty()));
    }
}
