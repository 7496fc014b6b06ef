//! The `standalone` twin of the JetStream log: the same contract in one
//! process's memory, plus a global byte cap whose evictions are reported
//! (each raises its bizCode's low-water mark).

mod partition;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use self::partition::{Owner, Partition, Stored};
use crate::config::LogConfig;
use crate::seam::{
    check_append, check_biz, check_partition, now_ns, now_us, Appended, Bounds, EntryStream, Fence, LogError,
    PartitionLog, PendingAppend, StoredEntry, MAX_SEQ,
};

/// Low-water marks kept per bizCode before those of bizCodes with nothing
/// stored are folded into their partition's floor.
const LOW_WATER_KEYS: usize = 4096;

/// Entries copied out per lock taken by a range read.
const READ_CHUNK: usize = 256;

/// Entries of one bizCode removed by the global byte cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The partition.
    pub partition: u32,
    /// The bizCode.
    pub biz: String,
    /// Its entries at or below this sequence may be gone: its new
    /// low-water mark.
    pub up_to: u64,
}

/// The partition log in memory, for `standalone`.
///
/// Sequences start at the wall clock in µs when a partition is first
/// ensured, and after [`MemoryLog::drop_partition`] above every sequence
/// it had. An entry counts its payload, bizCode and `Msg-Id` bytes against
/// the global cap; over the cap the oldest entries of all partitions go
/// first. Fence entries leave only by the count limit (as in JetStream,
/// where they carry `Nats-TTL: never`), neither by age nor by the cap: the
/// owner's appends check the newest one.
#[derive(Debug, Clone)]
pub struct MemoryLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LogConfig,
    /// The global byte cap (`history` in standalone: one process).
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    parts: HashMap<u32, Partition>,
    /// Per partition, the last sequence and creation time it ever had, so
    /// a partition created again starts above both.
    history: HashMap<u32, (u64, u64)>,
    /// Bytes stored in all partitions.
    bytes: u64,
    /// Per bizCode, the highest sequence that left the log by any cause
    /// (age, count, the byte cap, a purge).
    low_water: HashMap<String, u64>,
    /// Per partition, the highest low-water mark of the bizCodes forgotten
    /// from `low_water` (those with nothing stored any more): theirs now.
    floor: HashMap<u32, u64>,
    /// `low_water` is pruned when it grows past this (amortized: twice
    /// what the last pruning kept, at least [`LOW_WATER_KEYS`]).
    prune_above: usize,
    /// Evictions not yet taken, per (partition, bizCode).
    evicted: HashMap<(u32, String), u64>,
}

impl State {
    /// Records that `biz`'s entries up to `seq` may have left the log.
    fn raise_low_water(&mut self, biz: Option<&String>, seq: u64) {
        if let Some(biz) = biz.filter(|_| seq > 0) {
            let lw = self.low_water.entry(biz.clone()).or_insert(0);
            *lw = (*lw).max(seq);
        }
    }

    /// Keeps the low-water marks bounded by the bizCodes with entries
    /// stored: over [`LOW_WATER_KEYS`], those of bizCodes with nothing
    /// stored are folded into their partition's floor (a mark only ever
    /// rises, so a recovery it refuses was at worst possible).
    fn prune_low_water(&mut self, partitions: u32) {
        if self.low_water.len() <= self.prune_above.max(LOW_WATER_KEYS) {
            return;
        }
        let parts = &self.parts;
        let mut folded: Vec<(u32, u64)> = Vec::new();
        self.low_water.retain(|biz, lw| {
            let p = crate::partition::partition_of(biz, partitions);
            let stored = parts.get(&p).is_some_and(|part| part.count_of(&Some(biz.clone())) > 0);
            if !stored {
                folded.push((p, *lw));
            }
            stored
        });
        for (p, lw) in folded {
            let f = self.floor.entry(p).or_insert(0);
            *f = (*f).max(lw);
        }
        self.prune_above = self.low_water.len().saturating_mul(2);
    }

    /// `biz`'s low-water mark, its partition's floor included.
    fn low_water_of(&self, p: u32, biz: &str) -> u64 {
        let own = self.low_water.get(biz).copied().unwrap_or(0);
        own.max(self.floor.get(&p).copied().unwrap_or(0))
    }
}

impl MemoryLog {
    /// A memory log with `config`'s limits and a global cap of `max_bytes`.
    #[must_use]
    pub fn new(config: LogConfig, max_bytes: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                max_bytes,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The highest sequence of `biz` that left the log by any cause (age,
    /// count, the global cap, a purge), 0 if none: entries at or below it
    /// may be missing from reads.
    #[must_use]
    pub fn low_water(&self, biz: &str) -> u64 {
        let p = crate::partition::partition_of(biz, self.inner.config.partitions);
        self.inner.state.lock().low_water_of(p, biz)
    }

    /// The evictions by the global cap since the last call, one per
    /// partition and bizCode.
    #[must_use]
    pub fn take_evictions(&self) -> Vec<Eviction> {
        let mut s = self.inner.state.lock();
        let mut out: Vec<Eviction> = s
            .evicted
            .drain()
            .map(|((partition, biz), up_to)| Eviction { partition, biz, up_to })
            .collect();
        out.sort_by(|a, b| (a.partition, &a.biz).cmp(&(b.partition, &b.biz)));
        out
    }

    /// Bytes stored in all partitions.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.inner.state.lock().bytes
    }

    /// Loses partition `p`'s log, as a restart would: appends fail with
    /// [`LogError::Unavailable`] until it is ensured again, with a new
    /// creation time and sequences above the old ones.
    pub fn drop_partition(&self, p: u32) {
        let mut s = self.inner.state.lock();
        if let Some(part) = s.parts.remove(&p) {
            let bytes: u64 = part.entries.values().map(|e| e.size).sum();
            s.bytes = s.bytes.saturating_sub(bytes);
            s.history.insert(p, (part.last, part.created_ns));
        }
    }
}

impl Inner {
    /// Removes what is older than `max_age`, in every partition.
    fn expire(&self, s: &mut State, now: Instant) {
        let max_age = self.config.max_age;
        let mut freed = 0;
        let mut removed = Vec::new();
        for part in s.parts.values_mut() {
            while part
                .oldest_send()
                .is_some_and(|(_, at)| now.duration_since(at) >= max_age)
            {
                if let Some((seq, e)) = part.pop_oldest_send() {
                    freed += e.size;
                    removed.push((e.biz, seq));
                }
            }
        }
        s.bytes = s.bytes.saturating_sub(freed);
        for (biz, seq) in removed {
            s.raise_low_water(biz.as_ref(), seq);
        }
        s.prune_low_water(self.config.partitions);
    }

    /// Evicts the oldest entries of all partitions while over the cap.
    fn enforce_cap(&self, s: &mut State) {
        while s.bytes > self.max_bytes {
            let oldest = s
                .parts
                .iter()
                .filter_map(|(p, part)| part.oldest_send().map(|(_, at)| (at, *p)))
                .min();
            let Some((_, p)) = oldest else { break };
            let Some((seq, e)) = s.parts.get_mut(&p).and_then(Partition::pop_oldest_send) else {
                break;
            };
            s.bytes = s.bytes.saturating_sub(e.size);
            s.raise_low_water(e.biz.as_ref(), seq);
            if let Some(biz) = e.biz {
                let ev = s.evicted.entry((p, biz)).or_insert(0);
                *ev = (*ev).max(seq);
            }
        }
    }

    /// The append itself, under the lock.
    fn append(
        &self,
        p: u32,
        biz: Owner,
        msg_id: Option<&str>,
        expected_last: u64,
        fence: Option<u64>,
        payload: Bytes,
    ) -> Result<Appended, LogError> {
        let now = Instant::now();
        let mut s = self.state.lock();
        self.expire(&mut s, now);
        let window = self.config.duplicate_window;
        let Some(part) = s.parts.get_mut(&p) else {
            return Err(no_log(p));
        };
        // As JetStream does: the expectation first, then the dedupe window.
        if part.last != expected_last {
            return Err(LogError::WrongLastSequence { last: Some(part.last) });
        }
        if let Some(token) = fence {
            // As `Nats-Expected-Last-Subject-Sequence` on the fence subject:
            // the newest fence still stored (0: none) must be the token.
            let newest = part.newest_fence().unwrap_or(0);
            if newest != token {
                return Err(LogError::WrongLastSequence { last: Some(newest) });
            }
        }
        if let Some(id) = msg_id {
            if let Some(seq) = part.duplicate_of(id, now, window) {
                return Ok(Appended { seq, duplicate: true });
            }
        }
        if part.last >= MAX_SEQ {
            return Err(LogError::Other(format!("partition {p} reached the highest sequence")));
        }
        let size = payload.len() + biz.as_ref().map_or(0, String::len) + msg_id.map_or(0, str::len);
        let size = u64::try_from(size).unwrap_or(u64::MAX);
        let max_per_biz = usize::try_from(self.config.max_messages_per_biz).unwrap_or(usize::MAX);
        let seq = part.push(Stored {
            biz: biz.clone(),
            msg_id: msg_id.map(str::to_owned),
            payload,
            at: now,
            size,
        });
        let mut freed = 0;
        let mut removed = 0;
        let max_bytes = self.config.max_bytes_per_biz.unsigned_abs();
        while part.count_of(&biz) > max_per_biz || (part.bytes_of(&biz) > max_bytes && part.count_of(&biz) > 1) {
            match part.pop_oldest_of(&biz, |_| false) {
                Some((seq, e)) => {
                    freed += e.size;
                    removed = seq;
                }
                None => break,
            }
        }
        s.bytes = (s.bytes + size).saturating_sub(freed);
        s.raise_low_water(biz.as_ref(), removed);
        self.enforce_cap(&mut s);
        Ok(Appended { seq, duplicate: false })
    }

    fn bounds(&self, p: u32) -> Result<Bounds, LogError> {
        let mut s = self.state.lock();
        self.expire(&mut s, Instant::now());
        let part = s.parts.get(&p).ok_or_else(|| no_log(p))?;
        Ok(Bounds {
            created_ns: part.created_ns,
            first: part.first(),
            last: part.last,
        })
    }

    fn chunk(
        &self,
        p: u32,
        biz: Option<&Owner>,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, LogError> {
        let mut s = self.state.lock();
        self.expire(&mut s, Instant::now());
        let part = s.parts.get(&p).ok_or_else(|| no_log(p))?;
        Ok(part.chunk(biz, after, up_to, limit))
    }
}

fn no_log(p: u32) -> LogError {
    LogError::Unavailable(format!("partition {p} has no log"))
}

#[async_trait]
impl PartitionLog for MemoryLog {
    async fn ensure(&self, p: u32) -> Result<Bounds, LogError> {
        check_partition(&self.inner.config, p)?;
        {
            let mut s = self.inner.state.lock();
            if !s.parts.contains_key(&p) {
                let (last, created) = s.history.get(&p).copied().unwrap_or((0, 0));
                let first = now_us().max(last + 1);
                let part = Partition::new(now_ns().max(created + 1), first);
                s.parts.insert(p, part);
            }
        }
        self.inner.bounds(p)
    }

    async fn bounds(&self, p: u32) -> Result<Bounds, LogError> {
        check_partition(&self.inner.config, p)?;
        self.inner.bounds(p)
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
        check_append(&self.inner.config, p, biz, msg_id)?;
        let r = self
            .inner
            .append(p, Some(biz.to_owned()), Some(msg_id), expected_last, fence, payload);
        Ok(PendingAppend::ready(r))
    }

    async fn fence(&self, p: u32, owner: &str) -> Result<Fence, LogError> {
        check_partition(&self.inner.config, p)?;
        let mut refused = None;
        for _ in 0..self.inner.config.fence_attempts.max(1) {
            let t = self.inner.bounds(p)?.last;
            let payload = Bytes::copy_from_slice(owner.as_bytes());
            match self.inner.append(p, None, None, t, None, payload) {
                Ok(a) => return Ok(Fence { token: a.seq, after: t }),
                Err(e @ LogError::WrongLastSequence { .. }) => refused = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(refused.unwrap_or(LogError::WrongLastSequence { last: None }))
    }

    async fn tail(&self, p: u32, after_seq: u64, limit: usize) -> Result<Vec<StoredEntry>, LogError> {
        check_partition(&self.inner.config, p)?;
        self.inner.chunk(p, None, after_seq, MAX_SEQ, limit)
    }

    async fn read_range(
        &self,
        p: u32,
        biz: Option<&str>,
        after_seq: u64,
        up_to_seq: u64,
    ) -> Result<EntryStream, LogError> {
        match biz {
            Some(b) => check_biz(&self.inner.config, p, b)?,
            None => check_partition(&self.inner.config, p)?,
        }
        // The head as the read starts: the range never runs past it.
        let end = up_to_seq.min(self.inner.bounds(p)?.last);
        let owner: Option<Owner> = biz.map(|b| Some(b.to_owned()));
        let inner = Arc::clone(&self.inner);
        let state = (inner, owner, after_seq, Vec::<StoredEntry>::new().into_iter(), false);
        let stream = futures_util::stream::unfold(state, move |(inner, owner, cursor, mut buf, done)| async move {
            if let Some(e) = buf.next() {
                return Some((Ok(e), (inner, owner, cursor, buf, done)));
            }
            if done || cursor >= end {
                return None;
            }
            match inner.chunk(p, owner.as_ref(), cursor, end, READ_CHUNK) {
                Err(e) => Some((Err(e), (inner, owner, end, buf, true))),
                Ok(chunk) => {
                    let last_chunk = chunk.len() < READ_CHUNK;
                    let next = chunk.last().map_or(end, |e| e.seq);
                    let mut buf = chunk.into_iter();
                    let first = buf.next()?;
                    Some((Ok(first), (inner, owner, next, buf, last_chunk)))
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn purge(&self, p: u32, biz: &str, up_to_seq: u64) -> Result<u64, LogError> {
        check_biz(&self.inner.config, p, biz)?;
        let mut s = self.inner.state.lock();
        let part = s.parts.get_mut(&p).ok_or_else(|| no_log(p))?;
        let owner = Some(biz.to_owned());
        let (mut purged, mut freed) = (0, 0);
        while let Some((_, e)) = part.pop_oldest_of(&owner, |seq| seq > up_to_seq) {
            purged += 1;
            freed += e.size;
        }
        s.bytes = s.bytes.saturating_sub(freed);
        s.raise_low_water(owner.as_ref(), up_to_seq.min(MAX_SEQ));
        Ok(purged)
    }

    async fn low_water(&self, p: u32, biz: &str) -> Result<u64, LogError> {
        check_biz(&self.inner.config, p, biz)?;
        let mut s = self.inner.state.lock();
        self.inner.expire(&mut s, Instant::now());
        if !s.parts.contains_key(&p) {
            return Err(no_log(p));
        }
        s.prune_low_water(self.inner.config.partitions);
        Ok(s.low_water_of(p, biz))
    }

    async fn first_seq_of(&self, p: u32, biz: &str) -> Result<Option<u64>, LogError> {
        check_biz(&self.inner.config, p, biz)?;
        let mut s = self.inner.state.lock();
        self.inner.expire(&mut s, Instant::now());
        let part = s.parts.get(&p).ok_or_else(|| no_log(p))?;
        Ok(part.by_biz.get(&Some(biz.to_owned())).and_then(|q| q.front().copied()))
    }
}

#[cfg(test)]
mod tests;
