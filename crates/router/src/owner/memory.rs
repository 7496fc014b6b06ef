//! The `standalone` twin of the lease loop: the one router owns every
//! partition. It still fences the log when it takes a partition, so tokens
//! behave as in a cluster (a new token after every release).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use switchboard_log::PartitionLog;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{Command, LeaseConfig, LeaseEvent, LostReason};

/// The twin's state.
pub(super) struct Twin {
    log: Arc<dyn PartitionLog>,
    config: LeaseConfig,
    events: mpsc::Sender<LeaseEvent>,
    commands: mpsc::Receiver<Command>,
    held: BTreeSet<u32>,
    /// Partitions released, taken back from the instant given.
    cooling: BTreeMap<u32, Instant>,
}

impl Twin {
    pub(super) fn new(
        log: Arc<dyn PartitionLog>,
        config: LeaseConfig,
        events: mpsc::Sender<LeaseEvent>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        Self {
            log,
            config,
            events,
            commands,
            held: BTreeSet::new(),
            cooling: BTreeMap::new(),
        }
    }

    /// Takes every partition, then every released one again after a TTL,
    /// until `shutdown`.
    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.interval());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(Command::Release(p, _)) = self.commands.recv() => {
                    if self.held.remove(&p) {
                        self.cooling.insert(p, Instant::now() + self.config.ttl);
                        self.emit(LeaseEvent::Lost { partition: p, reason: LostReason::Released }).await;
                    }
                }
                _ = tick.tick() => self.round().await,
            }
        }
        for p in std::mem::take(&mut self.held) {
            let lost = LeaseEvent::Lost {
                partition: p,
                reason: LostReason::Released,
            };
            if self.events.try_send(lost).is_err() {
                tracing::debug!(partition = p, "shutdown: Lost not delivered");
            }
        }
    }

    async fn round(&mut self) {
        let now = Instant::now();
        self.cooling.retain(|_, until| *until > now);
        for p in 0..self.config.partitions {
            if self.held.contains(&p) || self.cooling.contains_key(&p) {
                continue;
            }
            let fenced = async {
                self.log.ensure(p).await?;
                self.log.fence(p, &self.config.node_id).await
            };
            match fenced.await {
                Ok(fence) => {
                    self.held.insert(p);
                    self.emit(LeaseEvent::Acquired {
                        partition: p,
                        token: fence.token,
                    })
                    .await;
                }
                Err(e) => tracing::warn!(partition = p, error = %e, "fencing the partition's log failed"),
            }
        }
    }

    async fn emit(&self, event: LeaseEvent) {
        if self.events.send(event).await.is_err() {
            tracing::debug!(?event, "lease event dropped: nobody listens");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchboard_log::{LogConfig, MemoryLog};

    use super::super::Leases;
    use super::*;

    #[tokio::test]
    async fn the_twin_owns_every_partition_and_refences_after_a_release() {
        let log = Arc::new(MemoryLog::new(
            LogConfig {
                partitions: 4,
                ..LogConfig::default()
            },
            1 << 20,
        ));
        let mut config = LeaseConfig::new("solo", "sb-presence", 4);
        config.ttl = Duration::from_millis(300);
        let shutdown = CancellationToken::new();
        let (leases, mut events) = Leases::spawn_memory(log.clone(), config, shutdown.clone());
        let mut tokens = BTreeMap::new();
        while tokens.len() < 4 {
            match events.recv().await {
                Some(LeaseEvent::Acquired { partition, token }) => {
                    tokens.insert(partition, token);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(leases.release(2));
        assert_eq!(
            events.recv().await,
            Some(LeaseEvent::Lost {
                partition: 2,
                reason: LostReason::Released
            })
        );
        let Some(LeaseEvent::Acquired { partition: 2, token }) = events.recv().await else {
            panic!("partition 2 taken back");
        };
        assert!(token > tokens[&2], "a new fence, a higher token");
        // The old token is fenced out of the memory log.
        let biz = (0..)
            .map(|i| format!("b{i}"))
            .find(|b| switchboard_log::partition_of(b, 4) == 2)
            .unwrap_or_default();
        let last = log.bounds(2).await.map(|b| b.last).unwrap_or_default();
        let old = match log
            .append(2, &biz, "m1", last, Some(tokens[&2]), bytes::Bytes::new())
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        assert!(
            matches!(old, Err(switchboard_log::LogError::WrongLastSequence { .. })),
            "{old:?}"
        );
        shutdown.cancel();
        leases.join().await;
        let mut lost = 0;
        while let Some(ev) = events.recv().await {
            assert!(matches!(
                ev,
                LeaseEvent::Lost {
                    reason: LostReason::Released,
                    ..
                }
            ));
            lost += 1;
        }
        assert_eq!(lost, 4);
    }
}
