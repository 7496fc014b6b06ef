//! The whole configuration: `[log]`, `[nats]`, `[edge]`, `[router]`,
//! `[standalone]`. See `deploy/switchboard.example.toml` for every key.

use std::net::SocketAddr;

use serde::Deserialize;
use switchboard_edge::EdgeConfig;
use switchboard_router::RouterConfig;
use switchboard_runtime::config::Validate;
use switchboard_runtime::nats::NatsConfig;
use switchboard_runtime::telemetry::LogConfig;

/// The sections (and top-level keys) `SWITCHBOARD_*` variables may set.
pub(crate) const ENV_ROOTS: &[&str] = &["log", "nats", "edge", "router", "standalone"];

/// `[standalone]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StandaloneConfig {
    /// WebSocket, API and ops on one port. Default `0.0.0.0:8080`.
    pub(crate) listen: SocketAddr,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

/// Everything a `switchboard` process reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// Logging.
    pub(crate) log: LogConfig,
    /// NATS (edge and router).
    pub(crate) nats: NatsConfig,
    /// Edge.
    pub(crate) edge: EdgeConfig,
    /// Router.
    pub(crate) router: RouterConfig,
    /// Standalone.
    pub(crate) standalone: StandaloneConfig,
}

impl Validate for Config {
    fn validate(&self, problems: &mut Vec<String>) {
        self.nats.validate(problems);
        self.edge.validate(problems);
        self.router.validate(problems);
    }
}
