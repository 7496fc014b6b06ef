//! Webhooks in each process kind: the operator calls for the API and the
//! delivery loop (JetStream consumers in a router, the in-process event
//! channel in `standalone`).

use std::sync::Arc;

use switchboard_protocol::event::Event;
use switchboard_protocol::subject;
use switchboard_router::webhook::{self, Dispatch, Webhooks};
use switchboard_router::BizRegistry;
use switchboard_runtime::metrics::Metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// A router's webhooks: consumers on the events stream, served by this
/// router until `shutdown`.
pub(super) fn cluster(
    config: &Config,
    js: &async_nats::jetstream::Context,
    registry: Arc<dyn BizRegistry>,
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Webhooks> {
    let hooks = &config.webhooks;
    let consumers = webhook::jetstream::Consumers::new(js.clone(), subject::EVENTS_STREAM, hooks);
    let dispatch = Dispatch::new(hooks.clone(), registry.clone(), metrics).map_err(anyhow::Error::msg)?;
    webhook::jetstream::spawn(consumers.clone(), dispatch, shutdown.clone());
    log_allow_list(config);
    Ok(Webhooks::jetstream(hooks.clone(), registry, consumers))
}

/// `standalone`'s webhooks: delivered from `events` (the in-process sink's
/// channel) until `shutdown`.
pub(super) fn standalone(
    config: &Config,
    events: mpsc::Receiver<Event>,
    registry: Arc<dyn BizRegistry>,
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Webhooks> {
    let hooks = &config.webhooks;
    let dispatch = Dispatch::new(hooks.clone(), registry.clone(), metrics).map_err(anyhow::Error::msg)?;
    webhook::memory::spawn(events, dispatch, shutdown.clone());
    log_allow_list(config);
    Ok(Webhooks::memory(hooks.clone(), registry))
}

fn log_allow_list(config: &Config) {
    let hosts = &config.webhooks.allowed_hosts;
    if hosts.is_empty() {
        tracing::info!("webhooks: no host allowed (webhooks.allowed_hosts), so none can be set");
    } else {
        tracing::info!(allowed_hosts = ?hosts, "webhooks: target hosts allowed");
    }
}
