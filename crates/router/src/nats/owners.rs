//! History partitions over NATS (SPEC §7, `docs/recovery.md`): how a
//! router asks a partition's owner ([`NatsOwners`], a request on
//! `sb.part.<p>`), and how the owner serves the partitions whose lease it
//! holds ([`serve_partitions`]: subscribed while owned, answered by
//! [`Router::serve_partition`]).

use std::collections::HashMap;
use std::time::Duration;

use async_nats::{Client, RequestErrorKind};
use async_trait::async_trait;
use futures_util::StreamExt;
use switchboard_protocol::envelope::{self, PartReply, PartRequest};
use switchboard_protocol::subject;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::Router;
use crate::link::{EdgeError, OwnerLink};
use crate::owner::{LeaseEvent, LeaseHandle};

/// First wait before asking again while no router owns a partition.
const FIRST_RETRY: Duration = Duration::from_millis(25);

/// Longest wait between two attempts.
const MAX_RETRY: Duration = Duration::from_millis(500);

/// [`OwnerLink`] over NATS: a request on `sb.part.<p>`, which only the
/// owner subscribes to. While nobody answers (no responders, or a router
/// that just lost the partition), it asks again with a growing backoff for
/// up to `patience`: a lease TTL and a margin covers a takeover.
#[derive(Debug, Clone)]
pub struct NatsOwners {
    client: Client,
    patience: Duration,
}

impl NatsOwners {
    /// Asks over `client`, for up to `patience` per question.
    pub fn new(client: Client, patience: Duration) -> Self {
        Self { client, patience }
    }
}

#[async_trait]
impl OwnerLink for NatsOwners {
    async fn ask(&self, p: u32, req: &PartRequest) -> Result<PartReply, EdgeError> {
        let payload = envelope::encode(req).map_err(|e| EdgeError(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut wait = FIRST_RETRY;
        loop {
            // The whole question, waits included, stays within `patience`.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let asked = tokio::time::timeout(left, self.client.request(subject::partition_owner(p), payload.clone()));
            let why = match asked.await {
                Ok(Ok(msg)) => match envelope::decode::<PartReply>(&msg.payload) {
                    Ok(PartReply::NotOwner) => "the router asked no longer owns it".to_owned(),
                    Ok(reply) => return Ok(reply),
                    Err(e) => return Err(EdgeError(format!("undecodable answer of partition {p}'s owner: {e}"))),
                },
                // Nobody subscribed: no owner yet (a takeover), ask again.
                Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => e.to_string(),
                // Asked but not answered: the owner may have applied it (a
                // logged send appended). Asking again could store it twice
                // (issue 13: group sends delivered three times after a NATS
                // server was lost), so the outcome is reported unknown.
                Ok(Err(e)) => return Err(EdgeError(format!("partition {p}'s owner did not answer: {e}"))),
                Err(_) => return Err(EdgeError(format!("partition {p}'s owner did not answer in time"))),
            };
            if tokio::time::Instant::now() + wait > deadline {
                return Err(EdgeError(format!("no owner of partition {p} answered: {why}")));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RETRY);
        }
    }
}

/// How long an acquired partition waits for this router's presence index
/// to catch up with the store ([`Router::catch_up`]) before it is given
/// back; while one wait failed, the next acquisitions wait only
/// [`BEHIND_PATIENCE`] (the watch is behind for all of them, and the
/// loop must not hold up the events of other partitions).
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(2);

/// See [`CATCH_UP_PATIENCE`]: enough for a watch that merely trails a busy
/// bucket by a few milliseconds.
const BEHIND_PATIENCE: Duration = Duration::from_millis(250);

/// Follows the lease service's `events`: while this router owns a
/// partition it subscribes `sb.part.<p>` and answers what other routers
/// forward; until `shutdown`. A partition this router cannot open (its
/// presence index is behind the store, the log cannot be read, the
/// subscription fails) is given back through `leases`, so that it does not
/// stay leased with nobody answering for it; it is taken again (here or
/// elsewhere) after a TTL.
pub fn serve_partitions(
    router: Router,
    client: Client,
    mut events: mpsc::Receiver<LeaseEvent>,
    leases: LeaseHandle,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    router.follow_leases(leases.clone());
    tokio::spawn(async move {
        let mut owned: HashMap<u32, CancellationToken> = HashMap::new();
        let mut behind = false;
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => break,
                e = events.recv() => match e { Some(e) => e, None => break },
            };
            match event {
                LeaseEvent::Acquired { partition, token } => {
                    if !leases.valid(partition, token) {
                        // Lost (or acquired again) since: its Lost follows.
                        continue;
                    }
                    let give_back = |why: &str| {
                        if !leases.release(partition, token) {
                            tracing::error!(
                                partition,
                                why,
                                "cannot give the partition back: the lease loop is stopped or busy"
                            );
                        }
                    };
                    let patience = if behind { BEHIND_PATIENCE } else { CATCH_UP_PATIENCE };
                    match router.catch_up(patience).await {
                        Ok(true) => behind = false,
                        Ok(false) => {
                            behind = true;
                            tracing::warn!(partition, "presence index behind the store; partition given back");
                            give_back("index behind");
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(partition, error = %e, "presence store unreadable; partition given back");
                            give_back("store unreadable");
                            continue;
                        }
                    }
                    if let Err(e) = router.acquire(partition, token).await {
                        tracing::warn!(partition, error = %e, "cannot open an acquired partition; given back");
                        give_back("cannot open");
                        continue;
                    }
                    let sub = match client.subscribe(subject::partition_owner(partition)).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(partition, error = %e, "cannot subscribe an acquired partition; given back");
                            router.release(partition).await;
                            give_back("cannot subscribe");
                            continue;
                        }
                    };
                    let stop = shutdown.child_token();
                    if let Some(old) = owned.insert(partition, stop.clone()) {
                        old.cancel();
                    }
                    tasks.spawn(serve_one(
                        router.clone(),
                        client.clone(),
                        partition,
                        sub,
                        stop,
                        tasks.clone(),
                    ));
                }
                LeaseEvent::Lost { partition, reason } => {
                    tracing::info!(partition, ?reason, "partition lost");
                    router.release(partition).await;
                    if let Some(stop) = owned.remove(&partition) {
                        stop.cancel();
                    }
                }
            }
        }
        for (_, stop) in owned {
            stop.cancel();
        }
    });
}

async fn serve_one(
    router: Router,
    client: Client,
    p: u32,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let req: PartRequest = match envelope::decode(&msg.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "undecodable partition request dropped");
                continue;
            }
        };
        // Only into a router's inbox (only routers may ask; see
        // `spawn_handler` for why the reply subject is checked).
        let Some(reply) = msg.reply.filter(|r| subject::is_router_reply(r)) else {
            continue;
        };
        let (router, client) = (router.clone(), client.clone());
        tasks.spawn(async move {
            let answer = router.serve_partition(p, req).await;
            if let Ok(bytes) = envelope::encode(&answer) {
                if let Err(e) = client.publish(reply, bytes).await {
                    tracing::warn!(partition = p, error = %e, "partition reply failed");
                }
            }
        });
    }
    let _ = sub.unsubscribe().await;
}
