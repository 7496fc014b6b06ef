//! The lease bucket (`<presence_bucket>-leases`): one key per partition
//! (`p<p>`, the lease) and one per router (`r.<enc(node id)>`, its
//! announcement), both with the bucket's `max_age` as their TTL. Every
//! write is a new message, which restarts the key's age. A lease is a hint
//! (`docs/recovery.md`, "The partition owner"): the fence entry in the log
//! is the authority, so nothing here needs to be exact, only cheap.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Store, UpdateErrorKind};
use async_nats::jetstream::Context;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use switchboard_protocol::ids;

/// Prefix of a partition's lease key.
const LEASE_PREFIX: &str = "p";
/// Prefix of a router's announcement key.
const ROUTER_PREFIX: &str = "r.";

/// The lease bucket's name for a presence bucket: `<presence_bucket>-leases`.
#[must_use]
pub fn bucket_name(presence_bucket: &str) -> String {
    format!("{presence_bucket}-leases")
}

/// The lease key of partition `p`: `p<p>`.
#[must_use]
pub fn lease_key(p: u32) -> String {
    format!("{LEASE_PREFIX}{p}")
}

/// The announcement key of router `node_id`: `r.<enc(node id)>`.
#[must_use]
pub fn router_key(node_id: &str) -> String {
    format!("{ROUTER_PREFIX}{}", ids::encode(node_id))
}

/// What a key of the bucket names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The lease of a partition.
    Lease(u32),
    /// A router's announcement (its encoded node id).
    Router(String),
    /// Something else (never written by us).
    Other,
}

/// Reads a key of the bucket back.
#[must_use]
pub fn parse_key(key: &str) -> Key {
    if let Some(enc) = key.strip_prefix(ROUTER_PREFIX) {
        return Key::Router(enc.to_owned());
    }
    match key.strip_prefix(LEASE_PREFIX).map(str::parse::<u32>) {
        Some(Ok(p)) if lease_key(p) == key => Key::Lease(p),
        _ => Key::Other,
    }
}

/// A lease's value, JSON so that `nats kv get` shows who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The holder's node id.
    pub owner: String,
    /// The last sequence the owner has dispatched, when it says (the
    /// dispatcher fills it in; `None` until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
}

/// Lease bucket failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The key is not at the revision given (or exists, for a create):
    /// someone else holds it.
    #[error("wrong last revision")]
    WrongRevision,
    /// The bucket could not be reached, or did not answer in time: the
    /// outcome is unknown.
    #[error("lease bucket unavailable: {0}")]
    Unavailable(String),
}

fn unavailable(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Unavailable(e.to_string())
}

/// What the bucket holds right now: the routers announced and the
/// partitions leased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Encoded node ids of the routers announced (this one included).
    pub routers: BTreeSet<String>,
    /// Partitions with a lease.
    pub leased: BTreeSet<u32>,
}

/// The lease bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LeaseBucket {
    js: Context,
    name: String,
    ttl: Duration,
    replicas: usize,
    kv: Store,
}

impl LeaseBucket {
    /// Opens the bucket `name` (creating or updating it): history 1,
    /// `max_age = ttl`, file storage, `replicas`.
    ///
    /// # Errors
    /// [`LeaseError::Unavailable`] if JetStream refuses or does not answer.
    pub async fn open(js: &Context, name: &str, ttl: Duration, replicas: usize) -> Result<Self, LeaseError> {
        let kv = Self::open_store(js, name, ttl, replicas).await?;
        Ok(Self {
            js: js.clone(),
            name: name.to_owned(),
            ttl,
            replicas,
            kv,
        })
    }

    async fn open_store(js: &Context, name: &str, ttl: Duration, replicas: usize) -> Result<Store, LeaseError> {
        let config = kv::Config {
            bucket: name.to_owned(),
            description: "Switchboard partition leases (p<p>) and router announcements (r.<b64 node id>)".to_owned(),
            history: 1,
            max_age: ttl,
            num_replicas: replicas.max(1),
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        js.create_or_update_key_value(config).await.map_err(unavailable)
    }

    /// Opens the bucket again (after it was lost and its operations fail).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub async fn reopen(&mut self) -> Result<(), LeaseError> {
        self.kv = Self::open_store(&self.js, &self.name, self.ttl, self.replicas).await?;
        Ok(())
    }

    /// Takes partition `p`'s lease for `value.owner` if nobody holds it;
    /// returns the revision held.
    ///
    /// # Errors
    /// [`LeaseError::WrongRevision`] when it is held.
    pub async fn acquire(&self, p: u32, value: &LeaseValue) -> Result<u64, LeaseError> {
        let bytes = encode(value)?;
        self.kv.create(lease_key(p), bytes).await.map_err(|e| match e.kind() {
            CreateErrorKind::AlreadyExists => LeaseError::WrongRevision,
            _ => unavailable(e),
        })
    }

    /// Renews partition `p`'s lease held at `revision`; returns the new one.
    ///
    /// # Errors
    /// [`LeaseError::WrongRevision`] when someone else wrote it since (or it
    /// expired and was taken).
    pub async fn renew(&self, p: u32, value: &LeaseValue, revision: u64) -> Result<u64, LeaseError> {
        let bytes = encode(value)?;
        self.kv
            .update(lease_key(p), bytes, revision)
            .await
            .map_err(|e| match e.kind() {
                UpdateErrorKind::WrongLastRevision => LeaseError::WrongRevision,
                _ => unavailable(e),
            })
    }

    /// Gives partition `p`'s lease up, if it is still at `revision`.
    ///
    /// # Errors
    /// [`LeaseError::WrongRevision`] when it is no longer ours.
    pub async fn release(&self, p: u32, revision: u64) -> Result<(), LeaseError> {
        self.kv
            .delete_expect_revision(lease_key(p), Some(revision))
            .await
            .map_err(|e| match e.kind() {
                UpdateErrorKind::WrongLastRevision => LeaseError::WrongRevision,
                _ => unavailable(e),
            })
    }

    /// Announces router `node_id` (a plain put: only it writes its key).
    ///
    /// # Errors
    /// [`LeaseError::Unavailable`].
    pub async fn announce(&self, node_id: &str) -> Result<(), LeaseError> {
        self.kv
            .put(router_key(node_id), bytes::Bytes::copy_from_slice(node_id.as_bytes()))
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Withdraws router `node_id`'s announcement (clean shutdown).
    ///
    /// # Errors
    /// [`LeaseError::Unavailable`].
    pub async fn withdraw(&self, node_id: &str) -> Result<(), LeaseError> {
        self.kv.delete(router_key(node_id)).await.map_err(unavailable)
    }

    /// The routers announced and the partitions leased (deleted and
    /// expired keys are absent).
    ///
    /// # Errors
    /// [`LeaseError::Unavailable`].
    pub async fn snapshot(&self) -> Result<Snapshot, LeaseError> {
        let keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let mut s = Snapshot::default();
        for k in keys {
            match parse_key(&k) {
                Key::Lease(p) => {
                    s.leased.insert(p);
                }
                Key::Router(r) => {
                    s.routers.insert(r);
                }
                Key::Other => {}
            }
        }
        Ok(s)
    }
}

fn encode(value: &LeaseValue) -> Result<bytes::Bytes, LeaseError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| LeaseError::Unavailable(format!("encoding a lease: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back() {
        assert_eq!(bucket_name("sb-presence"), "sb-presence-leases");
        assert_eq!(parse_key(&lease_key(7)), Key::Lease(7));
        assert_eq!(parse_key(&router_key("node-1")), Key::Router(ids::encode("node-1")));
        assert_eq!(parse_key("p07"), Key::Other);
        assert_eq!(parse_key("px"), Key::Other);
        assert_eq!(parse_key("other"), Key::Other);
    }

    #[test]
    fn lease_value_is_json_with_its_owner() {
        let v = LeaseValue {
            owner: "n1".into(),
            checkpoint: None,
        };
        assert_eq!(encode(&v).ok().as_deref(), Some(&br#"{"owner":"n1"}"#[..]));
    }
}
