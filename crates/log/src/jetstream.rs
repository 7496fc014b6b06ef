//! The partition log in JetStream: one stream per partition, appends that
//! expect the last sequence (`Nats-Expected-Last-Sequence`) and carry a
//! `Nats-Msg-Id`, fences, purges and range reads through ordered consumers
//! (which read from the stream leader).
//!
//! Replicated streams take an owner's appends one at a time: a clustered
//! stream checks the fence expectation (`Nats-Expected-Last-Subject-Sequence`
//! on the fence subject) before its Raft proposal and refuses, with 10164,
//! a second one while another is in flight. Once an append fails, the rest
//! of its pipeline fails at once, unsent. A 10164 is tried again a few
//! times (the leader answers an append just before it clears its mark); if
//! it persists three appends in a row, a stale mark in the leader's
//! in-flight set is the likely cause, which only a leader change clears:
//! the log asks the stream's leader to step down (docs/recovery.md,
//! "Appends refused with 10164").

mod errors;
mod read;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, StorageType};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;

use crate::config::LogConfig;
use crate::partition::{entries_filter, entry_subject, fence_subject, partition_filter, stream_name};
use crate::seam::{
    check_append, check_biz, check_partition, now_us, Appended, Bounds, EntryStream, Fence, LogError, PartitionLog,
    PendingAppend, StoredEntry, MAX_SEQ,
};

/// Retries of one fence attempt whose outcome was unknown (a timeout or a
/// dedupe conflict), with the same `Nats-Msg-Id` so a landed one answers.
const FENCE_UNKNOWN_RETRIES: u32 = 3;

/// At most one leader step-down request per partition in this long: a new
/// leader needs a moment to be elected and to apply what is committed.
const STEP_DOWN_EVERY: Duration = Duration::from_secs(10);

/// Appends in a row still refused with 10164 after their retries (with
/// none of ours in flight) that make a stale in-flight mark on the leader
/// the likely cause.
const STUCK_AFTER: u32 = 3;

/// Retries of an append refused with 10164, 10 ms × n apart: refused
/// before the Raft proposal, it stored nothing.
const IN_FLIGHT_RETRIES: u64 = 3;

/// The header that moves `Nats-Expected-Last-Subject-Sequence`'s check to
/// another subject (nats-server 2.11+; async-nats has no constant for it).
const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// `Nats-TTL`, a message's own age limit (nats-server 2.11+, streams with
/// `allow_msg_ttl`).
const MESSAGE_TTL: &str = "Nats-TTL";
/// The `Nats-TTL` of a message that `max_age` never removes.
const NEVER: &str = "never";

/// What an append is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A send, naming its owner's token or not.
    Entry { fence: Option<u64> },
    /// A fence entry: kept whatever its age.
    Fence,
}

/// The partition log over a JetStream context. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JetStreamLog {
    js: Context,
    config: LogConfig,
    /// Per partition: whose turn it is to append under a fence, and when
    /// its leader was last asked to step down (replicated streams).
    parts: Arc<[Turn]>,
}

/// One partition's append turn (see the module docs).
#[derive(Debug, Default)]
struct Turn {
    /// Held from an owner append's publication to its acknowledgement.
    append: Arc<tokio::sync::Mutex<()>>,
    /// The stream's replicas as last read from its info (0: not read yet).
    replicas: AtomicUsize,
    /// The pipeline that broke: the expected last sequence of its newest
    /// append, and when the first of them failed. Appends that continue it
    /// and were waiting for the turn by then fail unsent.
    broken: parking_lot::Mutex<Option<(u64, Instant)>>,
    /// Appends in a row refused with 10164 after their retries.
    refused: AtomicU32,
    /// When this process last asked the stream's leader to step down.
    stepped_down: parking_lot::Mutex<Option<Instant>>,
}

impl Turn {
    /// Counts an append refused with 10164 after its retries; `true` when
    /// it is time to ask the leader to step down (the [`STUCK_AFTER`]-th in
    /// a row, at most once per [`STEP_DOWN_EVERY`]).
    fn refused_in_flight(&self) -> bool {
        if self.refused.fetch_add(1, Ordering::Relaxed) + 1 < STUCK_AFTER {
            return false;
        }
        self.refused.store(0, Ordering::Relaxed);
        let mut at = self.stepped_down.lock();
        if at.is_some_and(|t| t.elapsed() < STEP_DOWN_EVERY) {
            return false;
        }
        *at = Some(Instant::now());
        true
    }

    /// Whether an append expecting `expected_last`, waiting for the turn
    /// since `since`, continues a pipeline that broke meanwhile; if so it
    /// becomes that pipeline's newest append.
    fn continues_broken(&self, expected_last: u64, since: Instant) -> bool {
        let mut broken = self.broken.lock();
        match *broken {
            Some((last, at)) if expected_last == last + 1 && since <= at => {
                *broken = Some((expected_last, at));
                true
            }
            _ => false,
        }
    }

    /// Records an append's outcome, still holding the turn: `Ok(true)`
    /// stored, `Ok(false)` answered as a duplicate, `Err(timed_out)`
    /// failed. A stored append, or a timeout (our own append may then still
    /// be in flight, and its mark with it), starts the count toward a
    /// step-down again.
    fn settled(&self, expected_last: u64, outcome: Result<bool, bool>) {
        match outcome {
            Ok(stored) => {
                if stored {
                    self.refused.store(0, Ordering::Relaxed);
                }
                *self.broken.lock() = None;
            }
            Err(timed_out) => {
                if timed_out {
                    self.refused.store(0, Ordering::Relaxed);
                }
                *self.broken.lock() = Some((expected_last, Instant::now()));
            }
        }
    }
}

impl JetStreamLog {
    /// Partition `p`'s stream, without fetching its info.
    async fn stream(&self, p: u32) -> Result<async_nats::jetstream::stream::Stream<()>, LogError> {
        self.js
            .get_stream_no_info(stream_name(p))
            .await
            .map_err(|e| LogError::Invalid(e.to_string()))
    }

    /// A log over `js` with `config`'s layout and limits. Nothing is sent
    /// until a partition is used; call [`PartitionLog::ensure`] for each
    /// partition a writer owns. An append's acknowledgement waits for the
    /// context's timeout (async-nats' default: 5 s) before it fails with
    /// [`LogError::Timeout`].
    #[must_use]
    pub fn new(js: Context, config: LogConfig) -> Self {
        let parts = (0..config.partitions).map(|_| Turn::default()).collect();
        Self { js, config, parts }
    }

    /// Asks partition `p`'s stream leader to step down
    /// (`$JS.API.STREAM.LEADER.STEPDOWN.<stream>`); another replica takes
    /// over with a clean in-flight set. A stream of one replica has no
    /// other to take over and refuses.
    ///
    /// # Errors
    /// [`LogError::Other`] with the server's refusal, or the request's
    /// failure.
    pub async fn step_down(&self, p: u32) -> Result<(), LogError> {
        check_partition(&self.config, p)?;
        let subject = format!("STREAM.LEADER.STEPDOWN.{}", stream_name(p));
        let answer: serde_json::Value = self
            .js
            .request(subject, &serde_json::json!({}))
            .await
            .map_err(|e| LogError::Other(e.to_string()))?;
        if answer.get("success").and_then(serde_json::Value::as_bool) == Some(true) {
            Ok(())
        } else {
            Err(LogError::Other(format!("leader step-down refused: {answer}")))
        }
    }

    /// Asks partition `p`'s leader to step down after appends kept being
    /// refused with 10164, and says so in the log.
    async fn unstick(&self, p: u32) {
        match self.step_down(p).await {
            Ok(()) => tracing::warn!(
                partition = p,
                "appends refused with 10164 in a row while none of ours was in flight: asked the log stream's leader to step down"
            ),
            Err(e) => tracing::warn!(partition = p, error = %e, "log stream leader step-down failed"),
        }
    }

    /// Partition `p`'s turn.
    fn turn(&self, p: u32) -> Option<&Turn> {
        usize::try_from(p).ok().and_then(|i| self.parts.get(i))
    }

    /// Whether partition `p`'s stream is replicated: as its info said
    /// when last read, else as configured.
    fn replicated(&self, p: u32) -> bool {
        match self.turn(p).map_or(0, |t| t.replicas.load(Ordering::Relaxed)) {
            0 => self.config.replicas > 1,
            n => n > 1,
        }
    }

    /// Notes partition `p`'s stream's replicas from its info.
    fn saw(&self, p: u32, info: &stream::Info) {
        if let Some(t) = self.turn(p) {
            t.replicas.store(info.config.num_replicas.max(1), Ordering::Relaxed);
        }
    }

    /// The stream configuration of partition `p`, first sequence `first`.
    fn stream_config(&self, p: u32, first: u64) -> stream::Config {
        stream::Config {
            name: stream_name(p),
            description: Some(format!("Switchboard log of partition {p}")),
            subjects: vec![partition_filter(p)],
            storage: StorageType::File,
            num_replicas: self.config.replicas.max(1),
            max_age: self.config.max_age,
            max_messages_per_subject: self.config.max_messages_per_biz,
            max_bytes: self.config.max_bytes_per_partition,
            duplicate_window: self.config.duplicate_window,
            first_sequence: Some(first),
            // Fence entries carry `Nats-TTL: never` so that `max_age` never
            // removes the newest fence: owners' appends check it.
            allow_message_ttl: true,
            ..Default::default()
        }
    }

    /// Partition `p`'s bounds, `None` when it has no stream.
    async fn lookup(&self, p: u32) -> Result<Option<Bounds>, LogError> {
        match self.js.get_stream(stream_name(p)).await {
            Ok(s) => {
                self.saw(p, s.cached_info());
                Ok(Some(bounds_of(s.cached_info())))
            }
            Err(e) => errors::lookup(&e).map(|()| None),
        }
    }

    /// Sends one append to `subject` of partition `p`.
    async fn publish(
        &self,
        p: u32,
        subject: String,
        msg_id: &str,
        expected_last: u64,
        kind: Kind,
        payload: Bytes,
    ) -> Result<PendingAppend, LogError> {
        if matches!(kind, Kind::Entry { fence: Some(_) }) && self.replicated(p) {
            return self
                .publish_in_turn(p, subject, msg_id, expected_last, kind, payload)
                .await;
        }
        let msg = message(p, msg_id, expected_last, kind, payload);
        let ack = self
            .js
            .send_publish(subject, msg)
            .await
            .map_err(|e| errors::publish(&e))?;
        // Only the turns, not the whole log: this is every R1 append.
        let parts = Arc::clone(&self.parts);
        Ok(PendingAppend::new(async move {
            ack.await.map(appended).map_err(|e| {
                // Only a replicated stream answers 10164: its replicas were
                // raised since this process read them (`nats stream edit`).
                if errors::is_in_flight_refusal(&e) {
                    if let Some(t) = usize::try_from(p).ok().and_then(|i| parts.get(i)) {
                        t.replicas.store(3, Ordering::Relaxed);
                    }
                }
                errors::publish(&e)
            })
        }))
    }

    /// [`Self::publish`] on a replicated stream: one append at a time (see
    /// the module docs).
    async fn publish_in_turn(
        &self,
        p: u32,
        subject: String,
        msg_id: &str,
        expected_last: u64,
        kind: Kind,
        payload: Bytes,
    ) -> Result<PendingAppend, LogError> {
        let Some(turn) = self.turn(p) else {
            return Err(LogError::Invalid(format!("partition {p} out of range")));
        };
        let since = Instant::now();
        let held = Arc::clone(&turn.append).lock_owned().await;
        if turn.continues_broken(expected_last, since) {
            // It expects an append that failed: refused, or its outcome
            // unknown and its sender answered as failed. Sending it could
            // only store an entry nobody is told about.
            return Err(LogError::WrongLastSequence { last: None });
        }
        let msg = message(p, msg_id, expected_last, kind, payload.clone());
        let ack = match self.js.send_publish(subject.clone(), msg).await {
            Ok(ack) => ack,
            Err(e) => {
                turn.settled(expected_last, Err(false));
                return Err(errors::publish(&e));
            }
        };
        // The acknowledgement is awaited here, not by the caller, so the
        // next append's turn comes even while the caller is still sending.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let log = self.clone();
        let msg_id = msg_id.to_owned();
        tokio::spawn(async move {
            let mut r = ack.await;
            let mut retries = 0;
            while retries < IN_FLIGHT_RETRIES && r.as_ref().is_err_and(errors::is_in_flight_refusal) {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(10 * retries)).await;
                let msg = message(p, &msg_id, expected_last, kind, payload.clone());
                r = match log.js.send_publish(subject.clone(), msg).await {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
            }
            let step_down = match log.turn(p) {
                Some(turn) => {
                    let outcome = match &r {
                        Ok(a) => Ok(!a.duplicate),
                        Err(e) => Err(matches!(e.kind(), PublishErrorKind::TimedOut)),
                    };
                    turn.settled(expected_last, outcome);
                    r.as_ref().is_err_and(errors::is_in_flight_refusal) && turn.refused_in_flight()
                }
                None => false,
            };
            drop(held);
            let _ = tx.send(r.map(appended).map_err(|e| errors::publish(&e)));
            if step_down {
                log.unstick(p).await;
            }
        });
        Ok(PendingAppend::new(async move {
            rx.await
                .unwrap_or_else(|_| Err(LogError::Other("the append's acknowledgement was lost".to_owned())))
        }))
    }
}

/// The message of an append to partition `p`.
fn message(p: u32, msg_id: &str, expected_last: u64, kind: Kind, payload: Bytes) -> PublishMessage {
    let msg = PublishMessage::build()
        .payload(payload)
        .expected_stream(stream_name(p))
        .expected_last_sequence(expected_last)
        .message_id(msg_id);
    match kind {
        // "The newest fence is still mine": checked on the fence subject,
        // wherever this append would land.
        Kind::Entry { fence: Some(token) } => msg
            .expected_last_subject_sequence(token)
            .header(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT, fence_subject(p).as_str()),
        Kind::Entry { fence: None } => msg,
        Kind::Fence => msg.header(MESSAGE_TTL, NEVER),
    }
}

/// A publish acknowledgement as an [`Appended`].
fn appended(a: async_nats::jetstream::publish::PublishAck) -> Appended {
    Appended {
        seq: a.sequence,
        duplicate: a.duplicate,
    }
}

/// Bounds from a stream's info.
fn bounds_of(info: &stream::Info) -> Bounds {
    Bounds {
        created_ns: u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0),
        first: info.state.first_sequence,
        last: info.state.last_sequence,
    }
}

fn no_log(p: u32) -> LogError {
    LogError::Unavailable(format!("partition {p} has no log stream"))
}

#[async_trait]
impl PartitionLog for JetStreamLog {
    async fn ensure(&self, p: u32) -> Result<Bounds, LogError> {
        check_partition(&self.config, p)?;
        if let Some(b) = self.lookup(p).await? {
            return Ok(b);
        }
        match self.js.create_stream(self.stream_config(p, now_us())).await {
            Ok(s) => {
                self.saw(p, s.cached_info());
                Ok(bounds_of(s.cached_info()))
            }
            // Another writer created it first: use theirs.
            Err(e) => {
                errors::create(&e)?;
                self.lookup(p).await?.ok_or_else(|| no_log(p))
            }
        }
    }

    async fn bounds(&self, p: u32) -> Result<Bounds, LogError> {
        check_partition(&self.config, p)?;
        self.lookup(p).await?.ok_or_else(|| no_log(p))
    }

    async fn append(
        &self,
        p: u32,
        biz: &str,
        msg_id: &str,
        expected_last: u64,
        fence: Option<u64>,
        payload: Bytes,
    ) -> Result<PendingAppend, LogError> {
        check_append(&self.config, p, biz, msg_id)?;
        self.publish(
            p,
            entry_subject(p, biz),
            msg_id,
            expected_last,
            Kind::Entry { fence },
            payload,
        )
        .await
    }

    async fn fence(&self, p: u32, owner: &str) -> Result<Fence, LogError> {
        check_partition(&self.config, p)?;
        let mut refused = None;
        for _ in 0..self.config.fence_attempts.max(1) {
            let t = self.bounds(p).await?.last;
            // One id per (owner, t): a retry after an unknown outcome gets
            // the landed fence back instead of appending a second one.
            let id = format!("sb-fence.{owner}.{t}");
            let mut unknown = 0;
            loop {
                let payload = Bytes::copy_from_slice(owner.as_bytes());
                let r = match self.publish(p, fence_subject(p), &id, t, Kind::Fence, payload).await {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(a) => return Ok(Fence { token: a.seq, after: t }),
                    Err(e @ LogError::WrongLastSequence { .. }) => {
                        refused = Some(e);
                        break;
                    }
                    Err(LogError::Timeout | LogError::Conflict) if unknown < FENCE_UNKNOWN_RETRIES => unknown += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        Err(refused.unwrap_or(LogError::WrongLastSequence { last: None }))
    }

    async fn tail(&self, p: u32, after_seq: u64, limit: usize) -> Result<Vec<StoredEntry>, LogError> {
        check_partition(&self.config, p)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut range = read::range(&self.js, &self.config, p, partition_filter(p), after_seq, MAX_SEQ).await?;
        let mut out = Vec::new();
        while let Some(e) = futures_util::StreamExt::next(&mut range).await {
            out.push(e?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn read_range(
        &self,
        p: u32,
        biz: Option<&str>,
        after_seq: u64,
        up_to_seq: u64,
    ) -> Result<EntryStream, LogError> {
        let filter = match biz {
            Some(b) => {
                check_biz(&self.config, p, b)?;
                entry_subject(p, b)
            }
            None => {
                check_partition(&self.config, p)?;
                partition_filter(p)
            }
        };
        read::range(&self.js, &self.config, p, filter, after_seq, up_to_seq).await
    }

    async fn purge(&self, p: u32, biz: &str, up_to_seq: u64) -> Result<u64, LogError> {
        check_biz(&self.config, p, biz)?;
        let stream = self.stream(p).await?;
        // JetStream purges below `sequence`, not at it.
        let r = stream
            .purge()
            .filter(entry_subject(p, biz))
            .sequence(up_to_seq.saturating_add(1))
            .await
            .map_err(|e| errors::purge(&e))?;
        Ok(r.purged)
    }

    async fn first_seq_of(&self, p: u32, biz: &str) -> Result<Option<u64>, LogError> {
        check_biz(&self.config, p, biz)?;
        let stream = self.stream(p).await?;
        match stream.get_first_raw_message_by_subject(entry_subject(p, biz), 1).await {
            Ok(m) => Ok(Some(m.sequence)),
            Err(e) => errors::raw_get(&e).map(|()| None),
        }
    }

    async fn low_water(&self, p: u32, biz: &str) -> Result<u64, LogError> {
        check_biz(&self.config, p, biz)?;
        let stream = self.stream(p).await?;
        // Age and the byte limit remove the oldest entries of the stream
        // first: whatever they removed is below its oldest stored entry
        // (fences, which never age, are on another subject depth).
        let mut removed = match stream.get_first_raw_message_by_subject(entries_filter(p), 1).await {
            Ok(m) => m.sequence.saturating_sub(1),
            Err(e) => {
                errors::raw_get(&e)?;
                // Nothing stored: everything ever appended may be gone.
                self.bounds(p).await?.last
            }
        };
        // The count limit removes a bizCode's oldest entries: below its
        // oldest stored one, while it is at the limit.
        if let Some(first) = self.first_seq_of(p, biz).await? {
            let subject = entry_subject(p, biz);
            let mut info = stream
                .info_with_subjects(&subject)
                .await
                .map_err(|e| LogError::Unavailable(e.to_string()))?;
            let mut count = 0u64;
            while let Some((s, n)) = info
                .try_next()
                .await
                .map_err(|e| LogError::Unavailable(e.to_string()))?
            {
                if s == subject {
                    count = u64::try_from(n).unwrap_or(u64::MAX);
                }
            }
            if i64::try_from(count).unwrap_or(i64::MAX) >= self.config.max_messages_per_biz {
                removed = removed.max(first.saturating_sub(1));
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_is_stepped_down_after_three_refusals_in_a_row_at_most_every_ten_seconds() {
        let turn = Turn::default();
        assert!(!turn.refused_in_flight());
        assert!(!turn.refused_in_flight());
        // A stored append in between starts the count again.
        turn.settled(10, Ok(true));
        assert!(!turn.refused_in_flight());
        assert!(!turn.refused_in_flight());
        assert!(turn.refused_in_flight(), "the third in a row");
        // Within STEP_DOWN_EVERY of the last request: counted, not asked.
        for _ in 0..6 {
            assert!(!turn.refused_in_flight());
        }
        // A refusal, a duplicate answer or another failure keeps the
        // count; a timeout starts it again (our own append may be in flight).
        turn.settled(11, Ok(true));
        assert!(!turn.refused_in_flight());
        turn.settled(11, Ok(false));
        turn.settled(12, Err(false));
        assert_eq!(turn.refused.load(Ordering::Relaxed), 1);
        turn.settled(12, Err(true));
        assert_eq!(turn.refused.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_broken_pipeline_fails_what_was_waiting_to_continue_it() {
        let turn = Turn::default();
        let queued = Instant::now();
        turn.settled(10, Err(false));
        // Waiting since before the failure, expecting the failed append.
        assert!(turn.continues_broken(11, queued));
        assert!(turn.continues_broken(12, queued), "and the one after it");
        assert!(!turn.continues_broken(14, queued), "not a continuation");
        // The next batch, sent after the owner read the tail.
        assert!(!turn.continues_broken(13, Instant::now()));
        turn.settled(13, Ok(true));
        assert!(!turn.continues_broken(14, queued));
    }
}
