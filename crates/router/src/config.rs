//! `[router]` configuration.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Who gets presence notices (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoticeScope {
    /// No notices.
    Off,
    /// The other members of each of the client's groups (default).
    #[default]
    Groups,
    /// Every other client of the bizCode.
    Biz,
}

/// `[api]`: the backend HTTP push API.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Require `Authorization: Bearer <key>` on every API call. Turning it
    /// off is an explicit choice. Default true.
    pub auth: bool,
    /// Accepted API keys; `SWITCHBOARD_API_KEY` adds one. Default none
    /// (`standalone` then generates one and prints it at start-up).
    pub keys: Vec<String>,
    /// Largest request body; larger is refused with 413 before it is read
    /// whole. Default 1048576 (1 MiB).
    pub max_body_bytes: usize,
    /// Most clientIds in one `send_to_clients`. Default 1000.
    pub max_clients_per_send: usize,
    /// Require bizCodes to be registered (`register`) before clients of
    /// them connect or the API serves them (else 1007). Default false.
    pub require_registration: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            auth: true,
            keys: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_clients_per_send: 1000,
            require_registration: false,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("auth", &self.auth)
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_clients_per_send", &self.max_clients_per_send)
            .field("require_registration", &self.require_registration)
            .finish()
    }
}

impl ApiConfig {
    /// Pushes configuration problems.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.keys.iter().any(|k| k.len() < 16) {
            problems.push("api.keys: every key must be at least 16 characters".into());
        }
        if self.max_body_bytes < 1024 {
            problems.push("api.max_body_bytes must be at least 1024".into());
        }
        if self.max_clients_per_send == 0 {
            problems.push("api.max_clients_per_send must be positive".into());
        }
    }
}

/// Router settings. Every field has a safe default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Address of the HTTP API and ops server. Default `0.0.0.0:8090`.
    pub listen: SocketAddr,
    /// Accept queue of the listening socket (`listen(2)` backlog), capped
    /// by the kernel at `net.core.somaxconn`. Default 4096.
    pub listen_backlog: u32,
    /// A node silent for this long is dead and its clients are purged from
    /// presence. Default `6s` (edges beat every 2 s; SPEC allows 10 s).
    #[serde(with = "humantime_serde")]
    pub node_timeout: Duration,
    /// Presence notices: `off`, `groups` or `biz`. Default `groups`.
    pub presence_notices: NoticeScope,
    /// Groups (or bizCodes, with `biz`) larger than this get no notices.
    /// Default 500.
    pub notice_max_members: usize,
    /// How long the KV keeps the marker of a removed presence entry.
    /// Default `60s`.
    #[serde(with = "humantime_serde")]
    pub delete_marker_ttl: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8090)),
            listen_backlog: switchboard_runtime::config::DEFAULT_LISTEN_BACKLOG,
            node_timeout: Duration::from_secs(6),
            presence_notices: NoticeScope::Groups,
            notice_max_members: 500,
            delete_marker_ttl: Duration::from_secs(60),
        }
    }
}

impl RouterConfig {
    /// Pushes configuration problems.
    pub fn validate(&self, problems: &mut Vec<String>) {
        switchboard_runtime::config::validate_listen_backlog("router.listen_backlog", self.listen_backlog, problems);
        if self.node_timeout < Duration::from_secs(1) || self.node_timeout > Duration::from_secs(9) {
            problems.push(
                "router.node_timeout must be between 1s and 9s (SPEC: a dead edge leaves presence within 10s)".into(),
            );
        }
        if self.delete_marker_ttl < Duration::from_secs(1) {
            problems.push("router.delete_marker_ttl must be at least 1s".into());
        }
    }
}
