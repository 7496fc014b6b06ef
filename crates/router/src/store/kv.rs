//! Presence and registered bizCodes in JetStream KV buckets: what routers
//! share. The watch feeds each router's index with every router's writes
//! and restarts itself when it fails or the NATS link comes back.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, Store, UpdateErrorKind};
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::ErrorCode;
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

/// How often a quiet presence watch is checked for a stall.
const STALL_PROBE: Duration = Duration::from_secs(5);
/// Probes in a row that must find the same undelivered entry before the
/// watch is called stalled (so 15 s without any delivery).
const STALL_PROBES: u32 = 3;

/// Finds a presence watch that stopped delivering without failing.
///
/// async-nats' ordered consumer re-creates itself after a gap or missed
/// heartbeats, but one re-created while the stream had no quorum was seen
/// to deliver nothing afterwards (issue 13: a router kept routing unicasts
/// to a connection replaced meanwhile until its next NATS reconnect). A
/// watch that delivered nothing since the last probe is asked whether the
/// stream holds an entry after the last one it delivered; the same
/// undelivered entry on [`STALL_PROBES`] probes in a row is a stall. A
/// watch that is merely slow keeps delivering and is never called stalled;
/// a quiet bucket costs one stream read per probe.
#[derive(Debug, Default)]
struct Stall {
    /// The highest revision (stream sequence) this watch delivered.
    last_seen: u64,
    /// `last_seen` at the previous probe.
    seen_at_probe: u64,
    /// The first undelivered sequence the previous probe found.
    pending: Option<u64>,
    /// Probes in a row that found `pending` undelivered.
    count: u32,
}

impl Stall {
    /// Whether the watch is stalled, after one probe.
    async fn probe(&mut self, kv: &Store) -> bool {
        if self.last_seen != self.seen_at_probe {
            self.seen_at_probe = self.last_seen;
            self.pending = None;
            self.count = 0;
            return false;
        }
        let subjects = format!("{}>", kv.prefix);
        let next = tokio::time::timeout(
            STALL_PROBE,
            kv.stream.get_first_raw_message_by_subject(subjects, self.last_seen + 1),
        )
        .await;
        let seq = match next {
            Ok(Ok(m)) => m.sequence,
            // Nothing after it (or the stream cannot say now: the watch's
            // own errors and the link's reconnects handle an outage).
            _ => {
                self.pending = None;
                self.count = 0;
                return false;
            }
        };
        if self.pending == Some(seq) {
            self.count += 1;
        } else {
            self.pending = Some(seq);
            self.count = 1;
        }
        self.count >= STALL_PROBES
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

/// Whether the bucket holds no message now. (`Store::status` answers
/// from the stream information cached when the bucket was opened, so a
/// watch restarted later would take a filled bucket for an empty one.)
async fn bucket_empty(kv: &Store) -> Result<bool, StoreError> {
    let mut stream = kv.stream.clone();
    let info = stream.info().await.map_err(unavailable)?;
    Ok(info.state.messages == 0)
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

    async fn head(&self) -> Result<Option<u64>, StoreError> {
        let mut stream = self.kv.stream.clone();
        let info = stream.info().await.map_err(unavailable)?;
        Ok(Some(info.state.last_sequence))
    }

    async fn next_revision(&self, after: u64) -> Result<Option<u64>, StoreError> {
        let subjects = format!("{}>", self.kv.prefix);
        match self
            .kv
            .stream
            .get_first_raw_message_by_subject(subjects, after.saturating_add(1))
            .await
        {
            Ok(m) => Ok(Some(m.sequence)),
            Err(e) => match e.kind() {
                RawMessageErrorKind::NoMessageFound => Ok(None),
                RawMessageErrorKind::JetStream(api) if api.error_code() == ErrorCode::NO_MESSAGE_FOUND => Ok(None),
                _ => Err(unavailable(e)),
            },
        }
    }

    async fn watch(&self) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        let empty = bucket_empty(&self.kv).await?;
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
                            Ok(w) => {
                                tracing::info!("presence watch restarted, replaying current entries");
                                // An empty bucket replays nothing to say
                                // the watch caught up.
                                let empty = bucket_empty(&kv).await.unwrap_or(false);
                                if empty && !ready {
                                    ready = true;
                                    if tx.send(WatchEvent::Ready).await.is_err() {
                                        return;
                                    }
                                }
                                w
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "presence watch cannot restart yet");
                                continue;
                            }
                        }
                    }
                };
                let mut stall = Stall::default();
                let mut probe = tokio::time::interval_at(tokio::time::Instant::now() + STALL_PROBE, STALL_PROBE);
                probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let item = tokio::select! {
                        item = w.next() => item,
                        () = reconnected(link.as_mut()) => {
                            tracing::info!("NATS link back, restarting the presence watch");
                            restart_now = true;
                            None
                        }
                        _ = probe.tick() => {
                            if stall.probe(&kv).await {
                                tracing::warn!(
                                    last_seen = stall.last_seen,
                                    "presence watch stalled (an entry written {}s ago was never delivered), restarting it",
                                    (STALL_PROBE * STALL_PROBES).as_secs()
                                );
                                restart_now = true;
                                None
                            } else {
                                continue;
                            }
                        }
                    };
                    let entry = match item {
                        Some(Ok(e)) => Some(e),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "presence watch failed, restarting it");
                            None
                        }
                        None => None,
                    };
                    let Some(entry) = entry else {
                        // Changes made until the new watch caught up are
                        // missing from the index meanwhile.
                        if ready {
                            ready = false;
                            if tx.send(WatchEvent::Lagging).await.is_err() {
                                return;
                            }
                        }
                        break;
                    };
                    stall.last_seen = stall.last_seen.max(entry.revision);
                    let event = match entry.operation {
                        Operation::Put => match decode_value(&entry.value) {
                            Some(value) => WatchEvent::Put {
                                key: entry.key,
                                value,
                                revision: entry.revision,
                            },
                            None => {
                                tracing::warn!(key = %entry.key, "undecodable presence entry ignored");
                                WatchEvent::Skipped {
                                    revision: entry.revision,
                                }
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
                        tracing::info!("presence watch caught up");
                        if tx.send(WatchEvent::Ready).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(match watch_delay() {
            Some(delay) => delayed(rx, delay),
            None => rx,
        })
    }
}

/// Test hook (`SWITCHBOARD_TEST_PRESENCE_WATCH_DELAY_MS=<ms>`): every change
/// the watch reports after its first [`WatchEvent::Ready`] reaches the
/// router that much later, as from a watch that lags (one whose consumer
/// is being re-created after a NATS server went away). 0 or unset: off.
const WATCH_DELAY_HOOK: &str = "SWITCHBOARD_TEST_PRESENCE_WATCH_DELAY_MS";

fn watch_delay() -> Option<Duration> {
    let ms: u64 = std::env::var(WATCH_DELAY_HOOK).ok()?.parse().ok()?;
    (ms > 0).then(|| {
        tracing::warn!("test hook {WATCH_DELAY_HOOK}: presence changes reach this router {ms} ms late");
        Duration::from_millis(ms)
    })
}

/// Relays `rx` with every event after the first [`WatchEvent::Ready`]
/// held back by `delay`, in order ([`WATCH_DELAY_HOOK`]).
fn delayed(mut rx: mpsc::Receiver<WatchEvent>, delay: Duration) -> mpsc::Receiver<WatchEvent> {
    let (tx, out) = mpsc::channel(4096);
    tokio::spawn(async move {
        let mut queue: std::collections::VecDeque<(tokio::time::Instant, WatchEvent)> = Default::default();
        let mut loaded = false;
        let mut open = true;
        while open || !queue.is_empty() {
            let due = queue.front().map(|(at, _)| *at);
            tokio::select! {
                ev = rx.recv(), if open => match ev {
                    Some(ev) => {
                        let now = tokio::time::Instant::now();
                        let at = if loaded { now + delay } else { now };
                        loaded |= ev == WatchEvent::Ready;
                        queue.push_back((at, ev));
                    }
                    None => open = false,
                },
                () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    if let Some((_, ev)) = queue.pop_front() {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    out
}
