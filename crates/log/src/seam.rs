//! The contract both logs keep: [`PartitionLog`], the values it hands out
//! and [`LogError`], whose variants are what callers branch on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::config::LogConfig;
use crate::partition::partition_of;

/// The highest sequence a client may see (JSON numbers stay exact).
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// Where a partition's log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// When this incarnation of the log was created, in nanoseconds since
    /// the Unix epoch: part of the epoch, since a log that was lost and
    /// created again has another one.
    pub created_ns: u64,
    /// The lowest stored sequence. With nothing stored it is `last + 1`.
    pub first: u64,
    /// The last sequence ever assigned (stored or since removed). A new
    /// log starts at `first = ` the wall clock in µs, `last = first - 1`.
    pub last: u64,
}

/// A stored append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The entry's sequence in its partition.
    pub seq: u64,
    /// `true` when the `Nats-Msg-Id` was seen within the dedupe window (and
    /// the expectation held):
    /// nothing new was stored, `seq` is the first append's, and the append
    /// took no sequence (the next one still expects the same last).
    pub duplicate: bool,
}

/// A fence that landed: from `token` on, this writer owns the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The fence entry's sequence: the owner's token, and its `last`.
    pub token: u64,
    /// The last sequence before the fence: every entry an earlier owner
    /// could still store is at or below it.
    pub after: u64,
}

/// What a stored entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A send of `biz`.
    Entry {
        /// The bizCode.
        biz: String,
        /// Its `Nats-Msg-Id`, which the owner matches after a failure.
        msg_id: Option<String>,
    },
    /// A fence: the partition changed owner at `token`.
    Fence {
        /// Its sequence.
        token: u64,
        /// The fencing owner's node id (the entry's payload).
        owner: String,
    },
    /// A message this crate did not write (its subject does not decode).
    Foreign {
        /// Its subject.
        subject: String,
    },
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its sequence in the partition.
    pub seq: u64,
    /// What it is.
    pub kind: EntryKind,
    /// Its payload, as appended.
    pub payload: Bytes,
}

/// Log failures. Only [`LogError::WrongLastSequence`] and
/// [`LogError::Invalid`] say for sure that nothing was stored; after any
/// other failure of an append the outcome is unknown and the caller reads
/// the [`PartitionLog::tail`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The append expected another last sequence, or another newest fence
    /// (an owner that was fenced out): nothing was stored. `last` is the
    /// partition's real last sequence when the server said (for a refused
    /// fence expectation: the newest fence's sequence; read the tail to
    /// tell the two apart).
    #[error("wrong last sequence (last {last:?})")]
    WrongLastSequence {
        /// The real last sequence.
        last: Option<u64>,
    },
    /// No answer in time: the outcome is unknown.
    #[error("log timed out")]
    Timeout,
    /// The same `Nats-Msg-Id` is being appended right now: the outcome is
    /// unknown (the first one may still land).
    #[error("duplicate message conflict")]
    Conflict,
    /// The log cannot be reached, or the partition has no log (see
    /// [`PartitionLog::ensure`]).
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// The caller's mistake (a partition out of range, a bizCode of another
    /// partition, an empty bizCode or id): nothing was sent.
    #[error("invalid log request: {0}")]
    Invalid(String),
    /// Anything else the log answered.
    #[error("log error: {0}")]
    Other(String),
}

/// The acknowledgement of an append that was handed to the log: await it
/// for the [`Appended`] or the [`LogError`]. Dropping it does not undo the
/// append.
pub struct PendingAppend(Pin<Box<dyn Future<Output = Result<Appended, LogError>> + Send>>);

impl PendingAppend {
    /// Wraps an acknowledgement future.
    pub fn new(f: impl Future<Output = Result<Appended, LogError>> + Send + 'static) -> Self {
        Self(Box::pin(f))
    }

    /// An acknowledgement that is already known.
    pub fn ready(r: Result<Appended, LogError>) -> Self {
        Self::new(std::future::ready(r))
    }
}

impl std::fmt::Debug for PendingAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingAppend")
    }
}

impl Future for PendingAppend {
    type Output = Result<Appended, LogError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// Entries of a range read, in sequence order; it ends at the range's end
/// (or at the head), or after its first error.
pub type EntryStream = BoxStream<'static, Result<StoredEntry, LogError>>;

/// One log per partition: the order of a partition's sends.
///
/// Contract, which both implementations keep and share their tests for:
/// - sequences increase by one per stored append in a partition, starting
///   at the wall clock in µs when the log is created; they never decrease,
///   even when the log is lost and created again;
/// - an append with an expected last sequence is stored only if that is
///   the partition's last sequence, so a single writer can pipeline: the
///   k-th outstanding append expects `last + k - 1`, and acknowledgements
///   come back in append order;
/// - a `msg_id` seen in the last `duplicate_window` stores nothing and
///   answers the first append's sequence; the expectation is checked
///   first, so a retry must expect the current last sequence;
/// - a fence refuses every append that expects a sequence before it, but
///   an append already in flight that expects a later one (the k-th of a
///   pipeline whose first was refused) lands after the fence, unless it
///   names its owner's token (`fence = Some(token)`): then it is stored
///   only while the partition's newest stored fence is that token, so no
///   append of an old owner lands once a newer fence exists;
/// - entries leave by age (`max_age`), by count per bizCode
///   (`max_messages_per_biz`), by the byte limit, or by [`Self::purge`];
///   fence entries never leave by age (JetStream: `Nats-TTL: never`), so
///   the newest fence, which owners' appends check, outlives `max_age`.
///   (JetStream's stream-wide byte limit can still remove it; the memory
///   log's global cap does not.)
#[async_trait]
pub trait PartitionLog: Send + Sync + 'static {
    /// Opens partition `p`'s log, creating it if absent (with its first
    /// sequence at the wall clock in µs). An existing log is used as it is
    /// (its limits are not changed to the configuration's);
    /// when two writers race to create it, both end up with the same one.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] or [`LogError::Timeout`] if the store cannot
    /// be reached, [`LogError::Invalid`] for `p` out of range.
    async fn ensure(&self, p: u32) -> Result<Bounds, LogError>;

    /// Where partition `p`'s log stands.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when the log does not exist.
    async fn bounds(&self, p: u32) -> Result<Bounds, LogError>;

    /// Hands an entry of `biz` to the log, stored only if the partition's
    /// last sequence is `expected_last` and, with `fence = Some(token)`,
    /// the newest fence entry still stored is `token` (JetStream:
    /// `Nats-Expected-Last-Subject-Sequence: token` on the fence subject).
    /// `Some(0)` matches only a partition with no fence stored: a writer
    /// that never fenced. `None` skips the check (tests of the bare
    /// expectation; owners always pass their token). `msg_id` dedupes
    /// retries; both expectations are checked before it. Returns
    /// once the append is sent (it is pipelinable); the [`PendingAppend`]
    /// resolves with its acknowledgement.
    ///
    /// # Errors
    /// Here or from the acknowledgement: see [`LogError`]; an
    /// acknowledgement error other than `WrongLastSequence` leaves the
    /// outcome unknown.
    async fn append(
        &self,
        p: u32,
        biz: &str,
        msg_id: &str,
        expected_last: u64,
        fence: Option<u64>,
        payload: Bytes,
    ) -> Result<PendingAppend, LogError>;

    /// Fences partition `p` for `owner` (a node id): appends a fence entry
    /// right after the last sequence, reading a fresh one and retrying as
    /// long as other appends land first (at most `fence_attempts` times).
    /// Every append that expects a sequence before the fence now fails.
    ///
    /// # Errors
    /// [`LogError::WrongLastSequence`] when other writers kept winning; any
    /// append error otherwise (the fence may then have landed: fence again).
    async fn fence(&self, p: u32, owner: &str) -> Result<Fence, LogError>;

    /// At most `limit` stored entries of partition `p` after `after_seq`, in
    /// order: what an owner reads after a failed append.
    ///
    /// # Errors
    /// As [`Self::read_range`].
    async fn tail(&self, p: u32, after_seq: u64, limit: usize) -> Result<Vec<StoredEntry>, LogError>;

    /// The stored entries of partition `p` in `(after_seq, up_to_seq]`, in
    /// order: of one bizCode, or with `biz = None` every entry and fence.
    /// Memory stays bounded whatever the range (entries are fetched in
    /// batches of a few hundred); the stream ends at `up_to_seq`, or at the
    /// head once it reaches it (the memory log: the head when the read
    /// started).
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when the log does not exist or cannot be
    /// read; the stream itself ends with [`LogError::Timeout`] if the store
    /// stops answering.
    async fn read_range(
        &self,
        p: u32,
        biz: Option<&str>,
        after_seq: u64,
        up_to_seq: u64,
    ) -> Result<EntryStream, LogError>;

    /// Removes `biz`'s entries with a sequence at or below `up_to_seq`, and
    /// returns how many there were.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when the log does not exist or cannot be
    /// reached.
    async fn purge(&self, p: u32, biz: &str, up_to_seq: u64) -> Result<u64, LogError>;

    /// The lowest stored sequence of `biz`, `None` when it has none.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when the log does not exist or cannot be
    /// reached.
    async fn first_seq_of(&self, p: u32, biz: &str) -> Result<Option<u64>, LogError>;

    /// A sequence at or above every entry of `biz` that left the log (by
    /// age, count, byte caps or a purge): every entry of `biz` above it is
    /// still stored. The memory log knows it exactly; JetStream does not
    /// say what it removed, so there it is conservative (the sequence
    /// before `biz`'s oldest stored entry, or the partition's last one
    /// when `biz` has none stored), which can only make a recovery report
    /// `recovered: false` that could have succeeded.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when the log does not exist or cannot be
    /// reached.
    async fn low_water(&self, p: u32, biz: &str) -> Result<u64, LogError>;
}

/// Checks a partition index against the configuration.
pub(crate) fn check_partition(config: &LogConfig, p: u32) -> Result<(), LogError> {
    if p >= config.partitions.max(1) {
        return Err(LogError::Invalid(format!(
            "partition {p} out of range (0..{})",
            config.partitions
        )));
    }
    Ok(())
}

/// Checks that `biz` is a non-empty bizCode of partition `p`.
pub(crate) fn check_biz(config: &LogConfig, p: u32, biz: &str) -> Result<(), LogError> {
    check_partition(config, p)?;
    if biz.is_empty() {
        return Err(LogError::Invalid("empty bizCode".to_owned()));
    }
    let home = partition_of(biz, config.partitions);
    if home != p {
        return Err(LogError::Invalid(format!(
            "bizCode {biz} belongs to partition {home}, not {p}"
        )));
    }
    Ok(())
}

/// The wall clock in µs since the Unix epoch, at most [`MAX_SEQ`]: where a
/// new log's sequences start.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(MAX_SEQ))
        .unwrap_or(1)
        .clamp(1, MAX_SEQ)
}

/// The wall clock in ns since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Refuses an append to a partition or bizCode out of place, or without a
/// Msg-Id.
pub(crate) fn check_append(config: &LogConfig, p: u32, biz: &str, msg_id: &str) -> Result<(), LogError> {
    check_biz(config, p, biz)?;
    if msg_id.is_empty() {
        return Err(LogError::Invalid("empty Msg-Id".to_owned()));
    }
    Ok(())
}
