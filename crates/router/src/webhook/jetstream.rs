//! Routers: webhook delivery from durable JetStream consumers.
//!
//! Each bizCode with a webhook has one durable pull consumer on the events
//! stream, `wh-<b64 bizCode>`, filtered to `sb.events.<b64 bizCode>.<kind>`
//! for the kinds it wants, delivering only events stored after it was made
//! (`DeliverPolicy::New`), with metadata `biz`. `set_webhook` makes,
//! updates or removes it ([`Consumers`]); every router serves every such
//! consumer ([`spawn`]: a look at the stream's consumers every
//! `webhooks.refresh`, at once after a change through this router), so the
//! routers share each bizCode's events and one bizCode's slow endpoint
//! holds back only its own consumer.
//!
//! A worker takes what is ready (at most `webhooks.max_batch`), POSTs it,
//! and acks every event on a 2xx. Otherwise each event is nak'd with the
//! delay of its attempt (`webhooks.backoff_initial` doubling, at most
//! `webhooks.backoff_max`) or, at its `webhooks.max_attempts`th attempt,
//! terminated and counted as a dead letter; the worker then waits out its
//! own backoff before its next call to that endpoint. At least once: an
//! ack lost, or a router stopped between a 2xx and its acks, repeats
//! events; receivers dedupe by `id`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::{self, AckKind, Message};
use futures_util::{StreamExt, TryStreamExt};
use switchboard_protocol::event::EventKind;
use switchboard_protocol::{ids, subject};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::post::Outcome;
use super::{batch_body, Dispatch};

/// Prefix of the webhook consumers' names.
const CONSUMER_PREFIX: &str = "wh-";

/// Most events a webhook consumer hands out before they are acked: a
/// failing endpoint stops its bizCode's deliveries there.
const MAX_ACK_PENDING: i64 = 1000;

/// How long a worker waits for the first event of a batch per pull.
const PULL_WAIT: Duration = Duration::from_secs(5);

/// The consumer name of `biz`'s webhook.
pub fn consumer_name(biz: &str) -> String {
    format!("{CONSUMER_PREFIX}{}", ids::encode(biz))
}

/// The subjects `biz`'s webhook reads: one per kind, or all of its
/// events when `kinds` is empty.
pub fn filter_subjects(biz: &str, kinds: &[String]) -> Vec<String> {
    let kinds: Vec<EventKind> = kinds.iter().filter_map(|k| EventKind::parse(k)).collect();
    if kinds.is_empty() {
        vec![subject::events_of_biz(biz)]
    } else {
        kinds.into_iter().map(|k| subject::event(biz, k)).collect()
    }
}

/// The webhook consumers on the events stream: made, updated and removed
/// with their webhooks.
#[derive(Clone)]
pub struct Consumers {
    js: jetstream::Context,
    stream: String,
    /// How long an event waits for its ack: a whole call and a margin.
    ack_wait: Duration,
    max_attempts: u32,
    /// Wakes this router's [`spawn`]ed loop after a change.
    changed: Arc<Notify>,
}

impl Consumers {
    /// The consumers on `stream` (normally [`subject::EVENTS_STREAM`]).
    pub fn new(js: jetstream::Context, stream: &str, config: &super::WebhooksConfig) -> Self {
        Self {
            js,
            stream: stream.to_owned(),
            ack_wait: config.connect_timeout + config.timeout + Duration::from_secs(10),
            max_attempts: config.max_attempts,
            changed: Arc::new(Notify::new()),
        }
    }

    /// Makes or updates `biz`'s consumer for `kinds` (empty: all).
    ///
    /// # Errors
    /// `()` if JetStream refused (logged).
    pub(crate) async fn ensure(&self, biz: &str, kinds: &[String]) -> Result<(), ()> {
        let config = pull::Config {
            durable_name: Some(consumer_name(biz)),
            description: Some("Switchboard: one bizCode's webhook".to_owned()),
            filter_subjects: filter_subjects(biz, kinds),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: i64::from(self.max_attempts),
            deliver_policy: DeliverPolicy::New,
            max_ack_pending: MAX_ACK_PENDING,
            metadata: HashMap::from([("biz".to_owned(), biz.to_owned())]),
            ..Default::default()
        };
        let made = async {
            let stream = self.js.get_stream(&self.stream).await.map_err(|e| e.to_string())?;
            stream.create_consumer(config).await.map_err(|e| e.to_string())
        };
        match made.await {
            Ok(_) => {
                self.changed.notify_one();
                Ok(())
            }
            Err(e) => {
                tracing::warn!(biz, stream = %self.stream, error = %e, "webhook consumer not made");
                Err(())
            }
        }
    }

    /// Removes `biz`'s consumer (its undelivered events with it); a
    /// failure is logged, and the consumer's next worker removes it.
    pub(crate) async fn remove(&self, biz: &str) {
        let name = consumer_name(biz);
        let removed = async {
            let stream = self.js.get_stream(&self.stream).await.map_err(|e| e.to_string())?;
            stream.delete_consumer(&name).await.map_err(|e| e.to_string())
        };
        if let Err(e) = removed.await {
            tracing::debug!(biz, error = %e, "webhook consumer not removed");
        }
        self.changed.notify_one();
    }

    /// The webhook consumers on the stream: name → bizCode.
    async fn list(&self) -> Result<HashMap<String, String>, String> {
        let stream = self.js.get_stream(&self.stream).await.map_err(|e| e.to_string())?;
        let infos: Vec<_> = stream.consumers().try_collect().await.map_err(|e| e.to_string())?;
        Ok(infos
            .into_iter()
            .filter(|i| i.name.starts_with(CONSUMER_PREFIX))
            .filter_map(|i| {
                let biz = i.config.metadata.get("biz")?.clone();
                (consumer_name(&biz) == i.name).then_some((i.name, biz))
            })
            .collect())
    }
}

/// Serves every webhook consumer on the stream from this router until
/// `shutdown`.
pub fn spawn(consumers: Consumers, dispatch: Dispatch, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut workers: HashMap<String, (CancellationToken, JoinHandle<()>)> = HashMap::new();
        let refresh = dispatch.config.refresh;
        loop {
            workers.retain(|_, (_, task)| !task.is_finished());
            match consumers.list().await {
                Ok(listed) => {
                    workers.retain(|name, (stop, _)| {
                        let keep = listed.contains_key(name);
                        if !keep {
                            stop.cancel();
                        }
                        keep
                    });
                    for (name, biz) in listed {
                        if workers.contains_key(&name) {
                            continue;
                        }
                        let stop = shutdown.child_token();
                        let task = tokio::spawn(work(
                            consumers.clone(),
                            dispatch.clone(),
                            name.clone(),
                            biz,
                            stop.clone(),
                        ));
                        workers.insert(name, (stop, task));
                    }
                }
                Err(e) => tracing::debug!(error = %e, "webhook consumers not listed (is the events stream there?)"),
            }
            tokio::select! {
                () = tokio::time::sleep(refresh) => {}
                () = consumers.changed.notified() => {}
                () = shutdown.cancelled() => break,
            }
        }
        for (stop, _) in workers.values() {
            stop.cancel();
        }
    })
}

/// How long a worker that finds no webhook for its consumer waits before
/// it asks again and, still none, removes the consumer: `set_webhook`
/// makes the consumer before it writes the settings, so a worker of
/// another router may pull an event in between.
const SETTINGS_GRACE: Duration = Duration::from_secs(2);

/// `biz`'s webhook, asked again after [`SETTINGS_GRACE`] if there is none;
/// `None` once `stop` is cancelled.
async fn settled_hook(
    dispatch: &Dispatch,
    biz: &str,
    stop: &CancellationToken,
) -> Option<Result<Option<super::WebhookSettings>, crate::store::StoreError>> {
    match dispatch.hook(biz).await {
        Ok(None) => {}
        other => return Some(other),
    }
    tokio::select! {
        () = tokio::time::sleep(SETTINGS_GRACE) => {}
        () = stop.cancelled() => return None,
    }
    Some(dispatch.hook(biz).await)
}

/// One worker of one bizCode's consumer on this router: until `stop`, the
/// consumer's removal or a failed pull (the next look restarts it).
async fn work(consumers: Consumers, dispatch: Dispatch, name: String, biz: String, stop: CancellationToken) {
    let consumer: Consumer<pull::Config> = match consumers.js.get_stream(&consumers.stream).await {
        Ok(s) => match s.get_consumer(&name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(biz, error = %e, "webhook consumer gone");
                return;
            }
        },
        Err(e) => {
            tracing::debug!(biz, error = %e, "events stream not reached");
            return;
        }
    };
    let config = dispatch.config.clone();
    let metrics = dispatch.metrics.clone();
    let mut failures = 0u32;
    loop {
        let batch = tokio::select! {
            b = next_batch(&consumer, config.max_batch) => b,
            () = stop.cancelled() => return,
        };
        let batch = match batch {
            Ok(b) if b.is_empty() => continue,
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(biz, error = %e, "webhook pull ended");
                return;
            }
        };
        let hook = match settled_hook(&dispatch, &biz, &stop).await {
            None => return,
            Some(Ok(Some(h))) => h,
            Some(Ok(None)) => {
                tracing::info!(biz, "webhook gone: removing its consumer");
                consumers.remove(&biz).await;
                return;
            }
            Some(Err(e)) => {
                tracing::warn!(biz, error = %e, "webhook settings not read");
                for m in &batch {
                    let _ = m.ack_with(AckKind::Nak(Some(config.backoff(1)))).await;
                }
                continue;
            }
        };
        let (events, broken): (Vec<Message>, Vec<Message>) = batch
            .into_iter()
            .partition(|m| serde_json::from_slice::<serde::de::IgnoredAny>(&m.payload).is_ok());
        for m in broken {
            tracing::warn!(biz, subject = %m.subject, "an event that is not JSON: dropped");
            metrics.webhook_events.dead_letter.inc();
            let _ = m.ack_with(AckKind::Term).await;
        }
        if events.is_empty() {
            continue;
        }
        let body = batch_body(events.iter().map(|m| &m.payload[..]));
        match dispatch.poster.post(&hook, body, switchboard_runtime::now_ms()).await {
            Outcome::Delivered => {
                failures = 0;
                for m in &events {
                    if let Err(e) = m.ack().await {
                        tracing::debug!(biz, error = %e, "webhook ack lost (the event comes again)");
                    }
                }
                metrics.webhook_events.delivered.inc_by(events.len() as u64);
            }
            Outcome::Failed(reason) => {
                failures = failures.saturating_add(1);
                let mut dead = 0;
                for m in &events {
                    let attempt = m.info().map_or(1, |i| u32::try_from(i.delivered).unwrap_or(u32::MAX));
                    if attempt >= config.max_attempts {
                        dead += 1;
                        metrics.webhook_events.dead_letter.inc();
                        let _ = m.ack_with(AckKind::Term).await;
                    } else {
                        metrics.webhook_events.retried.inc();
                        let _ = m.ack_with(AckKind::Nak(Some(config.backoff(attempt)))).await;
                    }
                }
                tracing::warn!(biz, url = %hook.log_url(), reason, events = events.len(), dead, "webhook call failed");
                tokio::select! {
                    () = tokio::time::sleep(config.backoff(failures)) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Waits up to [`PULL_WAIT`] for one event, then takes up to `max - 1`
/// more that are ready without waiting. Empty when none came.
///
/// # Cancel safety
/// Not cancel safe: events pulled and dropped come again after the ack
/// wait (only cancelled at shutdown).
async fn next_batch(consumer: &Consumer<pull::Config>, max: usize) -> Result<Vec<Message>, String> {
    let mut out = Vec::with_capacity(max);
    let mut first = consumer
        .batch()
        .max_messages(1)
        .expires(PULL_WAIT)
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    while let Some(m) = first.next().await {
        out.push(m.map_err(|e| e.to_string())?);
    }
    if out.is_empty() || max <= 1 {
        return Ok(out);
    }
    let mut rest = consumer
        .fetch()
        .max_messages(max - 1)
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    while let Some(m) = rest.next().await {
        out.push(m.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_are_named_and_filtered_per_biz_code() {
        // bizCodes may hold `.`: one token, encoded as every subject token.
        assert_eq!(consumer_name("d1"), "wh-ZDE");
        assert!(!consumer_name("a.b:c@d").contains(['.', '*', '>']));
        assert_eq!(filter_subjects("d1", &[]), ["sb.events.ZDE.>"]);
        let kinds = ["online".to_owned(), "offline".to_owned()];
        assert_eq!(
            filter_subjects("d1", &kinds),
            ["sb.events.ZDE.online", "sb.events.ZDE.offline"]
        );
    }
}
