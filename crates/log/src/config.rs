//! The limits and timings of a partition log, the same for both
//! implementations (the memory twin adds its global byte cap).

use std::time::Duration;

/// Default number of partitions (`history.partitions`).
pub const DEFAULT_PARTITIONS: u32 = 16;
/// Default age after which an entry is removed (`history.ttl`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// Default number of entries kept per bizCode (`history.max_messages`).
pub const DEFAULT_MAX_MESSAGES_PER_BIZ: i64 = 100_000;
/// Default per-bizCode byte cap (`history.max_bytes`), which the partition
/// owner enforces; the stream's own byte limit is this times the partitions.
pub const DEFAULT_MAX_BYTES_PER_BIZ: i64 = 64 * 1024 * 1024;
/// Default `Nats-Msg-Id` dedupe window: longer than a sender's retries,
/// much shorter than JetStream's 2 min default.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(30);
/// Default wait for the next entry of a range read before it fails.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of fence attempts before [`crate::PartitionLog::fence`]
/// gives up against a writer that keeps appending.
pub const DEFAULT_FENCE_ATTEMPTS: u32 = 64;

/// How partition logs are laid out and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Number of partitions, fixed for the life of a deployment; a
    /// partition index must be below it. Default 16.
    pub partitions: u32,
    /// Stream replicas (`history.replicas`): 1 on one server, 3 on a
    /// cluster. Used only when a stream is created. Default 1.
    pub replicas: usize,
    /// Entries older than this are removed (`history.ttl`, the stream's
    /// `max_age`). Default 5 min.
    pub max_age: Duration,
    /// Entries kept per bizCode (`history.max_messages`, the stream's
    /// `max_msgs_per_subject`); the oldest go first. Default 100,000.
    pub max_messages_per_biz: i64,
    /// Byte limit of one partition's stream (`max_bytes`), a backstop
    /// behind the owner's per-bizCode byte count; the oldest entries go
    /// first. Default 16 × 64 MiB.
    pub max_bytes_per_partition: i64,
    /// How long a `Nats-Msg-Id` is remembered (the stream's
    /// `duplicate_window`). Default 30 s.
    pub duplicate_window: Duration,
    /// How long a range read waits for its next entry before it fails with
    /// [`crate::LogError::Timeout`]. Default 5 s.
    pub read_timeout: Duration,
    /// Fence attempts (each after a fresh read of the last sequence)
    /// before [`crate::PartitionLog::fence`] gives up. Default 64.
    pub fence_attempts: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            partitions: DEFAULT_PARTITIONS,
            replicas: 1,
            max_age: DEFAULT_MAX_AGE,
            max_messages_per_biz: DEFAULT_MAX_MESSAGES_PER_BIZ,
            max_bytes_per_partition: DEFAULT_MAX_BYTES_PER_BIZ * i64::from(DEFAULT_PARTITIONS),
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            read_timeout: DEFAULT_READ_TIMEOUT,
            fence_attempts: DEFAULT_FENCE_ATTEMPTS,
        }
    }
}
