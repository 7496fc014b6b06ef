//! `[webhooks]` configuration, and the operator's allow-list of target
//! hosts that every webhook URL is checked against.

use std::time::Duration;

use serde::Deserialize;

/// `[webhooks]`: who may be called, how long a call may take, how often
/// an event is tried.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Hosts a webhook URL may name: exact host names or IP literals
    /// (`hooks.example.com`, `203.0.113.7`, `[2001:db8::1]`), or
    /// `*.example.com` for any subdomain of `example.com` (not itself).
    /// Any port. Default empty: no webhook can be set.
    pub allowed_hosts: Vec<String>,
    /// Longest TCP (and TLS) connect to a webhook target. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest whole call: connect, request, response head and body.
    /// Longer is a failed attempt. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per event; after the last failed one the event is a dead
    /// letter (counted, not delivered). Default 8; between 1 and 100.
    pub max_attempts: u32,
    /// Wait before the first retry; each further retry waits twice as long,
    /// up to `backoff_max`. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Longest wait between two attempts. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Most events in one call (`{"events":[...]}`). Default 10; between 1
    /// and 100.
    pub max_batch: usize,
    /// `standalone`: events waiting for one bizCode's webhook; past it new
    /// events of that bizCode are dropped (counted). Default 1000.
    pub queue: usize,
    /// Routers: how often each router looks for webhook consumers it does
    /// not serve yet (webhooks set through another router). Default `5s`.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// After `rotateSecret`, how long calls still carry a signature with the
    /// old secret too. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub secret_overlap: Duration,
    /// Let host names resolve to loopback, private, link-local or other
    /// non-public addresses. Default false: only a host listed as an IP
    /// literal may be such an address (so DNS cannot point an allowed
    /// name inside the network).
    pub allow_private_addresses: bool,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_batch: 10,
            queue: 1000,
            refresh: Duration::from_secs(5),
            secret_overlap: Duration::from_secs(86_400),
            allow_private_addresses: false,
        }
    }
}

/// Most attempts per event.
pub const MAX_ATTEMPTS: u32 = 100;
/// Most events in one call.
pub const MAX_BATCH: usize = 100;

impl WebhooksConfig {
    /// Pushes configuration problems.
    pub fn validate(&self, problems: &mut Vec<String>) {
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            if let Err(e) = check_pattern(h) {
                problems.push(format!("webhooks.allowed_hosts[{i}]: {h:?}: {e}"));
            }
        }
        if self.connect_timeout.is_zero() || self.timeout.is_zero() {
            problems.push("webhooks.connect_timeout and webhooks.timeout must be positive".into());
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            problems.push(format!("webhooks.max_attempts must be between 1 and {MAX_ATTEMPTS}"));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            problems.push("webhooks.backoff_initial must be positive and at most webhooks.backoff_max".into());
        }
        if !(1..=MAX_BATCH).contains(&self.max_batch) {
            problems.push(format!("webhooks.max_batch must be between 1 and {MAX_BATCH}"));
        }
        if self.queue == 0 {
            problems.push("webhooks.queue must be positive".into());
        }
        if self.refresh < Duration::from_millis(100) {
            problems.push("webhooks.refresh must be at least 100ms".into());
        }
    }

    /// The wait before attempt `attempt + 1` after `attempt` failed ones
    /// (1-based): `backoff_initial` × 2^(attempt-1), at most `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        self.backoff_initial.saturating_mul(1u32 << shift).min(self.backoff_max)
    }

    /// Whether the allow-list lets a webhook call `host` (lower case, as
    /// a parsed URL gives it; IPv6 in brackets).
    pub fn allows(&self, host: &str) -> bool {
        self.allowed_hosts.iter().any(|p| {
            let p = p.to_ascii_lowercase();
            match p.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => p == host,
            }
        })
    }
}

/// An allow-list entry: a host name, an IP literal, or `*.` and a domain.
fn check_pattern(p: &str) -> Result<(), &'static str> {
    let name = p.strip_prefix("*.").unwrap_or(p);
    if name.is_empty() {
        return Err("empty");
    }
    if name.contains(['/', ':', '@', '*', ' ']) && !(name.starts_with('[') && name.ends_with(']')) {
        return Err("a host only: no scheme, port, path or other wildcard (`*.` may start it)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(hosts: &[&str]) -> WebhooksConfig {
        WebhooksConfig {
            allowed_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            ..WebhooksConfig::default()
        }
    }

    #[test]
    fn the_allow_list_matches_hosts_and_subdomains_only() {
        let c = config(&["hooks.example.com", "*.shop.example", "127.0.0.1", "[::1]"]);
        for ok in [
            "hooks.example.com",
            "a.shop.example",
            "a.b.shop.example",
            "127.0.0.1",
            "[::1]",
        ] {
            assert!(c.allows(ok), "{ok}");
        }
        for no in [
            "example.com",
            "xhooks.example.com",
            "shop.example",
            "evilshop.example",
            "127.0.0.2",
            "localhost",
            "",
        ] {
            assert!(!c.allows(no), "{no}");
        }
        assert!(
            !WebhooksConfig::default().allows("hooks.example.com"),
            "empty by default"
        );
    }

    #[test]
    fn bad_entries_and_limits_are_reported() {
        let mut c = config(&["https://x.example", "x.example:443", "", "*.", "a.*.example"]);
        c.max_attempts = 0;
        c.max_batch = 1000;
        let mut p = Vec::new();
        c.validate(&mut p);
        assert_eq!(p.len(), 7, "{p:#?}");
        let mut p = Vec::new();
        WebhooksConfig::default().validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let c = WebhooksConfig::default();
        let secs: Vec<u64> = (1..=10).map(|a| c.backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(c.backoff(u32::MAX), Duration::from_secs(300));
    }
}
