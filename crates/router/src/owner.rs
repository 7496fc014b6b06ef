//! Partition ownership (issue 12, `docs/recovery.md` "The partition
//! owner"): which router owns which partition of the history log.
//!
//! A router takes a partition in two steps: it acquires the partition's
//! lease in the KV bucket `<presence_bucket>-leases` (a hint), then fences
//! the partition's log (the authority). The fence entry's sequence is the
//! owner's **token**: every append it makes names it, and the log refuses
//! them all once a newer fence exists. Tokens come from the log, so they
//! keep increasing even if the lease bucket is lost.
//!
//! Routers announce themselves in the same bucket, count each other, and
//! hold at most `ceil(P / routers)` partitions each, handing extras over
//! one per renewal interval.
//!
//! - [`lease`]: the bucket, its keys and compare-and-set operations;
//! - [`roster`]: fair shares and what to take or hand over;
//! - `service`: the lease loop over NATS ([`Leases::spawn_kv`]);
//! - `memory`: the `standalone` twin ([`Leases::spawn_memory`]), which owns
//!   every partition and still fences the memory log.
//!
//! Not wired into routing yet: the owner (planning, appends, dispatch)
//! consumes [`LeaseEvent`]s.

pub mod lease;
mod memory;
pub mod roster;
mod service;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard_log::PartitionLog;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use lease::{LeaseBucket, LeaseError};

/// Default lease TTL (the bucket's `max_age`).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// Settings of the lease service.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// This router's node id (lease owner, announcement key, fence owner).
    pub node_id: String,
    /// Number of partitions (`history.partitions`).
    pub partitions: u32,
    /// Lease TTL: the bucket's `max_age`; renewals every TTL/3; a lease not
    /// renewed for a TTL by the local monotonic clock is lost. Default 5 s.
    pub ttl: Duration,
    /// The lease bucket: `<presence_bucket>-leases`.
    pub bucket: String,
    /// Replicas of the bucket (3 in a NATS cluster). Default 1.
    pub replicas: usize,
}

impl LeaseConfig {
    /// Defaults for router `node_id` next to presence bucket
    /// `presence_bucket`, with `partitions` partitions.
    #[must_use]
    pub fn new(node_id: &str, presence_bucket: &str, partitions: u32) -> Self {
        Self {
            node_id: node_id.to_owned(),
            partitions,
            ttl: DEFAULT_LEASE_TTL,
            bucket: lease::bucket_name(presence_bucket),
            replicas: 1,
        }
    }

    /// How often leases are renewed and free partitions looked for: TTL/3.
    fn interval(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(10))
    }
}

/// What the owner code learns from the lease service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// This router owns `partition` from now on: its fence landed at
    /// `token`, and every append must name it.
    Acquired {
        /// The partition.
        partition: u32,
        /// The fence entry's sequence.
        token: u64,
    },
    /// This router no longer owns `partition`: stop appending and
    /// dispatching for it (its appends would be refused anyway once the
    /// next owner fences).
    Lost {
        /// The partition.
        partition: u32,
        /// Why.
        reason: LostReason,
    },
}

/// Why a partition was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// A renewal's compare-and-set failed: the lease is someone else's.
    Taken,
    /// No renewal succeeded for a TTL by the local monotonic clock.
    Expired,
    /// Planned handover: this router held more than its share.
    HandedOver,
    /// [`Leases::release`] or a clean shutdown.
    Released,
}

/// A request to the lease loop.
#[derive(Debug, Clone, Copy)]
enum Command {
    /// Give partition `.0` up; only the acquisition with token `.1` when
    /// one is named (an older one's give-back must not end a newer one).
    Release(u32, Option<u64>),
}

/// The running lease service: events come through the receiver returned
/// with it; it stops when its shutdown token is cancelled, releasing every
/// lease it holds (each reported as [`LostReason::Released`]).
#[derive(Debug)]
pub struct Leases {
    commands: mpsc::Sender<Command>,
    paused: Arc<AtomicBool>,
    deadlines: Arc<Deadlines>,
    task: JoinHandle<()>,
}

/// Until when each partition's lease is surely this router's: the last
/// renewal *sent* plus the TTL (the lease key's age starts later, when the
/// server stores it, so no other router can have acquired it before). The
/// lease loop keeps it; the owner stops acting as one once it passed
/// ([`LeaseHandle::valid`]), not only at the loop's next round.
#[derive(Debug)]
pub(crate) struct Deadlines {
    base: tokio::time::Instant,
    /// Milliseconds after `base`; 0: not held.
    until: Box<[std::sync::atomic::AtomicU64]>,
    /// The fence token each lease was acquired with.
    tokens: Box<[std::sync::atomic::AtomicU64]>,
    /// False for the `standalone` twin, which owns every partition.
    enforced: bool,
}

impl Deadlines {
    fn new(partitions: u32, enforced: bool) -> Self {
        Self {
            base: tokio::time::Instant::now(),
            until: (0..partitions).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
            tokens: (0..partitions).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
            enforced,
        }
    }

    /// Partition `p`, fenced at `token`, is held until `deadline`.
    pub(crate) fn set(&self, p: u32, token: u64, deadline: tokio::time::Instant) {
        let ms = u64::try_from(deadline.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        if let (Some(u), Some(t)) = (self.until.get(p as usize), self.tokens.get(p as usize)) {
            t.store(token, Ordering::Release);
            u.store(ms.max(1), Ordering::Release);
        }
    }

    /// Partition `p` is no longer held.
    pub(crate) fn clear(&self, p: u32) {
        if let Some(u) = self.until.get(p as usize) {
            u.store(0, Ordering::Release);
        }
    }

    fn valid(&self, p: u32, token: u64) -> bool {
        if !self.enforced {
            return true;
        }
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (Some(u), Some(t)) = (self.until.get(p as usize), self.tokens.get(p as usize)) else {
            return false;
        };
        t.load(Ordering::Acquire) == token && now < u.load(Ordering::Acquire)
    }
}

impl Leases {
    /// Opens the lease bucket and spawns the lease loop for `config` over
    /// `js`, fencing `log`. The event channel is bounded (4 × P): the loop
    /// waits for a slow reader, and a reader that stalls for a TTL loses
    /// its partitions as a stalled process would.
    ///
    /// # Errors
    /// [`LeaseError::Unavailable`] if the bucket cannot be opened.
    pub async fn spawn_kv(
        js: &async_nats::jetstream::Context,
        log: Arc<dyn PartitionLog>,
        config: LeaseConfig,
        shutdown: CancellationToken,
    ) -> Result<(Self, mpsc::Receiver<LeaseEvent>), LeaseError> {
        let bucket = LeaseBucket::open(js, &config.bucket, config.ttl, config.replicas).await?;
        let (events, rx) = mpsc::channel(event_capacity(&config));
        let (commands, commands_rx) = mpsc::channel(event_capacity(&config));
        let paused = Arc::new(AtomicBool::new(false));
        let deadlines = Arc::new(Deadlines::new(config.partitions, true));
        let service = service::Service::new(
            bucket,
            log,
            config,
            events,
            commands_rx,
            Arc::clone(&paused),
            Arc::clone(&deadlines),
        );
        let task = tokio::spawn(service.run(shutdown));
        Ok((Self::running(commands, paused, deadlines, task), rx))
    }

    fn running(
        commands: mpsc::Sender<Command>,
        paused: Arc<AtomicBool>,
        deadlines: Arc<Deadlines>,
        task: JoinHandle<()>,
    ) -> Self {
        Self {
            commands,
            paused,
            deadlines,
            task,
        }
    }

    /// The `standalone` twin: one router owns every partition, fencing the
    /// memory log (or any log) so tokens behave as in a cluster.
    #[must_use]
    pub fn spawn_memory(
        log: Arc<dyn PartitionLog>,
        config: LeaseConfig,
        shutdown: CancellationToken,
    ) -> (Self, mpsc::Receiver<LeaseEvent>) {
        let (events, rx) = mpsc::channel(event_capacity(&config));
        let (commands, commands_rx) = mpsc::channel(event_capacity(&config));
        let paused = Arc::new(AtomicBool::new(false));
        let deadlines = Arc::new(Deadlines::new(config.partitions, false));
        let twin = memory::Twin::new(log, config, events, commands_rx);
        let task = tokio::spawn(twin.run(shutdown));
        (Self::running(commands, paused, deadlines, task), rx)
    }

    /// Gives partition `p` up: a [`LostReason::Released`] event, then the
    /// lease is deleted, and this router leaves `p` alone for a TTL (the
    /// memory twin takes it back after that, with a new fence). Returns
    /// `false` if the loop has stopped or is too busy to take the request.
    pub fn release(&self, p: u32) -> bool {
        self.commands.try_send(Command::Release(p, None)).is_ok()
    }

    /// A handle that gives partitions up ([`Self::release`]), for the
    /// code that opens what the loop acquired.
    #[must_use]
    pub fn handle(&self) -> LeaseHandle {
        LeaseHandle {
            commands: self.commands.clone(),
            deadlines: Arc::clone(&self.deadlines),
        }
    }

    /// Fault injection: while paused the loop does nothing, as a frozen
    /// process would (no renewals, no announcements, no commands). On
    /// resume it first drops every lease whose TTL has passed. The memory
    /// twin ignores it.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Waits for the loop to end (after its shutdown token is cancelled).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "lease loop failed");
        }
    }
}

/// Gives partitions up, like [`Leases::release`], and tells whether a
/// lease is still surely held; cloneable.
#[derive(Debug, Clone)]
pub struct LeaseHandle {
    commands: mpsc::Sender<Command>,
    deadlines: Arc<Deadlines>,
}

impl LeaseHandle {
    /// As [`Leases::release`], for the acquisition fenced at `token` only
    /// (nothing happens if the partition was lost and acquired again
    /// since). False if the loop has stopped or is too busy.
    pub fn release(&self, p: u32, token: u64) -> bool {
        self.commands.try_send(Command::Release(p, Some(token))).is_ok()
    }

    /// Whether partition `p`'s lease is surely still this router's under
    /// the fence `token`: held, and its last renewal sent less than a TTL
    /// ago. Past that another router may have acquired and fenced it, so
    /// this one must not answer for it any more (a join it answered would
    /// hand out a position and a token the new owner does not plan with).
    /// Always true for the `standalone` twin.
    pub fn valid(&self, p: u32, token: u64) -> bool {
        self.deadlines.valid(p, token)
    }
}

fn event_capacity(config: &LeaseConfig) -> usize {
    usize::try_from(config.partitions)
        .unwrap_or(1024)
        .saturating_mul(4)
        .max(16)
}

#[cfg(test)]
mod deadlines {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_surely_held_until_its_deadline_only() {
        let d = Deadlines::new(4, true);
        assert!(!d.valid(1, 7), "not held");
        d.set(1, 7, tokio::time::Instant::now() + Duration::from_secs(5));
        assert!(d.valid(1, 7));
        assert!(!d.valid(1, 6), "an older acquisition's token");
        assert!(!d.valid(2, 7) && !d.valid(99, 7));
        tokio::time::advance(Duration::from_millis(4_990)).await;
        assert!(d.valid(1, 7));
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(!d.valid(1, 7), "past the last renewal sent plus the TTL");
        d.set(1, 7, tokio::time::Instant::now() + Duration::from_secs(5));
        assert!(d.valid(1, 7), "renewed");
        d.clear(1);
        assert!(!d.valid(1, 7), "lost");
        let twin = Deadlines::new(4, false);
        assert!(twin.valid(3, 1), "standalone owns every partition");
    }
}
