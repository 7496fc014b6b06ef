//! One signed call to a webhook: a pooled `reqwest` client (rustls, no
//! redirects, no proxy, connect and whole-call timeouts) whose resolver
//! refuses non-public addresses for host names.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchboard_runtime::metrics::Metrics;

use super::config::WebhooksConfig;
use super::sign::{self, SIGNATURE_HEADER};
use super::WebhookSettings;

/// Most of a response body read (to reuse the connection); the rest is
/// dropped with the connection.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A 2xx answer: the events are delivered.
    Delivered,
    /// Anything else (other status, timeout, refused address, I/O): try
    /// again later. The reason is for the log.
    Failed(String),
}

/// The webhook HTTP client, shared by every bizCode (one connection pool).
#[derive(Clone)]
pub(crate) struct Poster {
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Poster {
    /// A client with `config`'s timeouts.
    ///
    /// # Errors
    /// If the TLS backend cannot be set up.
    pub(crate) fn new(config: &WebhooksConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        // reqwest is built without a provider of its own: use ring, as
        // async-nats does (an error means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(4)
            .user_agent(concat!("switchboard-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(PublicResolver {
                allow_private: config.allow_private_addresses,
            }))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Self { client, metrics })
    }

    /// POSTs `body` to `hook`, signed with its secret(s).
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled call is a failed attempt.
    pub(crate) async fn post(&self, hook: &WebhookSettings, body: Bytes, now_ms: u64) -> Outcome {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let signature = sign::header(&hook.signing_secrets(now_ms), t, &body);
        let started = Instant::now();
        let sent = self
            .client
            .post(&hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        let (result, outcome) = match sent {
            Ok(mut res) => {
                let status = res.status();
                // Read a little of the body so the connection is reused.
                let mut read = 0;
                while read < MAX_RESPONSE_BYTES {
                    match res.chunk().await {
                        Ok(Some(c)) => read += c.len(),
                        _ => break,
                    }
                }
                let class = match status.as_u16() {
                    200..=299 => "2xx",
                    300..=399 => "3xx",
                    400..=499 => "4xx",
                    _ => "5xx",
                };
                let outcome = if status.is_success() {
                    Outcome::Delivered
                } else {
                    Outcome::Failed(format!("answered {status}"))
                };
                (class, outcome)
            }
            Err(e) if e.is_timeout() => ("timeout", Outcome::Failed("timed out".into())),
            // Without the URL: logs show it without its query.
            Err(e) => ("error", Outcome::Failed(error_chain(&e.without_url()))),
        };
        self.metrics.webhook_request(result, started.elapsed().as_secs_f64());
        outcome
    }
}

/// An error and its causes on one line (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Resolves host names with the system resolver and drops every address
/// that is not public (unless allowed): an allowed name must not lead
/// inside the network. IP literals in URLs never reach a resolver; the
/// allow-list alone decides for them.
struct PublicResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address (webhooks.allow_private_addresses)").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `ip` is a public unicast address. An IPv6 address that carries
/// an IPv4 one (IPv4-mapped, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is
/// as public as that IPv4 address.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96): the gateway connects to the IPv4
            // address in the low 32 bits, so that address decides.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(IpAddr::V4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]))));
            }
            // 6to4 (2002::/16): the IPv4 address follows the prefix.
            if s[0] == 0x2002 {
                return is_public(IpAddr::V4(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2]))));
            }
            let first = s[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // IPv4-compatible (::/96, deprecated), local-use NAT64
                // (64:ff9b:1::/48), discard-only (100::/64)
                || s[..6] == [0; 6]
                || s[..3] == [0x64, 0xff9b, 1]
                || s[..4] == [0x100, 0, 0, 0]
                || (first & 0xfe00) == 0xfc00
                // link-local fe80::/10 and the deprecated site-local fec0::/10
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || first == 0x2001 && s[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            // IPv4 addresses inside IPv6 ones: NAT64 (a DNS64 resolver
            // turns an A record of 10.0.0.1 into 64:ff9b::a00:1, and the
            // NAT64 gateway connects to 10.0.0.1), IPv4-compatible, 6to4.
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "::127.0.0.1",
            "::10.0.0.1",
            "2002:a00:1::1",
            "2002:7f00:1::1",
            "fec0::1",
            "100::1",
            "192.0.0.8",
        ] {
            let ip: IpAddr = private.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]));
            assert!(!is_public(ip), "{private}");
        }
        for public in [
            "93.184.216.34",
            "2606:4700::1111",
            "8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            let ip: IpAddr = public.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]));
            assert!(is_public(ip), "{public}");
        }
    }
}
