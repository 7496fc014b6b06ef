//! Webhooks: connection events (`sb-events`) delivered to a backend's
//! HTTP endpoint, per bizCode, signed, at least once.
//!
//! - Settings: each bizCode's webhook (URL, event kinds, secret) lives in
//!   its [`BizSettings`](crate::store::BizSettings); operators set it
//!   (`set_webhook`, global API keys only) and the URL's host must be on
//!   the operator's allow-list ([`WebhooksConfig::allowed_hosts`]).
//! - Body: `{"events":[<event>, ...]}` (at most `webhooks.max_batch`),
//!   signed ([`sign`]): `X-Switchboard-Signature: t=<unix s>,v1=<hex>`.
//! - Routers ([`jetstream`]): one durable pull consumer per bizCode with a
//!   webhook (`wh-<b64 bizCode>`, filtered to its subjects and kinds),
//!   shared by every router, so a slow endpoint holds back only its own
//!   bizCode. Retries are naks with an exponential delay; after
//!   `webhooks.max_attempts` an event is terminated and counted as a dead
//!   letter.
//! - `standalone` ([`memory`]): events from the in-process sink, one
//!   bounded queue and task per bizCode, the same signing and retries (not
//!   durable across restarts).
//!
//! Files: `config` (the section, the allow-list, backoff), `sign`, `post`
//! (the HTTP client), `jetstream`, `memory`; this one holds the settings
//! and the operator calls ([`Webhooks`]).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use switchboard_protocol::event::EventKind;
use switchboard_runtime::metrics::Metrics;

use crate::store::{BizRegistry, BizSettings, StoreError};

mod config;
pub mod jetstream;
pub mod memory;
mod post;
pub mod sign;

pub use config::{WebhooksConfig, MAX_ATTEMPTS, MAX_BATCH};

/// Every event kind's name, as a webhook lists them.
fn all_kinds() -> Vec<String> {
    EventKind::ALL.iter().map(|k| k.as_str().to_owned()).collect()
}

/// Longest webhook URL.
pub const MAX_URL_LEN: usize = 2048;

/// A bizCode's webhook as stored. `Debug` never shows the secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSettings {
    /// Where events are POSTed (`http` or `https`).
    pub url: String,
    /// The kinds it wants; empty: every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// The HMAC-SHA256 key (`whsec_` and 64 hex digits), made by the
    /// server and shown once.
    pub secret: String,
    /// The secret `rotateSecret` replaced, still signing until
    /// `previous_until` (ms since the epoch).
    #[serde(default)]
    pub previous_secret: Option<String>,
    /// See `previous_secret`.
    #[serde(default)]
    pub previous_until: u64,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .field("kinds", &self.kinds)
            .field("secret", &"<redacted>")
            .field("previous_until", &self.previous_until)
            .finish()
    }
}

impl WebhookSettings {
    /// Whether it wants events of `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind)
    }

    /// The URL without its query (which may carry a token of the
    /// receiver's): what logs show.
    pub fn log_url(&self) -> &str {
        self.url.split(['?', '#']).next().unwrap_or_default()
    }

    /// The secrets that sign a call made at `now_ms`: the current one, and
    /// the rotated-out one while it overlaps.
    pub fn signing_secrets(&self, now_ms: u64) -> Vec<&str> {
        let mut s = vec![self.secret.as_str()];
        if let Some(old) = self.previous_secret.as_deref().filter(|_| now_ms < self.previous_until) {
            s.push(old);
        }
        s
    }
}

/// The body of one call: `{"events":[...]}` around events already
/// encoded as JSON.
pub(crate) fn batch_body<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut b = BytesMut::with_capacity(256);
    b.put_slice(br#"{"events":["#);
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            b.put_u8(b',');
        }
        b.put_slice(e);
    }
    b.put_slice(b"]}");
    b.freeze()
}

/// What both delivery loops share: the settings, the HTTP client, the
/// configuration and the metrics.
#[derive(Clone)]
pub struct Dispatch {
    registry: Arc<dyn BizRegistry>,
    poster: post::Poster,
    config: Arc<WebhooksConfig>,
    metrics: Arc<Metrics>,
}

impl Dispatch {
    /// Delivery with `config`, reading webhooks from `registry`.
    ///
    /// # Errors
    /// If the HTTP client cannot be built (its TLS backend).
    pub fn new(config: WebhooksConfig, registry: Arc<dyn BizRegistry>, metrics: Arc<Metrics>) -> Result<Self, String> {
        Ok(Self {
            poster: post::Poster::new(&config, metrics.clone())?,
            registry,
            config: Arc::new(config),
            metrics,
        })
    }

    /// `biz`'s webhook now.
    pub(crate) async fn hook(&self, biz: &str) -> Result<Option<WebhookSettings>, StoreError> {
        Ok(self.registry.settings(biz).await?.and_then(|(s, _)| s.webhook))
    }
}

/// An operator's change to a bizCode's webhook (`set_webhook`).
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    /// The URL; `None` or empty removes the webhook.
    pub url: Option<String>,
    /// The kinds; `None` or empty: every kind.
    pub kinds: Option<Vec<String>>,
    /// Issue a new secret (the old one signs too for
    /// `webhooks.secret_overlap`).
    pub rotate_secret: bool,
}

/// A webhook as the API shows it: never the secret, except the one just
/// issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookView {
    /// Where events go.
    pub url: String,
    /// The kinds it gets (every kind, listed, when none were named).
    pub kinds: Vec<String>,
    /// The secret, only in the answer that issued it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// While a rotated-out secret still signs: until when (ms since the
    /// epoch).
    #[serde(rename = "previousSecretUntil", skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<u64>,
}

impl WebhookView {
    fn of(w: &WebhookSettings, secret: Option<String>, now_ms: u64) -> Self {
        Self {
            url: w.url.clone(),
            kinds: if w.kinds.is_empty() {
                all_kinds()
            } else {
                w.kinds.clone()
            },
            secret,
            previous_secret_until: (w.previous_secret.is_some() && now_ms < w.previous_until)
                .then_some(w.previous_until),
        }
    }
}

/// Why a webhook change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The request is wrong (the message says how): 400.
    #[error("{0}")]
    Invalid(String),
    /// The settings could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// JetStream refused the bizCode's consumer (logged).
    #[error("the webhook consumer could not be set up")]
    Bus,
    /// The settings kept changing under the change.
    #[error("the settings kept changing")]
    Contended,
}

/// Attempts at a compare-and-set of the settings.
const CAS_ATTEMPTS: usize = 8;

/// The operator calls on webhooks, and what they set up.
#[derive(Clone)]
pub struct Webhooks {
    config: Arc<WebhooksConfig>,
    registry: Arc<dyn BizRegistry>,
    /// Routers: the bizCodes' consumers, made and removed with their
    /// webhooks. `None` in `standalone`.
    consumers: Option<jetstream::Consumers>,
}

impl Webhooks {
    /// Webhooks of `standalone` (no consumers: [`memory`] delivers).
    pub fn memory(config: WebhooksConfig, registry: Arc<dyn BizRegistry>) -> Self {
        Self {
            config: Arc::new(config),
            registry,
            consumers: None,
        }
    }

    /// Webhooks of a router: each change also makes, updates or removes
    /// the bizCode's consumer on `consumers`' stream.
    pub fn jetstream(config: WebhooksConfig, registry: Arc<dyn BizRegistry>, consumers: jetstream::Consumers) -> Self {
        Self {
            config: Arc::new(config),
            registry,
            consumers: Some(consumers),
        }
    }

    /// `biz`'s webhook, if it has one.
    ///
    /// # Errors
    /// [`WebhookError::Store`] if the settings cannot be read.
    pub async fn get(&self, biz: &str) -> Result<Option<WebhookView>, WebhookError> {
        let now = switchboard_runtime::now_ms();
        Ok(self
            .registry
            .settings(biz)
            .await?
            .and_then(|(s, _)| s.webhook)
            .map(|w| WebhookView::of(&w, None, now)))
    }

    /// Sets, changes or removes `biz`'s webhook; answers it as stored (with
    /// the secret when one was issued), `None` once removed.
    ///
    /// A new webhook gets a new secret; a changed one keeps its secret
    /// unless `rotate_secret`.
    ///
    /// # Errors
    /// [`WebhookError::Invalid`] for a URL that is not http(s), has
    /// credentials, or names a host off the allow-list, and for unknown
    /// kinds; the others if the change could not be stored.
    pub async fn set(&self, biz: &str, change: WebhookChange) -> Result<Option<WebhookView>, WebhookError> {
        // Checked even for a removal: a wrong request is refused whole.
        let kinds = check_kinds(change.kinds.unwrap_or_default())?;
        let url = change.url.filter(|u| !u.is_empty());
        let Some(url) = url else {
            self.write(biz, |_| None).await?;
            if let Some(c) = &self.consumers {
                c.remove(biz).await;
            }
            tracing::info!(biz, "webhook removed");
            return Ok(None);
        };
        let url = self.check_url(&url)?;
        if let Some(c) = &self.consumers {
            c.ensure(biz, &kinds).await.map_err(|()| WebhookError::Bus)?;
        }
        let now = switchboard_runtime::now_ms();
        let overlap = u64::try_from(self.config.secret_overlap.as_millis()).unwrap_or(u64::MAX);
        let mut issued = None;
        let stored = self
            .write(biz, |old| {
                let mut w = WebhookSettings {
                    url: url.clone(),
                    kinds: kinds.clone(),
                    secret: String::new(),
                    previous_secret: None,
                    previous_until: 0,
                };
                match old {
                    Some(old) if !change.rotate_secret => {
                        w.secret = old.secret.clone();
                        w.previous_secret = old.previous_secret.clone();
                        w.previous_until = old.previous_until;
                        issued = None;
                    }
                    Some(old) => {
                        w.secret = new_secret();
                        w.previous_secret = Some(old.secret.clone());
                        w.previous_until = now.saturating_add(overlap);
                        issued = Some(w.secret.clone());
                    }
                    None => {
                        w.secret = new_secret();
                        issued = Some(w.secret.clone());
                    }
                }
                Some(w)
            })
            .await?;
        if let Some(w) = &stored {
            tracing::info!(biz, url = %w.log_url(), kinds = ?kinds, rotated = change.rotate_secret, "webhook set");
        }
        Ok(stored.map(|w| WebhookView::of(&w, issued, now)))
    }

    /// Replaces `biz`'s webhook with what `f` makes of the stored one
    /// (compare-and-set, keeping the other settings); answers it.
    async fn write(
        &self,
        biz: &str,
        mut f: impl FnMut(Option<&WebhookSettings>) -> Option<WebhookSettings>,
    ) -> Result<Option<WebhookSettings>, WebhookError> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut s, rev) = match self.registry.settings(biz).await? {
                Some((s, rev)) => (s, Some(rev)),
                None => (BizSettings::new(), None),
            };
            let w = f(s.webhook.as_ref());
            if w.is_none() && s.webhook.is_none() {
                return Ok(None);
            }
            s.webhook = w.clone();
            match self.registry.put_settings(biz, &s, rev).await {
                Ok(_) => return Ok(w),
                Err(StoreError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(WebhookError::Contended)
    }

    /// The URL, checked: http or https, no credentials, a host on the
    /// allow-list, at most [`MAX_URL_LEN`] bytes.
    fn check_url(&self, url: &str) -> Result<String, WebhookError> {
        if url.len() > MAX_URL_LEN {
            return Err(WebhookError::Invalid(format!("url is longer than {MAX_URL_LEN} bytes")));
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| WebhookError::Invalid(format!("url is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(WebhookError::Invalid("url must be http or https".into()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(WebhookError::Invalid("url must not carry credentials".into()));
        }
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self.config.allows(&host) {
            return Err(WebhookError::Invalid(format!(
                "host {host} is not allowed: the operator's webhooks.allowed_hosts does not list it"
            )));
        }
        Ok(parsed.to_string())
    }
}

/// The kinds, checked and without repeats; empty: every kind.
fn check_kinds(kinds: Vec<String>) -> Result<Vec<String>, WebhookError> {
    let mut out: Vec<String> = Vec::new();
    for k in kinds {
        if EventKind::parse(&k).is_none() {
            return Err(WebhookError::Invalid(format!(
                "unknown event kind {k:?} (kinds: {})",
                all_kinds().join(", ")
            )));
        }
        if !out.contains(&k) {
            out.push(k);
        }
    }
    if out.len() == EventKind::ALL.len() {
        out.clear();
    }
    Ok(out)
}

/// A fresh secret: `whsec_` and 32 random bytes in hex.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    let mut s = String::from("whsec_");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryRegistry;

    fn hooks(hosts: &[&str]) -> Webhooks {
        let config = WebhooksConfig {
            allowed_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            ..WebhooksConfig::default()
        };
        Webhooks::memory(config, Arc::new(MemoryRegistry::default()))
    }

    fn change(url: &str) -> WebhookChange {
        WebhookChange {
            url: Some(url.to_owned()),
            ..WebhookChange::default()
        }
    }

    #[tokio::test]
    async fn set_issues_a_secret_once_and_keeps_it_until_rotated() {
        let h = hooks(&["hooks.example.com"]);
        let first = h.set("d1", change("https://hooks.example.com/in")).await;
        let first = first.ok().flatten().expect("set");
        let secret = first.secret.clone().expect("issued");
        assert!(secret.starts_with("whsec_") && secret.len() == 70, "{secret}");
        assert_eq!(first.kinds, all_kinds());

        let mut c = change("https://hooks.example.com/other");
        c.kinds = Some(vec!["online".into(), "offline".into(), "online".into()]);
        let second = h.set("d1", c).await.ok().flatten().expect("changed");
        assert_eq!(
            (second.secret, second.kinds),
            (None, vec!["online".to_owned(), "offline".to_owned()])
        );
        let got = h.get("d1").await.ok().flatten().expect("stored");
        assert_eq!(got.url, "https://hooks.example.com/other");
        assert_eq!(got.secret, None, "get never shows the secret");

        let mut c = change("https://hooks.example.com/other");
        c.rotate_secret = true;
        let rotated = h.set("d1", c).await.ok().flatten().expect("rotated");
        assert!(rotated.secret.is_some_and(|s| s != secret));
        assert!(rotated.previous_secret_until.is_some());
        let stored = h
            .registry
            .settings("d1")
            .await
            .ok()
            .flatten()
            .and_then(|(s, _)| s.webhook);
        let stored = stored.expect("stored");
        assert_eq!(stored.signing_secrets(switchboard_runtime::now_ms()).len(), 2);
        assert!(!format!("{stored:?}").contains("whsec_"), "Debug redacts");
        let mut q = stored.clone();
        q.url = "https://hooks.example.com/in?token=t0p#x".into();
        assert_eq!(q.log_url(), "https://hooks.example.com/in");

        assert!(matches!(h.set("d1", WebhookChange::default()).await, Ok(None)));
        assert!(matches!(h.get("d1").await, Ok(None)));
    }

    #[tokio::test]
    async fn urls_off_the_allow_list_and_bad_kinds_are_refused() {
        let h = hooks(&["hooks.example.com", "*.shop.example"]);
        let long = format!("https://hooks.example.com/{}", "x".repeat(MAX_URL_LEN));
        for (url, why) in [
            ("https://evil.example/in", "not allowed"),
            ("https://169.254.169.254/latest", "not allowed"),
            ("ftp://hooks.example.com/in", "http or https"),
            ("https://user:pw@hooks.example.com/in", "credentials"),
            ("not a url", "not a URL"),
            (long.as_str(), "longer than 2048"),
        ] {
            match h.set("d1", change(url)).await {
                Err(WebhookError::Invalid(m)) => assert!(m.contains(why), "{url}: {m}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(h.set("d1", change("http://a.shop.example:8080/x")).await.is_ok());
        let mut c = change("https://hooks.example.com/in");
        c.kinds = Some(vec!["presence".into()]);
        assert!(matches!(h.set("d1", c).await, Err(WebhookError::Invalid(m)) if m.contains("presence")));
        let closed = hooks(&[]);
        assert!(matches!(
            closed.set("d1", change("https://hooks.example.com/in")).await,
            Err(WebhookError::Invalid(_))
        ));
    }

    #[test]
    fn the_body_is_a_list_of_events() {
        let body = batch_body([&br#"{"id":"a"}"#[..], br#"{"id":"b"}"#]);
        assert_eq!(&body[..], br#"{"events":[{"id":"a"},{"id":"b"}]}"#);
        assert_eq!(&batch_body([])[..], br#"{"events":[]}"#);
    }
}
