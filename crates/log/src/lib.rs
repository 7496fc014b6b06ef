//! The per-partition log of sends: Switchboard's history and the order of
//! its deliveries (SPEC §7, `docs/recovery.md`).
//!
//! bizCodes are hashed into a fixed number of partitions; each partition's
//! log is one JetStream stream (`SB_LOG_<p>`, file storage) in a cluster,
//! or a [`MemoryLog`] in `standalone`. Its only writer is the partition's
//! owner (a router), which pipelines appends that expect the last sequence
//! and fences earlier owners out with a fence entry; edges read ranges for
//! replay and healing. This crate depends on `protocol` only (for the
//! subject-token encoding); edge and router depend on it, not the reverse.
//!
//! Modules:
//! - [`partition`]: which partition a bizCode is in (FNV-1a), and the
//!   stream and subject names;
//! - [`config`]: limits and timings ([`LogConfig`]);
//! - [`seam`]: the [`PartitionLog`] contract, its values and [`LogError`];
//! - [`jetstream`]: [`JetStreamLog`], over an `async_nats` JetStream context;
//! - [`memory`]: [`MemoryLog`], the in-process twin with a global byte cap.

pub mod config;
pub mod jetstream;
pub mod memory;
pub mod partition;
pub mod seam;

pub use config::{HistoryConfig, LogConfig};
pub use jetstream::JetStreamLog;
pub use memory::{Eviction, MemoryLog};
pub use partition::partition_of;
pub use seam::{
    Appended, Bounds, EntryKind, EntryStream, Fence, LogError, PartitionLog, PendingAppend, StoredEntry, MAX_SEQ,
};
