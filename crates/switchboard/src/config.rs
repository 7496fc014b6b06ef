//! The whole configuration: `[log]`, `[nats]`, `[edge]`, `[router]`,
//! `[membership]`, `[history]`, `[standalone]`, `[api]`, `[auth]`, `[http]`, `[events]`,
//! `[webhooks]`. See `deploy/switchboard.example.toml` for every key.

use std::net::SocketAddr;

use serde::Deserialize;
use switchboard_edge::{AuthConfig, AuthMode, EdgeConfig};
use switchboard_log::HistoryConfig;
use switchboard_router::config::MembershipConfig;
use switchboard_router::config::{ApiConfig, ApiKey};
use switchboard_router::webhook::WebhooksConfig;
use switchboard_router::RouterConfig;
use switchboard_runtime::config::Validate;
use switchboard_runtime::events::EventsConfig;
use switchboard_runtime::http::HttpConfig;
use switchboard_runtime::nats::NatsConfig;
use switchboard_runtime::telemetry::LogConfig;

/// The sections (and top-level keys) `SWITCHBOARD_*` variables may set.
pub(crate) const ENV_ROOTS: &[&str] = &[
    "log",
    "nats",
    "edge",
    "router",
    "membership",
    "history",
    "standalone",
    "api",
    "auth",
    "api_key",
    "http",
    "events",
    "webhooks",
];

/// Keys whose `SWITCHBOARD_*` variables are read as written (secrets).
pub(crate) const ENV_RAW: &[&str] = &[
    "api_key",
    "nats.password",
    "nats.token",
    "nats.nkey_seed",
    "auth.secret",
];

/// `[standalone]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StandaloneConfig {
    /// WebSocket, API and ops on one port. Default `0.0.0.0:8080`.
    pub(crate) listen: SocketAddr,
    /// Accept queue of the listening socket (`listen(2)` backlog), capped
    /// by the kernel at `net.core.somaxconn`. Default 4096.
    pub(crate) listen_backlog: u32,
    /// Serve the web console at `/console`: both views, the client view
    /// (`edge.console` on an edge) and the admin view (`router.console` on
    /// a router). Default true.
    pub(crate) console: bool,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            listen_backlog: switchboard_runtime::config::DEFAULT_LISTEN_BACKLOG,
            console: true,
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
    /// Durable group membership (router, standalone).
    pub(crate) membership: MembershipConfig,
    /// History and recovery (SPEC §7; standalone for now).
    pub(crate) history: HistoryConfig,
    /// Standalone.
    pub(crate) standalone: StandaloneConfig,
    /// The backend HTTP API (router, standalone).
    pub(crate) api: ApiConfig,
    /// Client authentication (edge, standalone).
    pub(crate) auth: AuthConfig,
    /// One more API key (`SWITCHBOARD_API_KEY`).
    pub(crate) api_key: Option<String>,
    /// The HTTP server's limits on connections not (yet) upgraded.
    pub(crate) http: HttpConfig,
    /// Connection events for backends (edge, router, standalone).
    pub(crate) events: EventsConfig,
    /// Webhooks: the allow-list, timeouts, retries (router, standalone).
    pub(crate) webhooks: WebhooksConfig,
}

impl Config {
    /// The router's settings with the sections it reads besides
    /// `[router]`.
    pub(crate) fn router_config(&self) -> RouterConfig {
        let mut r = self.router.clone();
        r.membership = self.membership.clone();
        r
    }

    /// Every accepted API key: `api.keys`, and `SWITCHBOARD_API_KEY` as a
    /// global key unless `api.keys` lists the same key (then that entry,
    /// possibly scoped, decides: the narrower reading of a contradiction).
    pub(crate) fn api_keys(&self) -> Vec<ApiKey> {
        let mut keys = self.api.keys.clone();
        if let Some(k) = self.api_key.as_ref().filter(|k| !k.is_empty()) {
            if !keys.iter().any(|listed| listed.secret() == k.as_bytes()) {
                keys.push(ApiKey::global(k.clone()));
            }
        }
        keys
    }

    /// Problems that depend on what the process is.
    pub(crate) fn validate_for(&self, serves_api: bool, standalone: bool, problems: &mut Vec<String>) {
        if serves_api && !standalone && self.api.auth && self.api_keys().is_empty() {
            problems.push(
                "api.auth is on but no API key is configured: set SWITCHBOARD_API_KEY or api.keys \
                 (or turn API auth off explicitly with api.auth = false)"
                    .into(),
            );
        }
        if let Some(k) = &self.api_key {
            if !k.is_empty() && k.len() < 16 {
                problems.push("SWITCHBOARD_API_KEY must be at least 16 characters".into());
            }
        }
        if self.auth.mode == AuthMode::Jwt {
            if let Some(path) = &self.auth.public_key_file {
                if !path.is_file() {
                    problems.push(format!("auth.public_key_file {} does not exist", path.display()));
                }
            }
        }
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Vec<String>) {
        self.nats.validate(problems);
        self.edge.validate(problems);
        self.router.validate(problems);
        self.membership.validate(problems);
        self.history.validate(problems);
        switchboard_runtime::config::validate_listen_backlog(
            "standalone.listen_backlog",
            self.standalone.listen_backlog,
            problems,
        );
        self.api.validate(problems);
        self.auth.validate(problems);
        self.http.validate(problems);
        self.events.validate(problems);
        self.webhooks.validate(problems);
    }
}
