//! The store seams the core depends on: presence entries with
//! compare-and-set on revisions, a watch of every change, and the registry
//! of bizCodes. The contract is in the parent module's docs.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchboard_protocol::envelope::{self, BizLimits, PresenceValue};
use tokio::sync::mpsc;

use crate::webhook::WebhookSettings;

/// A value with its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The entry.
    pub value: PresenceValue,
    /// Its revision.
    pub revision: u64,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The entry changed since the revision given (or exists, for create).
    #[error("wrong last revision")]
    WrongRevision,
    /// The store could not be reached.
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was written.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: PresenceValue,
        /// Its revision.
        revision: u64,
    },
    /// A key was removed at `revision`.
    Delete {
        /// The key.
        key: String,
        /// Revision of the removal.
        revision: u64,
    },
    /// A revision that changed nothing the index holds (an undecodable
    /// value, skipped): the watch got that far ([`PresenceStore::head`]).
    Skipped {
        /// The revision.
        revision: u64,
    },
    /// Every entry that existed when the watch started has been sent (again
    /// after a [`WatchEvent::Lagging`]: the watch caught up).
    Ready,
    /// The watch broke and is being re-created: changes made meanwhile
    /// arrive only once it is [`WatchEvent::Ready`] again, so an index fed
    /// by it may be stale until then.
    Lagging,
}

/// The presence store.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// The current entry, `None` if absent or removed.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Creates an absent entry; [`StoreError::WrongRevision`] if it exists.
    async fn create(&self, key: &str, value: &PresenceValue) -> Result<u64, StoreError>;
    /// Replaces the entry if its revision is still `revision`.
    async fn update(&self, key: &str, value: &PresenceValue, revision: u64) -> Result<u64, StoreError>;
    /// Removes the entry if its revision is still `revision`.
    async fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError>;
    /// Every current entry, then [`WatchEvent::Ready`], then every change.
    async fn watch(&self) -> Result<mpsc::Receiver<WatchEvent>, StoreError>;
    /// The newest revision the store holds now: how far an index fed by
    /// [`Self::watch`] must have come before a new partition owner plans
    /// with it (`Router::catch_up`). `None` for a store whose writes reach
    /// the index as they are made (the memory store).
    async fn head(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// The first revision above `after` the store still holds, if any
    /// (removal markers expire, so the revisions held have gaps).
    async fn next_revision(&self, after: u64) -> Result<Option<u64>, StoreError> {
        let _ = after;
        Ok(None)
    }
}

/// Per-bizCode settings: registration (the `register` API, for
/// deployments that require it; permanent) and what SPEC §7 keeps per
/// bizCode ([`BizSettings`]). The registration bucket holds them, one
/// value per bizCode, so later settings (webhooks, limits) join them there.
#[async_trait]
pub trait BizRegistry: Send + Sync + 'static {
    /// The bizCode's settings and their revision; `None` if it has none.
    async fn settings(&self, biz: &str) -> Result<Option<(BizSettings, u64)>, StoreError>;
    /// Writes the settings if they are still at `revision` (`None`:
    /// absent); returns the new revision.
    async fn put_settings(&self, biz: &str, settings: &BizSettings, revision: Option<u64>) -> Result<u64, StoreError>;

    /// Registers a bizCode (idempotent), keeping its other settings.
    async fn register(&self, biz: &str) -> Result<(), StoreError> {
        for _ in 0..8 {
            let (mut s, rev) = match self.settings(biz).await? {
                Some((s, _)) if s.registered_at.is_some() => return Ok(()),
                Some((s, rev)) => (s, Some(rev)),
                None => (BizSettings::new(), None),
            };
            s.registered_at = Some(switchboard_runtime::now_ms());
            match self.put_settings(biz, &s, rev).await {
                Ok(_) => return Ok(()),
                Err(StoreError::WrongRevision) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(format!("the settings of {biz} kept changing")))
    }

    /// Whether a bizCode is registered.
    async fn is_registered(&self, biz: &str) -> Result<bool, StoreError> {
        Ok(self
            .settings(biz)
            .await?
            .is_some_and(|(s, _)| s.registered_at.is_some()))
    }
}

/// What SPEC §7 keeps per bizCode, its registration, its limits and its
/// webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BizSettings {
    /// When `register` registered it, ms since the epoch; `None` if it
    /// never was (its settings exist all the same).
    #[serde(default)]
    pub registered_at: Option<u64>,
    /// History for this bizCode: `None` follows the deployment's
    /// `history.enabled`.
    #[serde(default)]
    pub history: Option<bool>,
    /// Random, made with the record: part of the bizCode's epoch, so a lost
    /// record changes the epoch.
    pub epoch_salt: String,
    /// Bumped by `delete_history` and by every history switch: part of the
    /// epoch.
    #[serde(default)]
    pub generation: u64,
    /// The highest `seq` removed from the bizCode's log on purpose.
    #[serde(default)]
    pub low_water: u64,
    /// Its own limits on each edge (`set_limits`); all off by default, and
    /// in records written before limits existed.
    #[serde(default)]
    pub limits: BizLimits,
    /// Its webhook (`set_webhook`, operators only); `None` in records
    /// written before webhooks existed.
    #[serde(default)]
    pub webhook: Option<WebhookSettings>,
}

impl BizSettings {
    /// Default settings with a fresh epoch salt.
    pub fn new() -> Self {
        Self {
            registered_at: None,
            history: None,
            epoch_salt: format!("{:016x}", rand::random::<u64>()),
            generation: 0,
            low_water: 0,
            limits: BizLimits::default(),
            webhook: None,
        }
    }

    /// Reads a stored value: settings, or the registration time of a
    /// value written before settings existed (anything else that is not
    /// settings counts as registered, as older routers read it).
    pub fn decode(bytes: &[u8]) -> Self {
        if let Ok(s) = envelope::decode::<Self>(bytes) {
            return s;
        }
        let registered_at = std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        Self {
            registered_at: Some(registered_at),
            // Stable for a legacy value until its first rewrite.
            epoch_salt: String::new(),
            ..Self::new()
        }
    }
}

impl Default for BizSettings {
    fn default() -> Self {
        Self::new()
    }
}
