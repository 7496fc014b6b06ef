//! The lease loop over NATS. Every TTL/3 it:
//! 1. drops leases whose local deadline (last successful renewal sent +
//!    TTL, by the monotonic clock) has passed;
//! 2. renews every lease it holds with `update` at the held revision (all
//!    at once, each bounded by TTL/3): a failed compare-and-set loses the
//!    partition at once, a renewal that merely failed or timed out does not;
//! 3. announces this router;
//! 4. reads who is announced and what is leased, then takes free
//!    partitions up to its share (lease `create`, then `ensure` and `fence`
//!    the log: the token) or hands one over when it holds more.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use switchboard_log::PartitionLog;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::lease::{LeaseBucket, LeaseError, LeaseValue};
use super::roster::{plan, Plan};
use super::{Command, LeaseConfig, LeaseEvent, LostReason};

/// A lease this router holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// The revision to renew at.
    revision: u64,
    /// The fence's token.
    token: u64,
    /// When the lease is gone for sure unless renewed: when the last
    /// successful write was *sent*, plus the TTL (the key's age starts
    /// later, when the server stores it).
    deadline: Instant,
}

/// The lease loop's state.
pub(super) struct Service {
    bucket: LeaseBucket,
    log: Arc<dyn PartitionLog>,
    config: LeaseConfig,
    events: mpsc::Sender<LeaseEvent>,
    commands: mpsc::Receiver<Command>,
    paused: Arc<AtomicBool>,
    /// `held`'s deadlines, for the owner ([`super::LeaseHandle::valid`]).
    deadlines: Arc<super::Deadlines>,
    held: BTreeMap<u32, Held>,
    /// Partitions released here, left alone until the instant given.
    cooling: BTreeMap<u32, Instant>,
    /// A bucket operation failed for a reason other than a revision: open
    /// the bucket again before the next round (it may have been lost).
    reopen: bool,
}

impl Service {
    pub(super) fn new(
        bucket: LeaseBucket,
        log: Arc<dyn PartitionLog>,
        config: LeaseConfig,
        events: mpsc::Sender<LeaseEvent>,
        commands: mpsc::Receiver<Command>,
        paused: Arc<AtomicBool>,
        deadlines: Arc<super::Deadlines>,
    ) -> Self {
        Self {
            bucket,
            log,
            config,
            events,
            commands,
            paused,
            deadlines,
            held: BTreeMap::new(),
            cooling: BTreeMap::new(),
            reopen: false,
        }
    }

    fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    fn value(&self) -> LeaseValue {
        LeaseValue {
            owner: self.config.node_id.clone(),
            checkpoint: None,
        }
    }

    /// Runs until `shutdown`, then releases every lease and withdraws the
    /// announcement.
    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.interval());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let paused = self.paused();
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(cmd) = self.commands.recv(), if !paused => match cmd {
                    Command::Release(p, token) => {
                        if token.is_none() || token == self.held.get(&p).map(|h| h.token) {
                            self.give_up(p, LostReason::Released).await;
                        }
                    }
                },
                _ = tick.tick() => {
                    if !self.paused() {
                        self.round().await;
                    }
                }
            }
        }
        self.stop().await;
    }

    /// One round of the loop.
    async fn round(&mut self) {
        self.expire().await;
        if self.reopen {
            match self.bucket.reopen().await {
                Ok(()) => self.reopen = false,
                Err(e) => tracing::warn!(error = %e, "lease bucket still unavailable"),
            }
        }
        self.renew_all().await;
        self.expire().await;
        let op = self.config.interval();
        let announced = bounded(op, self.bucket.announce(&self.config.node_id)).await;
        if let Err(e) = announced {
            self.failed("announce", &e);
        }
        let snapshot = match bounded(op, self.bucket.snapshot()).await {
            Ok(s) => s,
            Err(e) => {
                self.failed("snapshot", &e);
                return;
            }
        };
        let now = Instant::now();
        self.cooling.retain(|_, until| *until > now);
        let held: BTreeSet<u32> = self.held.keys().copied().collect();
        let cooling: BTreeSet<u32> = self.cooling.keys().copied().collect();
        // A router that does not see itself yet still counts.
        let mut routers = snapshot.routers.len();
        if !snapshot
            .routers
            .contains(&switchboard_protocol::ids::encode(&self.config.node_id))
        {
            routers += 1;
        }
        let next = plan(
            &self.config.node_id,
            self.config.partitions,
            routers,
            &held,
            &snapshot.leased,
            &cooling,
        );
        match next {
            Plan::Acquire(ps) => {
                for p in ps {
                    self.take(p).await;
                }
            }
            Plan::HandOver(p) => self.give_up(p, LostReason::HandedOver).await,
            Plan::Hold => {}
        }
    }

    /// Notes a failed bucket operation (not a compare-and-set).
    fn failed(&mut self, what: &str, e: &LeaseError) {
        if matches!(e, LeaseError::Unavailable(_)) {
            self.reopen = true;
        }
        tracing::debug!(what, error = %e, "lease bucket operation failed");
    }

    /// Drops every lease whose deadline has passed.
    async fn expire(&mut self) {
        let now = Instant::now();
        let gone: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in gone {
            tracing::warn!(partition = p, "partition lease expired without a renewal");
            self.lose(p, LostReason::Expired).await;
        }
    }

    /// Renews every held lease at once.
    async fn renew_all(&mut self) {
        let value = self.value();
        let op = self.config.interval();
        let bucket = &self.bucket;
        let renewals = self.held.iter().map(|(p, h)| {
            let value = &value;
            async move {
                let sent = Instant::now();
                (*p, sent, bounded(op, bucket.renew(*p, value, h.revision)).await)
            }
        });
        let results = join_all(renewals).await;
        for (p, sent, r) in results {
            match r {
                Ok(revision) => {
                    if let Some(h) = self.held.get_mut(&p) {
                        h.revision = revision;
                        h.deadline = sent + self.config.ttl;
                        self.deadlines.set(p, h.token, h.deadline);
                    }
                }
                Err(LeaseError::WrongRevision) => {
                    tracing::info!(partition = p, "partition lease taken by another router");
                    self.lose(p, LostReason::Taken).await;
                }
                Err(e) => self.failed("renew", &e),
            }
        }
    }

    /// Takes partition `p`: its lease, then a fence in its log.
    async fn take(&mut self, p: u32) {
        let op = self.config.interval();
        let sent = Instant::now();
        let revision = match bounded(op, self.bucket.acquire(p, &self.value())).await {
            Ok(r) => r,
            Err(LeaseError::WrongRevision) => return,
            Err(e) => return self.failed("acquire", &e),
        };
        let deadline = sent + self.config.ttl;
        let fenced = async {
            self.log.ensure(p).await?;
            self.log.fence(p, &self.config.node_id).await
        };
        match fenced.await {
            Ok(_) if Instant::now() >= deadline => {
                // The fence took longer than the lease lasts: someone else
                // may hold the lease by now. Try again in a later round.
                tracing::warn!(partition = p, "fence landed after the lease's TTL; not taking it");
            }
            Ok(fence) => {
                self.held.insert(
                    p,
                    Held {
                        revision,
                        token: fence.token,
                        deadline,
                    },
                );
                self.deadlines.set(p, fence.token, deadline);
                tracing::info!(partition = p, token = fence.token, "partition acquired");
                self.emit(LeaseEvent::Acquired {
                    partition: p,
                    token: fence.token,
                })
                .await;
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "fencing the partition's log failed; lease given back");
                if let Err(e) = bounded(op, self.bucket.release(p, revision)).await {
                    self.failed("release", &e);
                }
                self.cooling.insert(p, Instant::now() + self.config.ttl);
            }
        }
    }

    /// Forgets partition `p` (if held) and reports it lost; answers its
    /// lease.
    async fn lose(&mut self, p: u32, reason: LostReason) -> Option<Held> {
        let h = self.held.remove(&p)?;
        self.deadlines.clear(p);
        self.emit(LeaseEvent::Lost { partition: p, reason }).await;
        Some(h)
    }

    /// Gives partition `p` up (if held): the event first, then the lease.
    async fn give_up(&mut self, p: u32, reason: LostReason) {
        let Some(h) = self.lose(p, reason).await else { return };
        tracing::info!(partition = p, ?reason, "partition given up");
        self.cooling.insert(p, Instant::now() + self.config.ttl);
        if let Err(e) = bounded(self.config.interval(), self.bucket.release(p, h.revision)).await {
            self.failed("release", &e);
        }
    }

    /// Clean shutdown: every lease released, the announcement withdrawn.
    async fn stop(&mut self) {
        let held = std::mem::take(&mut self.held);
        for p in held.keys() {
            self.deadlines.clear(*p);
            // The reader may be gone or busy: never wait for it here.
            let lost = LeaseEvent::Lost {
                partition: *p,
                reason: LostReason::Released,
            };
            if self.events.try_send(lost).is_err() {
                tracing::debug!(partition = p, "shutdown: Lost not delivered");
            }
        }
        let op = self.config.interval();
        let bucket = &self.bucket;
        let releases = held.iter().map(|(p, h)| bounded(op, bucket.release(*p, h.revision)));
        for r in join_all(releases).await {
            if let Err(e) = r {
                tracing::debug!(error = %e, "shutdown: lease not released (it expires)");
            }
        }
        if let Err(e) = bounded(op, self.bucket.withdraw(&self.config.node_id)).await {
            tracing::debug!(error = %e, "shutdown: announcement not withdrawn (it expires)");
        }
    }

    async fn emit(&self, event: LeaseEvent) {
        if self.events.send(event).await.is_err() {
            tracing::debug!(?event, "lease event dropped: nobody listens");
        }
    }
}

/// `f`, or [`LeaseError::Unavailable`] after `limit`.
async fn bounded<T>(limit: Duration, f: impl Future<Output = Result<T, LeaseError>>) -> Result<T, LeaseError> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(LeaseError::Unavailable("timed out".to_owned())))
}
