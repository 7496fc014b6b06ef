//! The event sink seam: where edges and routers hand connection events
//! ([`Event`]) for backends.
//!
//! - [`EventSink`]: the seam. `emit` never blocks (a bounded queue; what
//!   does not fit is dropped and counted in `switchboard_events_dropped`);
//!   `store` waits until the event is stored (upstream messages answer the
//!   client only then).
//! - [`JetStreamSink`]: the cluster's sink, publishing to the
//!   [`EVENTS_STREAM`] stream with `Nats-Msg-Id` = the event id, so the
//!   stream's duplicate window drops a retried publish.
//! - [`MemorySink`]: `standalone`'s sink, handing events to one in-process
//!   consumer through a bounded `tokio::sync::mpsc` channel.
//! - [`Disabled`]: `events.enabled = false`.
//! - [`Events`]: the handle call sites use; it stamps id, node and time.
//! - [`EventsConfig`]: the `events.*` configuration, and [`ensure_stream`]
//!   creating or updating the stream from it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchboard_protocol::event::{Event, EventKind};
use switchboard_protocol::subject::{EVENTS_ALL, EVENTS_STREAM};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Default `events.enabled`.
pub const DEFAULT_ENABLED: bool = true;
/// Default `events.max_age`: how long the stream keeps an event.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Default `events.max_bytes`: the stream's size bound (oldest go first).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default `events.replicas` (the chart sets 3).
pub const DEFAULT_REPLICAS: usize = 1;
/// Default `events.duplicate_window` (JetStream `Nats-Msg-Id` dedupe).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Default `events.queue`: events waiting to be published per process.
pub const DEFAULT_QUEUE: usize = 10_000;
/// Default `events.store_timeout`: how long an upstream message waits to
/// be stored before the client gets 1500.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// PubAcks awaited at once by one process's publisher.
const MAX_IN_FLIGHT: usize = 1024;

/// The `events.*` configuration (README "Connection events").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Whether edges and routers publish connection events and accept
    /// upstream messages (mode 500). Default true.
    pub enabled: bool,
    /// How long the stream keeps an event. Default `"24h"`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// The stream's size bound in bytes; the oldest events go first.
    /// Default 268435456 (256 MiB).
    pub max_bytes: u64,
    /// Stream replicas (1, 3 or 5; at most the JetStream servers). Default 1.
    pub replicas: usize,
    /// Window in which a republished event id is dropped. Default `"2m"`.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Events waiting to be published per process; more are dropped and
    /// counted. Default 10000.
    pub queue: usize,
    /// How long an upstream message waits to be stored. Default `"5s"`.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            enabled: DEFAULT_ENABLED,
            max_age: DEFAULT_MAX_AGE,
            max_bytes: DEFAULT_MAX_BYTES,
            replicas: DEFAULT_REPLICAS,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            queue: DEFAULT_QUEUE,
            store_timeout: DEFAULT_STORE_TIMEOUT,
        }
    }
}

impl crate::config::Validate for EventsConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.max_age < Duration::from_secs(1) {
            problems.push("events.max_age must be at least 1s".to_owned());
        }
        if self.max_bytes < 1024 * 1024 {
            problems.push("events.max_bytes must be at least 1048576 (1 MiB)".to_owned());
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            problems.push("events.replicas must be 1, 3 or 5".to_owned());
        }
        if self.duplicate_window.is_zero() || self.duplicate_window > self.max_age {
            problems.push("events.duplicate_window must be above 0 and at most events.max_age".to_owned());
        }
        if self.queue == 0 || self.queue > 1_000_000 {
            problems.push("events.queue must be 1..=1000000".to_owned());
        }
        if self.store_timeout.is_zero() || self.store_timeout > Duration::from_secs(60) {
            problems.push("events.store_timeout must be above 0 and at most 60s".to_owned());
        }
    }
}

/// Why an event could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Events are off (`events.enabled = false`).
    #[error("connection events are off")]
    Disabled,
    /// Not stored within `events.store_timeout`.
    #[error("the event was not stored in time")]
    Timeout,
    /// The publisher or the consumer is gone (shutting down).
    #[error("the event sink is closed")]
    Closed,
    /// JetStream refused or lost it.
    #[error("publishing the event failed: {0}")]
    Publish(String),
}

/// Where connection events go.
///
/// Contract: events of one process reach the stream (or the in-memory
/// consumer) in the order they were emitted or stored; each carries a
/// unique `id`, and a republished id within the stream's duplicate window
/// is stored once, so readers dedupe by `id` (at-least-once).
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Hands `event` over without waiting. When the bounded queue is full
    /// the event is dropped and counted (`switchboard_events_dropped`).
    fn emit(&self, event: Event);

    /// Hands `event` over and waits until it is stored (JetStream PubAck;
    /// in memory: taken by the channel).
    ///
    /// # Errors
    /// [`EventError`] when it was not stored.
    ///
    /// # Cancel safety
    /// Cancelling may leave the event stored or not.
    async fn store(&self, event: Event) -> Result<(), EventError>;
}

/// Makes event ids: UUIDv7 (unique, ordered by time).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The handle call sites hold: a sink plus this process's node id.
#[derive(Clone)]
pub struct Events {
    sink: Arc<dyn EventSink>,
    node: Arc<str>,
    enabled: bool,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("node", &self.node)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// Events that go to `sink`, observed by `node`.
    pub fn new(sink: Arc<dyn EventSink>, node: &str) -> Self {
        Self {
            sink,
            node: node.into(),
            enabled: true,
        }
    }

    /// Events that go nowhere (`events.enabled = false`).
    pub fn disabled(node: &str) -> Self {
        Self {
            sink: Arc::new(Disabled),
            node: node.into(),
            enabled: false,
        }
    }

    /// Whether events are published (and upstream messages accepted).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A new event of `kind` with a fresh id, this node and the time now;
    /// add the kind's fields with the `with_*` setters.
    pub fn event(&self, kind: EventKind, biz: &str, client: &str) -> Event {
        Event::new(new_id(), kind, biz, client, &self.node, crate::now_ms())
    }

    /// See [`EventSink::emit`]; nothing happens when events are off.
    pub fn emit(&self, event: Event) {
        if self.enabled {
            self.sink.emit(event);
        }
    }

    /// See [`EventSink::store`].
    ///
    /// # Errors
    /// [`EventError`]; [`EventError::Disabled`] when events are off.
    ///
    /// # Cancel safety
    /// Cancelling may leave the event stored or not.
    pub async fn store(&self, event: Event) -> Result<(), EventError> {
        self.sink.store(event).await
    }
}

/// The sink of `events.enabled = false`: emits nothing, stores nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disabled;

#[async_trait]
impl EventSink for Disabled {
    fn emit(&self, _event: Event) {}

    async fn store(&self, _event: Event) -> Result<(), EventError> {
        Err(EventError::Disabled)
    }
}

/// `standalone`'s sink: a bounded channel to one in-process consumer
/// (the webhook dispatcher, or a task that logs them).
#[derive(Debug, Clone)]
pub struct MemorySink {
    tx: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    store_timeout: Duration,
}

impl MemorySink {
    /// A sink whose events the returned receiver gets, at most `capacity`
    /// waiting.
    pub fn new(capacity: usize, store_timeout: Duration, metrics: Arc<Metrics>) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                metrics,
                store_timeout,
            },
            rx,
        )
    }
}

#[async_trait]
impl EventSink for MemorySink {
    fn emit(&self, event: Event) {
        match self.tx.try_send(event) {
            Ok(()) => self.metrics.events_published.inc(),
            Err(_) => self.metrics.events_dropped.inc(),
        };
    }

    async fn store(&self, event: Event) -> Result<(), EventError> {
        match self.tx.send_timeout(event, self.store_timeout).await {
            Ok(()) => {
                self.metrics.events_published.inc();
                Ok(())
            }
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.metrics.events_failed.inc();
                Err(EventError::Timeout)
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                self.metrics.events_failed.inc();
                Err(EventError::Closed)
            }
        }
    }
}

/// One queued event, with whoever waits for it to be stored.
struct Item {
    event: Event,
    done: Option<oneshot::Sender<Result<(), EventError>>>,
}

/// The cluster's sink: a bounded queue drained by one publisher task that
/// publishes in order to JetStream and awaits PubAcks (up to 1024 at
/// once). An emitted event that fails is counted
/// (`switchboard_events_failed`) and not retried.
#[derive(Debug, Clone)]
pub struct JetStreamSink {
    tx: mpsc::Sender<Item>,
    metrics: Arc<Metrics>,
    store_timeout: Duration,
}

impl JetStreamSink {
    /// Starts the publisher on `js`. It runs until [`Publisher::close`]
    /// (or until every sink clone is dropped).
    pub fn spawn(js: jetstream::Context, config: &EventsConfig, metrics: Arc<Metrics>) -> (Self, Publisher) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let stop = CancellationToken::new();
        let task = tokio::spawn(publish(js, rx, metrics.clone(), stop.clone()));
        let sink = Self {
            tx,
            metrics,
            store_timeout: config.store_timeout,
        };
        (sink, Publisher { stop, task })
    }
}

/// The publisher task of a [`JetStreamSink`], to stop it at shutdown.
#[derive(Debug)]
pub struct Publisher {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Stops taking events and publishes what is queued, waiting at most
    /// `grace` for it and its PubAcks (call it before draining NATS: a
    /// drained edge's last `disconnected` events are in that queue).
    pub async fn close(self, grace: Duration) {
        self.stop.cancel();
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item")
            .field("id", &self.event.id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventSink for JetStreamSink {
    fn emit(&self, event: Event) {
        if self.tx.try_send(Item { event, done: None }).is_err() {
            self.metrics.events_dropped.inc();
        }
    }

    async fn store(&self, event: Event) -> Result<(), EventError> {
        let (done, stored) = oneshot::channel();
        let work = async {
            self.tx
                .send(Item {
                    event,
                    done: Some(done),
                })
                .await
                .map_err(|_| EventError::Closed)?;
            stored.await.map_err(|_| EventError::Closed)?
        };
        tokio::time::timeout(self.store_timeout, work)
            .await
            .map_err(|_| EventError::Timeout)?
    }
}

/// The publisher loop: publishes in queue order, awaits PubAcks
/// concurrently, counts and answers.
async fn publish(js: jetstream::Context, mut rx: mpsc::Receiver<Item>, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut acks = tokio::task::JoinSet::new();
    loop {
        // Cancel safety: `recv` and `cancelled` both are; once stopped the
        // channel is closed and what it holds is still received.
        let item = tokio::select! {
            item = rx.recv() => item,
            () = stop.cancelled(), if !rx.is_closed() => {
                rx.close();
                continue;
            }
        };
        let Some(item) = item else {
            break;
        };
        while acks.len() >= MAX_IN_FLIGHT {
            acks.join_next().await;
        }
        while acks.try_join_next().is_some() {}
        let Item { event, done } = item;
        let publish = jetstream::message::PublishMessage::build()
            .payload(event.to_json().into())
            .message_id(event.id.as_str());
        let sent = js.send_publish(event.subject(), publish).await;
        let metrics = metrics.clone();
        acks.spawn(async move {
            let result = match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| EventError::Publish(e.to_string())),
                Err(e) => Err(EventError::Publish(e.to_string())),
            };
            if let Err(e) = &result {
                metrics.events_failed.inc();
                tracing::debug!(error = %e, kind = event.kind.as_str(), "event not stored");
            } else {
                metrics.events_published.inc();
            }
            if let Some(done) = done {
                let _ = done.send(result);
            }
        });
    }
    while acks.join_next().await.is_some() {}
}

/// Creates the [`EVENTS_STREAM`] stream, or updates its bounds to
/// `config` (routers at start-up; edges only publish to it).
///
/// # Errors
/// When JetStream refuses (no JetStream, too few servers for the
/// replicas, no permission).
pub async fn ensure_stream(js: &jetstream::Context, config: &EventsConfig) -> Result<(), EventError> {
    let wanted = jetstream::stream::Config {
        name: EVENTS_STREAM.to_owned(),
        description: Some("Switchboard connection events (sb.events.<bizCode>.<kind>)".to_owned()),
        subjects: vec![EVENTS_ALL.to_owned()],
        retention: jetstream::stream::RetentionPolicy::Limits,
        discard: jetstream::stream::DiscardPolicy::Old,
        storage: jetstream::stream::StorageType::File,
        max_age: config.max_age,
        max_bytes: i64::try_from(config.max_bytes).unwrap_or(i64::MAX),
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        ..Default::default()
    };
    match js.get_stream(EVENTS_STREAM).await {
        Ok(_) => js
            .update_stream(&wanted)
            .await
            .map(|_| ())
            .map_err(|e| EventError::Publish(e.to_string())),
        Err(_) => js
            .create_stream(wanted)
            .await
            .map(|_| ())
            .map_err(|e| EventError::Publish(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Validate as _;

    #[tokio::test]
    async fn memory_sink_is_bounded_and_counts_drops() {
        let metrics = Arc::new(Metrics::new());
        let (sink, mut rx) = MemorySink::new(2, Duration::from_millis(20), metrics.clone());
        let events = Events::new(Arc::new(sink), "n1");
        for _ in 0..3 {
            events.emit(events.event(EventKind::Connected, "d1", "c1"));
        }
        assert_eq!(metrics.events_published.get(), 2);
        assert_eq!(metrics.events_dropped.get(), 1);
        let stored = events.store(events.event(EventKind::Upstream, "d1", "c1")).await;
        assert!(matches!(stored, Err(EventError::Timeout)), "{stored:?}");
        let first = rx.recv().await;
        assert_eq!(first.as_ref().map(|e| e.node.as_str()), Some("n1"));
        assert!(events
            .store(events.event(EventKind::Upstream, "d1", "c1"))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn disabled_stores_nothing() {
        let events = Events::disabled("n1");
        assert!(!events.enabled());
        events.emit(events.event(EventKind::Connected, "d1", "c1"));
        let stored = events.store(events.event(EventKind::Upstream, "d1", "c1")).await;
        assert!(matches!(stored, Err(EventError::Disabled)));
    }

    #[test]
    fn ids_are_unique_and_config_is_checked() {
        assert_ne!(new_id(), new_id());
        let mut problems = Vec::new();
        EventsConfig::default().validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let bad = EventsConfig {
            replicas: 2,
            queue: 0,
            ..EventsConfig::default()
        };
        bad.validate(&mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
