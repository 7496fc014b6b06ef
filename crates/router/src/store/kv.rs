//! Presence and registered bizCodes in JetStream KV buckets: what routers
//! share. The watch feeds each router's index with every router's writes
//! and restarts itself when it fails or the NATS link comes back.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, Store, UpdateErrorKind};
use async_trait::async_trait;
use futures_util::StreamExt;
use switchboard_protocol::envelope::{self, PresenceValue};
use switchboard_runtime::nats::LinkState;
use tokio::sync::{mpsc, watch};

use super::seam::{PresenceStore, StoreError, Versioned, WatchEvent};

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Opens (creating or updating) one of our buckets: file storage, one
/// value per key, `replicas`, and removal markers that expire after
/// `marker_ttl` where given.
pub(super) async fn open_bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
    description: &str,
    replicas: usize,
    marker_ttl: Option<Duration>,
) -> Result<Store, StoreError> {
    let config = kv::Config {
        bucket: name.to_owned(),
        description: description.to_owned(),
        history: 1,
        num_replicas: replicas,
        storage: async_nats::jetstream::stream::StorageType::File,
        limit_markers: marker_ttl,
        ..Default::default()
    };
    js.create_or_update_key_value(config).await.map_err(unavailable)
}

/// Writes `bytes` under `key` if it is at `revision` (`None`: absent);
/// returns the new revision. The compare-and-set every bucket of ours uses.
pub(super) async fn cas_write(
    kv: &Store,
    key: &str,
    bytes: bytes::Bytes,
    revision: Option<u64>,
) -> Result<u64, StoreError> {
    match revision {
        None => kv.create(key, bytes).await.map_err(|e| match e.kind() {
            CreateErrorKind::AlreadyExists => StoreError::WrongRevision,
            _ => unavailable(e),
        }),
        Some(rev) => kv.update(key, bytes, rev).await.map_err(|e| match e.kind() {
            UpdateErrorKind::WrongLastRevision => StoreError::WrongRevision,
            _ => unavailable(e),
        }),
    }
}

/// Removes `key` if it is at `revision`, leaving a removal marker that
/// expires after `marker_ttl`.
pub(super) async fn cas_delete(kv: &Store, key: &str, revision: u64, marker_ttl: Duration) -> Result<(), StoreError> {
    kv.purge_expect_revision_with_ttl(key, revision, marker_ttl)
        .await
        .map_err(|e| match e.kind() {
            UpdateErrorKind::WrongLastRevision => StoreError::WrongRevision,
            _ => unavailable(e),
        })
}

/// Presence in a JetStream KV bucket.
#[derive(Debug, Clone)]
pub struct KvStore {
    kv: Store,
    marker_ttl: Duration,
    /// The NATS link: the watch is re-created as soon as the link is back.
    link: Option<watch::Receiver<(u64, LinkState)>>,
}

impl KvStore {
    /// Re-creates the watch at once whenever `link` comes back up. Without
    /// it, a watch whose consumer died with a NATS server restart is only
    /// noticed by the consumer's missed heartbeats, seconds later, and until
    /// then this router's index misses what other routers write (a new
    /// group member on another edge, so an offline notice that misses it).
    #[must_use]
    pub fn with_link(mut self, link: watch::Receiver<(u64, LinkState)>) -> Self {
        self.link = Some(link);
        self
    }

    /// Opens (creating or updating) the bucket `name` with `replicas`.
    /// Removal markers expire after `marker_ttl`, so clientIds that come and
    /// go do not grow the bucket forever.
    ///
    /// # Errors
    /// If JetStream is not available or refuses the bucket.
    pub async fn open(
        js: &async_nats::jetstream::Context,
        name: &str,
        replicas: usize,
        marker_ttl: Duration,
    ) -> Result<Self, StoreError> {
        let description = "Switchboard presence: <b64 bizCode>.<b64 clientId> -> connection";
        let kv = open_bucket(js, name, description, replicas, Some(marker_ttl)).await?;
        Ok(Self {
            kv,
            marker_ttl,
            link: None,
        })
    }
}

/// Resolves when `link` changes to [`LinkState::Up`] (a reconnect); never
/// without a link, or once the link is gone.
///
/// # Cancel safety
/// Cancel safe: `changed()` is, and nothing else awaits.
async fn reconnected(link: Option<&mut watch::Receiver<(u64, LinkState)>>) {
    let Some(link) = link else {
        return std::future::pending().await;
    };
    loop {
        if link.changed().await.is_err() {
            return std::future::pending().await;
        }
        if link.borrow_and_update().1 == LinkState::Up {
            return;
        }
    }
}

fn decode_value(bytes: &[u8]) -> Option<PresenceValue> {
    envelope::decode(bytes).ok()
}

#[async_trait]
impl PresenceStore for KvStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let Some(e) = self.kv.entry(key).await.map_err(unavailable)? else {
            return Ok(None);
        };
        match e.operation {
            Operation::Put => match decode_value(&e.value) {
                Some(value) => Ok(Some(Versioned {
                    value,
                    revision: e.revision,
                })),
                // Not ours to read (a bug, another writer): removed, so the
                // client's next connect can create its entry instead of
                // failing on "exists" forever.
                None => {
                    tracing::warn!(key, "undecodable presence entry removed");
                    self.delete(key, e.revision).await.or_else(|err| match err {
                        StoreError::WrongRevision => Ok(()),
                        other => Err(other),
                    })?;
                    Ok(None)
                }
            },
            Operation::Delete | Operation::Purge => Ok(None),
        }
    }

    async fn create(&self, key: &str, value: &PresenceValue) -> Result<u64, StoreError> {
        cas_write(&self.kv, key, envelope::encode(value).map_err(unavailable)?, None).await
    }

    async fn update(&self, key: &str, value: &PresenceValue, revision: u64) -> Result<u64, StoreError> {
        let bytes = envelope::encode(value).map_err(unavailable)?;
        cas_write(&self.kv, key, bytes, Some(revision)).await
    }

    async fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError> {
        cas_delete(&self.kv, key, revision, self.marker_ttl).await
    }

    async fn watch(&self) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        let empty = self.kv.status().await.map_err(unavailable)?.values() == 0;
        let first = self.kv.watch_with_history(">").await.map_err(unavailable)?;
        let (tx, rx) = mpsc::channel(4096);
        let kv = self.kv.clone();
        let mut link = self.link.clone();
        if let Some(l) = link.as_mut() {
            l.mark_unchanged();
        }
        tokio::spawn(async move {
            let mut ready = empty;
            if ready && tx.send(WatchEvent::Ready).await.is_err() {
                return;
            }
            let mut watch = Some(first);
            let mut restart_now = false;
            loop {
                // A watch that failed is never polled again (async-nats'
                // ordered consumer must not be polled after an error): it is
                // re-created, replaying current entries, which the index
                // applies idempotently by revision.
                let mut w = match watch.take() {
                    Some(w) => w,
                    None => {
                        if !std::mem::take(&mut restart_now) {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        if tx.is_closed() {
                            return;
                        }
                        match kv.watch_with_history(">").await {
                            Ok(w) => w,
                            Err(e) => {
                                tracing::warn!(error = %e, "presence watch cannot restart yet");
                                continue;
                            }
                        }
                    }
                };
                loop {
                    let item = tokio::select! {
                        item = w.next() => item,
                        () = reconnected(link.as_mut()) => {
                            tracing::info!("NATS link back, restarting the presence watch");
                            restart_now = true;
                            break;
                        }
                    };
                    let Some(item) = item else { break };
                    let entry = match item {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!(error = %e, "presence watch failed, restarting it");
                            break;
                        }
                    };
                    let event = match entry.operation {
                        Operation::Put => match decode_value(&entry.value) {
                            Some(value) => WatchEvent::Put {
                                key: entry.key,
                                value,
                                revision: entry.revision,
                            },
                            None => {
                                tracing::warn!(key = %entry.key, "undecodable presence entry ignored");
                                continue;
                            }
                        },
                        Operation::Delete | Operation::Purge => WatchEvent::Delete {
                            key: entry.key,
                            revision: entry.revision,
                        },
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                    if !ready && (entry.delta == 0 || entry.seen_current) {
                        ready = true;
                        if tx.send(WatchEvent::Ready).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}
