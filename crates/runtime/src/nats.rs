//! NATS connection settings shared by edges and routers, and a connect that
//! reports link state to [`Health`] and metrics.
//!
//! Authentication (one of user + password, token, NKey seed, `.creds`
//! file) and TLS are the NATS server's
//! (<https://docs.nats.io/running-a-nats-service/configuration/securing_nats>).
//! Secrets never reach a log line or `check-config` output: they are
//! [`Secret`]s, and URLs are logged with [`redact_url`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, ClientError, ConnectOptions, Event, ServerError};
use serde::Deserialize;
use tokio::sync::watch;

use crate::config::Secret;
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
    /// User name, with `password`. Default none.
    pub user: String,
    /// Password of `user`. Default none.
    pub password: Secret,
    /// Token authentication. Default none.
    pub token: Secret,
    /// NKey authentication: the user's seed (`SU…`). Default none.
    pub nkey_seed: Secret,
    /// Decentralized (JWT) authentication: a `.creds` file holding the
    /// user JWT and NKey seed. Default none.
    pub credentials_file: Option<PathBuf>,
    /// TLS to the NATS servers.
    pub tls: NatsTlsConfig,
}

/// `[nats.tls]`: TLS to the NATS servers. A `tls://` URL or a server that
/// requires TLS turns it on too.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsTlsConfig {
    /// Refuse to talk to NATS without TLS. Default false.
    pub required: bool,
    /// PEM file of the CA(s) that signed the servers' certificates, added
    /// to the system's roots. Default none.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS, with `key_file`. Default none.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`. Default none.
    pub key_file: Option<PathBuf>,
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
            user: String::new(),
            password: Secret::default(),
            token: Secret::default(),
            nkey_seed: Secret::default(),
            credentials_file: None,
            tls: NatsTlsConfig::default(),
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
        if self.url.split(',').any(|u| u.contains('@')) {
            problems.push(
                "nats.url must not carry credentials (user:password@ is ignored by the client and shown in debug \
                 logs): set nats.user and nats.password, or nats.token"
                    .into(),
            );
        }
        if self.user.is_empty() != self.password.is_empty() {
            problems.push("nats.user and nats.password go together: set both or neither".into());
        }
        let methods = [
            !self.user.is_empty() || !self.password.is_empty(),
            !self.token.is_empty(),
            !self.nkey_seed.is_empty(),
            self.credentials_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            problems.push(
                "nats: choose one authentication method: user + password, token, nkey_seed or credentials_file".into(),
            );
        }
        if !self.nkey_seed.is_empty() && !self.nkey_seed.expose().starts_with("SU") {
            problems.push("nats.nkey_seed must be a user seed (it starts with SU; value not shown)".into());
        }
        let files = [
            ("nats.credentials_file", &self.credentials_file),
            ("nats.tls.ca_file", &self.tls.ca_file),
            ("nats.tls.cert_file", &self.tls.cert_file),
            ("nats.tls.key_file", &self.tls.key_file),
        ];
        for (key, path) in files {
            if let Some(path) = path {
                if !path.is_file() {
                    problems.push(format!("{key} {} is not a readable file", path.display()));
                }
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            problems.push("nats.tls.cert_file and nats.tls.key_file go together".into());
        }
    }

    /// The URL(s) with any `user:password@` part replaced by `***@`, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Which authentication is configured, for the log (never the secret).
    pub fn auth_method(&self) -> &'static str {
        if self.credentials_file.is_some() {
            "credentials file"
        } else if !self.nkey_seed.is_empty() {
            "nkey"
        } else if !self.token.is_empty() {
            "token"
        } else if !self.user.is_empty() {
            "user and password"
        } else {
            "none"
        }
    }
}

/// `url` (comma-separated server URLs) with userinfo replaced by `***`.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &u[..scheme + 3], &u[at..]),
            (None, Some(at)) => format!("***{}", &u[at..]),
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Why the connection setup failed before any attempt to reach NATS.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The `.creds` file could not be read or parsed.
    #[error("cannot use nats.credentials_file {path}: {source}")]
    Credentials {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// async-nats refused the options (e.g. a malformed URL).
    #[error("cannot set up the NATS client for {url}: {source}")]
    Client {
        /// The redacted URL.
        url: String,
        /// Why.
        source: async_nats::ConnectError,
    },
}

/// Link state changes after the first connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Connected (again).
    Up,
    /// Disconnected; the client is reconnecting.
    Down,
}

/// Connects to NATS with our settings, in the background: the client is
/// returned at once and keeps trying (forever, backing off to
/// `max_reconnect_delay`), so the process answers `/readyz` with 503
/// while NATS is unreachable or refuses its credentials, and says why in
/// its log. The returned receiver changes to [`LinkState::Up`] after every
/// (re)connect, so callers can resync. `inbox_prefix` is the prefix of
/// this process's reply subjects (NATS permissions name it).
///
/// # Errors
/// If the credentials file cannot be read or the URL is malformed.
pub async fn connect(
    config: &NatsConfig,
    name: &str,
    inbox_prefix: &str,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> Result<(Client, watch::Receiver<(u64, LinkState)>), SetupError> {
    let (tx, rx) = watch::channel((0u64, LinkState::Down));
    health.set_bus_up(false);
    let max_delay = config.max_reconnect_delay;
    // One rate limit per cause, so a change of cause is logged at once.
    let failures = Arc::new([FailureLog::default(), FailureLog::default()]);
    let mut opts = ConnectOptions::new();
    if let Some(path) = &config.credentials_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|source| SetupError::Credentials {
                path: path.display().to_string(),
                source,
            })?;
    } else if !config.nkey_seed.is_empty() {
        opts = opts.nkey(config.nkey_seed.expose().to_owned());
    } else if !config.token.is_empty() {
        opts = opts.token(config.token.expose().to_owned());
    } else if !config.user.is_empty() {
        opts = opts.user_and_password(config.user.clone(), config.password.expose().to_owned());
    }
    if config.tls.required {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &config.tls.ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let url = config.redacted_url();
    let method = config.auth_method();
    let opts = opts
        .name(name)
        .custom_inbox_prefix(inbox_prefix)
        .ping_interval(config.ping_interval)
        .request_timeout(Some(config.request_timeout))
        .connection_timeout(config.connect_timeout)
        .max_reconnects(None)
        .retry_on_initial_connect()
        .reconnect_delay_callback(move |attempts| {
            let ms = 50u64.saturating_mul(1 << attempts.min(8));
            Duration::from_millis(ms).min(max_delay)
        })
        .event_callback(move |event| {
            let tx = tx.clone();
            let health = health.clone();
            let metrics = metrics.clone();
            let failures = failures.clone();
            let url = url.clone();
            async move {
                match event {
                    Event::Connected => {
                        tracing::info!(%url, auth = method, "NATS connection (re)established");
                        failures.iter().for_each(FailureLog::reset);
                        health.set_bus_up(true);
                        if tx.borrow().0 > 0 && tx.borrow().1 == LinkState::Down {
                            metrics.nats_reconnects.inc();
                        }
                        tx.send_modify(|(n, s)| {
                            *n += 1;
                            *s = LinkState::Up;
                        });
                    }
                    Event::Disconnected => {
                        tracing::warn!(%url, "NATS connection lost, reconnecting");
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
                    // A connection attempt failed; async-nats retries.
                    Event::ClientError(ClientError::Other(why)) => {
                        metrics.nats_connect_failures.inc();
                        health.set_bus_up(false);
                        let refused = credentials_refused(&why);
                        if let Some(repeated) = failures[usize::from(refused)].due() {
                            log_connect_failure(&url, method, &why, repeated);
                        }
                    }
                    Event::ServerError(ServerError::AuthorizationViolation) => {
                        metrics.nats_connect_failures.inc();
                        tracing::error!(%url, auth = method, "NATS refused this process's credentials (authorization violation)");
                    }
                    Event::ServerError(ServerError::Other(e)) if e.to_ascii_lowercase().contains("permissions violation") => {
                        metrics.nats_permission_violations.inc();
                        tracing::error!(
                            error = %e,
                            "NATS denied a publish or subscribe of this process: its NATS user lacks a permission \
                             (see k8s/switchboard/files/nats-permissions.conf)"
                        );
                    }
                    other => tracing::info!(event = %other, "NATS event"),
                }
            }
        });
    // A comma-separated list names several servers of one cluster.
    let servers: Vec<&str> = config.url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let client = opts
        .connect(servers.as_slice())
        .await
        .map_err(|source| SetupError::Client {
            url: config.redacted_url(),
            source,
        })?;
    Ok((client, rx))
}

/// Whether a failed attempt's reason (async-nats's `ConnectErrorKind`
/// text) says the server refused the credentials.
fn credentials_refused(why: &str) -> bool {
    why.contains("authorization violation") || why.contains("signing nonce")
}

fn log_connect_failure(url: &str, method: &str, why: &str, repeated: u64) {
    if credentials_refused(why) {
        tracing::error!(
            %url,
            auth = method,
            repeated,
            "NATS refused this process's credentials ({why}): check nats.user/password, token, nkey_seed or \
             credentials_file and the server's users; retrying"
        );
    } else if why.contains("IO error") {
        // async-nats reports a refused TLS handshake as an I/O error too.
        tracing::warn!(
            %url,
            repeated,
            "cannot connect to NATS ({why}: unreachable, or the TLS handshake failed: does nats.tls.ca_file hold \
             the CA of the server's certificate?); retrying"
        );
    } else {
        tracing::warn!(%url, repeated, "cannot connect to NATS ({why}); retrying");
    }
}

/// Rate limit of the connect-failure log: the first failure at once, then
/// one line per 30 s saying how many failed meanwhile.
#[derive(Default)]
struct FailureLog {
    /// Failures since the last line.
    pending: AtomicU64,
    last: std::sync::Mutex<Option<Instant>>,
}

impl FailureLog {
    const EVERY: Duration = Duration::from_secs(30);

    /// `Some(failures folded into this line)` when a line is due.
    fn due(&self) -> Option<u64> {
        let n = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return None;
        }
        *last = Some(Instant::now());
        self.pending.store(0, Ordering::Relaxed);
        Some(n)
    }

    fn reset(&self) {
        self.pending.store(0, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_credentials() {
        assert_eq!(redact_url("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(
            redact_url("nats://a:b@h1:4222,tls://tok@h2:4222,nats://h3"),
            "nats://***@h1:4222,tls://***@h2:4222,nats://h3"
        );
        assert_eq!(redact_url("u:p@h:4222"), "***@h:4222");
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn one_auth_method_and_no_secret_in_problems() {
        let mut c = NatsConfig {
            user: "sb-edge".into(),
            password: Secret::new("hunter2-secret"),
            token: Secret::new("tok-secret"),
            nkey_seed: Secret::new("XXnot-a-seed-secret"),
            ..NatsConfig::default()
        };
        let mut problems = Vec::new();
        c.validate(&mut problems);
        let all = problems.join("\n");
        assert!(all.contains("choose one authentication method"), "{all}");
        assert!(all.contains("nkey_seed must be a user seed"), "{all}");
        assert!(!all.contains("secret"), "{all}");
        assert!(!format!("{c:?}").contains("secret"), "Debug shows a secret");

        let mut with_url = NatsConfig {
            url: "nats://127.0.0.1:4222,nats://sb-edge:pw-secret@nats:4222".into(),
            ..NatsConfig::default()
        };
        let mut problems = Vec::new();
        with_url.validate(&mut problems);
        assert!(
            problems.iter().any(|p| p.contains("must not carry credentials")),
            "{problems:?}"
        );
        assert!(!problems.join("").contains("pw-secret"));
        with_url.url = "nats://127.0.0.1:4222".into();

        c.token = Secret::default();
        c.nkey_seed = Secret::default();
        c.password = Secret::default();
        let mut problems = Vec::new();
        c.validate(&mut problems);
        assert_eq!(
            problems,
            ["nats.user and nats.password go together: set both or neither"]
        );
    }

    #[test]
    fn connect_failures_are_logged_once_per_period() {
        let log = FailureLog::default();
        assert_eq!(log.due(), Some(1));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        *log.last.lock().expect("lock") = Some(Instant::now() - FailureLog::EVERY);
        assert_eq!(log.due(), Some(3));
        log.reset();
        assert_eq!(log.due(), Some(1));
    }
}
