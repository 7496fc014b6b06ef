//! One partition of the memory log: its entries in sequence order, an index
//! per bizCode, and its `Msg-Id` dedupe window. Everything here runs under
//! the memory log's lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::seam::{EntryKind, StoredEntry};

/// What an entry belongs to: a bizCode, or `None` for a fence.
pub(super) type Owner = Option<String>;

/// A stored entry.
#[derive(Debug)]
pub(super) struct Stored {
    /// Its bizCode (`None`: a fence).
    pub(super) biz: Owner,
    pub(super) msg_id: Option<String>,
    pub(super) payload: Bytes,
    /// When it was stored, for `max_age` and the global cap (oldest first).
    pub(super) at: Instant,
    /// What it counts against the global byte cap.
    pub(super) size: u64,
}

impl Stored {
    pub(super) fn to_entry(&self, seq: u64) -> StoredEntry {
        let kind = match &self.biz {
            Some(biz) => EntryKind::Entry {
                biz: biz.clone(),
                msg_id: self.msg_id.clone(),
            },
            None => EntryKind::Fence {
                token: seq,
                owner: String::from_utf8_lossy(&self.payload).into_owned(),
            },
        };
        StoredEntry {
            seq,
            kind,
            payload: self.payload.clone(),
        }
    }
}

/// One partition's log.
#[derive(Debug)]
pub(super) struct Partition {
    /// Creation time in ns since the Unix epoch (part of the epoch).
    pub(super) created_ns: u64,
    /// The last sequence assigned, stored or not.
    pub(super) last: u64,
    pub(super) entries: BTreeMap<u64, Stored>,
    /// Sequences of each bizCode's (and the fences') entries, in order: the
    /// count limit, purges, per-bizCode reads and first sequences.
    pub(super) by_biz: HashMap<Owner, VecDeque<u64>>,
    /// Bytes of each bizCode's entries (the per-bizCode byte cap).
    bytes_by_biz: HashMap<Owner, u64>,
    /// `Msg-Id` → first sequence, for the dedupe window.
    dedupe: HashMap<String, u64>,
    /// `Msg-Id`s in the order they were stored, to expire them.
    dedupe_order: VecDeque<(Instant, String)>,
}

impl Partition {
    pub(super) fn new(created_ns: u64, first: u64) -> Self {
        Self {
            created_ns,
            last: first - 1,
            entries: BTreeMap::new(),
            by_biz: HashMap::new(),
            bytes_by_biz: HashMap::new(),
            dedupe: HashMap::new(),
            dedupe_order: VecDeque::new(),
        }
    }

    /// The lowest stored sequence, `last + 1` when empty.
    pub(super) fn first(&self) -> u64 {
        self.entries.keys().next().copied().unwrap_or(self.last + 1)
    }

    /// The sequence of the newest fence entry still stored.
    pub(super) fn newest_fence(&self) -> Option<u64> {
        self.by_biz.get(&None).and_then(|q| q.back().copied())
    }

    /// The first sequence stored under `msg_id` within `window`.
    pub(super) fn duplicate_of(&mut self, msg_id: &str, now: Instant, window: Duration) -> Option<u64> {
        while let Some((at, _)) = self.dedupe_order.front() {
            if now.duration_since(*at) < window {
                break;
            }
            if let Some((_, id)) = self.dedupe_order.pop_front() {
                self.dedupe.remove(&id);
            }
        }
        self.dedupe.get(msg_id).copied()
    }

    /// Stores `stored` at `last + 1` and returns its sequence.
    pub(super) fn push(&mut self, stored: Stored) -> u64 {
        self.last += 1;
        let seq = self.last;
        if let Some(id) = &stored.msg_id {
            self.dedupe.insert(id.clone(), seq);
            self.dedupe_order.push_back((stored.at, id.clone()));
        }
        self.by_biz.entry(stored.biz.clone()).or_default().push_back(seq);
        *self.bytes_by_biz.entry(stored.biz.clone()).or_default() += stored.size;
        self.entries.insert(seq, stored);
        seq
    }

    /// The oldest send (fences left out): its sequence and when it was
    /// stored.
    pub(super) fn oldest_send(&self) -> Option<(u64, Instant)> {
        self.entries
            .iter()
            .find(|(_, e)| e.biz.is_some())
            .map(|(seq, e)| (*seq, e.at))
    }

    /// Removes the oldest send. Fences stay, as JetStream keeps them
    /// (`Nats-TTL: never`): owners' appends check the newest one.
    pub(super) fn pop_oldest_send(&mut self) -> Option<(u64, Stored)> {
        let (seq, _) = self.oldest_send()?;
        let stored = self.entries.remove(&seq)?;
        self.forget(&stored.biz, seq, stored.size);
        Some((seq, stored))
    }

    /// Removes the oldest entry of `biz` if `keep` says so.
    pub(super) fn pop_oldest_of(&mut self, biz: &Owner, keep: impl Fn(u64) -> bool) -> Option<(u64, Stored)> {
        let seqs = self.by_biz.get_mut(biz)?;
        let seq = *seqs.front()?;
        if keep(seq) {
            return None;
        }
        seqs.pop_front();
        if seqs.is_empty() {
            self.by_biz.remove(biz);
        }
        let stored = self.entries.remove(&seq)?;
        self.uncount(biz, stored.size);
        Some((seq, stored))
    }

    /// Bytes of `biz`'s entries.
    pub(super) fn bytes_of(&self, biz: &Owner) -> u64 {
        self.bytes_by_biz.get(biz).copied().unwrap_or(0)
    }

    fn uncount(&mut self, biz: &Owner, size: u64) {
        if let Some(b) = self.bytes_by_biz.get_mut(biz) {
            *b = b.saturating_sub(size);
            if *b == 0 {
                self.bytes_by_biz.remove(biz);
            }
        }
    }

    /// Drops `seq` from `biz`'s index; it is always that index's oldest.
    fn forget(&mut self, biz: &Owner, seq: u64, size: u64) {
        self.uncount(biz, size);
        if let Some(seqs) = self.by_biz.get_mut(biz) {
            if seqs.front() == Some(&seq) {
                seqs.pop_front();
            } else {
                seqs.retain(|s| *s != seq);
            }
            if seqs.is_empty() {
                self.by_biz.remove(biz);
            }
        }
    }

    /// Number of entries of `biz`.
    pub(super) fn count_of(&self, biz: &Owner) -> usize {
        self.by_biz.get(biz).map_or(0, VecDeque::len)
    }

    /// Up to `limit` entries in `(after, up_to]`, of `biz` or of all.
    pub(super) fn chunk(&self, biz: Option<&Owner>, after: u64, up_to: u64, limit: usize) -> Vec<StoredEntry> {
        if after >= up_to {
            return Vec::new();
        }
        match biz {
            None => self
                .entries
                .range(after + 1..=up_to)
                .take(limit)
                .map(|(seq, s)| s.to_entry(*seq))
                .collect(),
            Some(biz) => {
                let Some(seqs) = self.by_biz.get(biz) else {
                    return Vec::new();
                };
                let start = seqs.partition_point(|s| *s <= after);
                seqs.range(start..)
                    .take_while(|s| **s <= up_to)
                    .take(limit)
                    .filter_map(|seq| self.entries.get(seq).map(|s| s.to_entry(*seq)))
                    .collect()
            }
        }
    }
}
