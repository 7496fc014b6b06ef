//! What Switchboard's services share: configuration loading, telemetry,
//! shutdown signals, the small HTTP server and the ops endpoints.
//!
//! Architecture: `protocol` ← `runtime` ← `edge`, `router` ← `switchboard`.
//!
//! - [`config`]: figment loading (defaults → TOML → `SWITCHBOARD_` env) and
//!   the all-problems-at-once error.
//! - [`telemetry`]: tracing initialisation (text or JSON).
//! - [`shutdown`]: SIGTERM/SIGINT → `CancellationToken`.
//! - [`http`]: a hyper 1 accept loop with upgrades, and JSON replies.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`nats`]: NATS connection settings and connect with liveness events.
//! - [`events`]: the connection event sink seam (JetStream, in-memory,
//!   disabled) and the `sb-events` stream.
//! - [`metrics`]: the Prometheus metrics every process exports.

pub mod config;
pub mod events;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod ops;
pub mod shutdown;
pub mod telemetry;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
