//! NATS connection settings shared by edges and routers, and a connect that
//! reports link state to [`Health`] and metrics.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use serde::Deserialize;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::ops::Health;

/// `[nats]` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma separated. Default `nats://127.0.0.1:4222`.
    pub url: String,
    /// Client ping interval: how fast a dead link is noticed. Default `2s`
    /// (async-nats defaults to 60 s, far too slow).
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Timeout of one request to a router or an edge. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Timeout of the first connection attempt. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest pause between reconnect attempts. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub max_reconnect_delay: Duration,
    /// Presence KV bucket name. Default `sb-presence`.
    pub presence_bucket: String,
    /// Replicas of the presence bucket (3 in a NATS cluster). Default 1.
    pub replicas: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            ping_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_reconnect_delay: Duration::from_secs(2),
            presence_bucket: "sb-presence".to_owned(),
            replicas: 1,
        }
    }
}

impl NatsConfig {
    /// Pushes configuration problems.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.url.trim().is_empty() {
            problems.push("nats.url must not be empty".into());
        }
        if self.ping_interval < Duration::from_millis(100) {
            problems.push("nats.ping_interval must be at least 100ms".into());
        }
        if self.request_timeout.is_zero() {
            problems.push("nats.request_timeout must be positive".into());
        }
        if self.presence_bucket.is_empty()
            || !self
                .presence_bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push("nats.presence_bucket may only contain A-Z a-z 0-9 - _".into());
        }
        if !(1..=5).contains(&self.replicas) {
            problems.push("nats.replicas must be between 1 and 5".into());
        }
    }
}

/// Link state changes after the first connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Connected (again).
    Up,
    /// Disconnected; the client is reconnecting.
    Down,
}

/// Connects to NATS with our settings. The returned receiver changes to
/// [`LinkState::Up`] after every reconnect, so callers can resync.
///
/// # Errors
/// If the first connection cannot be made within `connect_timeout`.
pub async fn connect(
    config: &NatsConfig,
    name: &str,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> Result<(Client, watch::Receiver<(u64, LinkState)>), async_nats::ConnectError> {
    let (tx, rx) = watch::channel((0u64, LinkState::Up));
    let max_delay = config.max_reconnect_delay;
    let opts = ConnectOptions::new()
        .name(name)
        .ping_interval(config.ping_interval)
        .request_timeout(Some(config.request_timeout))
        .connection_timeout(config.connect_timeout)
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| {
            let ms = 50u64.saturating_mul(1 << attempts.min(8));
            Duration::from_millis(ms).min(max_delay)
        })
        .event_callback(move |event| {
            let tx = tx.clone();
            let health = health.clone();
            let metrics = metrics.clone();
            async move {
                match event {
                    Event::Connected => {
                        tracing::info!("NATS connection (re)established");
                        health.set_bus_up(true);
                        if tx.borrow().1 == LinkState::Down {
                            metrics.nats_reconnects.inc();
                        }
                        tx.send_modify(|(n, s)| {
                            *n += 1;
                            *s = LinkState::Up;
                        });
                    }
                    Event::Disconnected => {
                        tracing::warn!("NATS connection lost, reconnecting");
                        health.set_bus_up(false);
                        tx.send_modify(|(n, s)| {
                            *n += 1;
                            *s = LinkState::Down;
                        });
                    }
                    Event::SlowConsumer(sid) => {
                        metrics.nats_slow_consumer.inc();
                        tracing::warn!(sid, "NATS subscription fell behind: messages were dropped");
                    }
                    other => tracing::info!(event = %other, "NATS event"),
                }
            }
        });
    let client = opts.connect(config.url.as_str()).await?;
    Ok((client, rx))
}
