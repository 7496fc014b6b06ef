//! `standalone`: webhook delivery from the in-process event sink.
//!
//! One loop reads the sink's channel, looks up each event's bizCode and
//! hands the events its webhook wants to that bizCode's queue (bounded by
//! `webhooks.queue`; past it the event is dropped and counted, so a slow
//! endpoint never holds back the sink or another bizCode). One task per
//! bizCode with a webhook takes what is queued (at most
//! `webhooks.max_batch`), POSTs it, and on failure tries the same batch
//! again after the backoff, up to `webhooks.max_attempts` attempts, then
//! counts its events as dead letters. Nothing is durable: events queued or
//! being retried are lost when the process stops.

use std::collections::HashMap;

use bytes::Bytes;
use switchboard_protocol::event::Event;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::post::Outcome;
use super::{batch_body, Dispatch};

/// Delivers the events `events` yields until it closes or `shutdown`.
pub fn spawn(mut events: mpsc::Receiver<Event>, dispatch: Dispatch, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut queues: HashMap<String, mpsc::Sender<Bytes>> = HashMap::new();
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                () = shutdown.cancelled() => None,
            };
            let Some(event) = event else { break };
            tracing::debug!(target: "switchboard::events", event = %String::from_utf8_lossy(&event.to_json()), "event");
            let wanted = match dispatch.hook(&event.biz).await {
                Ok(h) => h.is_some_and(|h| h.wants(event.kind.as_str())),
                Err(e) => {
                    tracing::warn!(biz = %event.biz, error = %e, "webhook settings not read");
                    false
                }
            };
            if !wanted {
                continue;
            }
            let queue = queues
                .entry(event.biz.clone())
                .or_insert_with(|| start(&event.biz, &dispatch, &shutdown));
            if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(Bytes::from(event.to_json())) {
                dispatch.metrics.webhook_events.dropped.inc();
                tracing::debug!(biz = %event.biz, "webhook queue full: event dropped");
            }
        }
    })
}

/// Starts `biz`'s delivery task; answers its queue.
fn start(biz: &str, dispatch: &Dispatch, shutdown: &CancellationToken) -> mpsc::Sender<Bytes> {
    let (tx, rx) = mpsc::channel(dispatch.config.queue);
    tokio::spawn(deliver(biz.to_owned(), rx, dispatch.clone(), shutdown.clone()));
    tx
}

/// `biz`'s delivery task.
async fn deliver(biz: String, mut queue: mpsc::Receiver<Bytes>, dispatch: Dispatch, shutdown: CancellationToken) {
    let config = dispatch.config.clone();
    let metrics = dispatch.metrics.clone();
    loop {
        let first = tokio::select! {
            e = queue.recv() => e,
            () = shutdown.cancelled() => None,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < config.max_batch {
            match queue.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let body = batch_body(batch.iter().map(|e| &e[..]));
        let n = batch.len() as u64;
        let mut attempt = 1;
        loop {
            let hook = match dispatch.hook(&biz).await {
                Ok(Some(h)) => h,
                // Removed meanwhile: its events go nowhere.
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(biz, error = %e, "webhook settings not read");
                    break;
                }
            };
            match dispatch
                .poster
                .post(&hook, body.clone(), switchboard_runtime::now_ms())
                .await
            {
                Outcome::Delivered => {
                    metrics.webhook_events.delivered.inc_by(n);
                    break;
                }
                Outcome::Failed(reason) if attempt >= config.max_attempts => {
                    metrics.webhook_events.dead_letter.inc_by(n);
                    tracing::warn!(biz, url = %hook.log_url(), reason, events = n, "webhook call failed: events given up");
                    break;
                }
                Outcome::Failed(reason) => {
                    metrics.webhook_events.retried.inc_by(n);
                    tracing::warn!(biz, url = %hook.log_url(), reason, attempt, "webhook call failed");
                    tokio::select! {
                        () = tokio::time::sleep(config.backoff(attempt)) => {}
                        () = shutdown.cancelled() => return,
                    }
                    attempt += 1;
                }
            }
        }
    }
}
