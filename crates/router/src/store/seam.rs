//! The store seams the core depends on: presence entries with
//! compare-and-set on revisions, a watch of every change, and the registry
//! of bizCodes. The contract is in the parent module's docs.

use async_trait::async_trait;
use switchboard_protocol::envelope::PresenceValue;
use tokio::sync::mpsc;

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
    /// Every entry that existed when the watch started has been sent.
    Ready,
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
}

/// Registered bizCodes (the `register` API), for deployments that require
/// registration. Registration is permanent.
#[async_trait]
pub trait BizRegistry: Send + Sync + 'static {
    /// Registers a bizCode (idempotent).
    async fn register(&self, biz: &str) -> Result<(), StoreError>;
    /// Whether a bizCode is registered.
    async fn is_registered(&self, biz: &str) -> Result<bool, StoreError>;
}
