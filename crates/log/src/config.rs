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
    /// Bytes kept per bizCode (`history.max_bytes`); the oldest go first.
    /// The memory log enforces it itself; on JetStream the partition's
    /// owner does. Default 64 MiB.
    pub max_bytes_per_biz: i64,
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
            max_bytes_per_biz: DEFAULT_MAX_BYTES_PER_BIZ,
            max_bytes_per_partition: DEFAULT_MAX_BYTES_PER_BIZ * i64::from(DEFAULT_PARTITIONS),
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            read_timeout: DEFAULT_READ_TIMEOUT,
            fence_attempts: DEFAULT_FENCE_ATTEMPTS,
        }
    }
}

/// Default most entries replayed to one recovering connection
/// (`history.max_replay`).
pub const DEFAULT_MAX_REPLAY: usize = 1_000;

/// Default global byte cap of the memory log in `standalone`
/// (`history.standalone_max_bytes`).
pub const DEFAULT_STANDALONE_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// `[history]`: every send of a bizCode is an entry of its log, which
/// clients recover from after a reconnect (SPEC §7, `docs/recovery.md`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// History for every bizCode that does not turn it off (`register`
    /// with `"history": false`). Default on.
    pub enabled: bool,
    /// Entries older than this leave the log; a unicast to a client offline
    /// for less than this is stored for it. Default `5m`; 1 s to 7 days.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Entries kept per bizCode; the oldest go first. Default 100,000.
    pub max_messages: i64,
    /// Bytes kept per bizCode; the oldest go first. Default 64 MiB.
    pub max_bytes: u64,
    /// A recovering connection with more entries than this to replay gets
    /// `recovered: false` and nothing replayed. Default 1,000; at most
    /// 100,000.
    pub max_replay: usize,
    /// Partitions of the log, fixed for the life of a deployment.
    /// Default 16; 1 to 1,024.
    pub partitions: u32,
    /// Replicas of each partition's stream (1 on one NATS server, 3 on a
    /// cluster). Default 1.
    pub replicas: usize,
    /// `standalone` keeps the log in memory: its byte cap for all
    /// bizCodes together (the oldest entries go first). Default 256 MiB.
    pub standalone_max_bytes: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: DEFAULT_MAX_AGE,
            max_messages: DEFAULT_MAX_MESSAGES_PER_BIZ,
            max_bytes: DEFAULT_MAX_BYTES_PER_BIZ.unsigned_abs(),
            max_replay: DEFAULT_MAX_REPLAY,
            partitions: DEFAULT_PARTITIONS,
            replicas: 1,
            standalone_max_bytes: DEFAULT_STANDALONE_MAX_BYTES,
        }
    }
}

impl HistoryConfig {
    /// Pushes configuration problems.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(7 * 86_400) {
            problems.push("history.ttl must be between 1s and 7 days".into());
        }
        if self.max_messages < 1 {
            problems.push("history.max_messages must be at least 1".into());
        }
        if self.max_bytes < 1024 {
            problems.push("history.max_bytes must be at least 1024".into());
        }
        if !(1..=100_000).contains(&self.max_replay) {
            problems.push("history.max_replay must be between 1 and 100000".into());
        }
        if !(1..=1024).contains(&self.partitions) {
            problems.push("history.partitions must be between 1 and 1024".into());
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            problems.push("history.replicas must be 1, 3 or 5".into());
        }
        if self.standalone_max_bytes < 1024 * 1024 {
            problems.push("history.standalone_max_bytes must be at least 1 MiB".into());
        }
    }

    /// The log's layout and limits.
    #[must_use]
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            partitions: self.partitions,
            replicas: self.replicas,
            max_age: self.ttl,
            max_messages_per_biz: self.max_messages,
            max_bytes_per_biz: i64::try_from(self.max_bytes).unwrap_or(i64::MAX),
            max_bytes_per_partition: i64::try_from(self.max_bytes.saturating_mul(u64::from(self.partitions)))
                .unwrap_or(i64::MAX),
            ..LogConfig::default()
        }
    }

    /// Most log entries a recovery scans before it gives up
    /// (`recovered: false`): 100 per entry it may replay.
    #[must_use]
    pub fn max_scan(&self) -> usize {
        self.max_replay.saturating_mul(100)
    }
}
