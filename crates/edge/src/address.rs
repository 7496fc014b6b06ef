//! The client's address, and the optional cap on WebSocket connections
//! per client address (`edge.max_connections_per_address`; SPEC §2: 429
//! with `Retry-After`). The caps per bizCode are in `tenant`.
//!
//! Behind nginx or an Ingress every client shares the proxy's address, so
//! the address is taken from `X-Forwarded-For` (or RFC 7239 `Forwarded`)
//! only when the peer is one of `edge.trusted_proxies`, and then it is the
//! rightmost address that is not itself a trusted proxy: anything left of
//! it was written by the client and proves nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use parking_lot::Mutex;

/// The address a connection counts against.
///
/// Addresses are canonical: an IPv4 peer of a dual-stack listener
/// (`::ffff:1.2.3.4`) is `1.2.3.4`, for the trust check and the count.
pub(crate) fn client_addr(peer: IpAddr, headers: &http::HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let xff = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| parse_node(a.trim()));
    let forwarded = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case("for").then(|| parse_node(v.trim()))?
        });
    // A proxy writes one of the two; take X-Forwarded-For when present.
    let hops: Vec<IpAddr> = xff.collect();
    let hops = if hops.is_empty() { forwarded.collect() } else { hops };
    hops.into_iter()
        .map(|ip| ip.to_canonical())
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// Deserializes `edge.trusted_proxies`: CIDR networks or single addresses
/// (a single address is its own /32 or /128).
///
/// # Errors
/// An entry that is neither.
pub(crate) fn deserialize_nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let entries = <Vec<String> as serde::Deserialize>::deserialize(d)?;
    entries
        .iter()
        .map(|e| {
            let e = e.trim();
            e.parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("{e:?} is not an IP address or CIDR network")))
        })
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`, optionally
/// quoted (RFC 7239 §6).
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches('"');
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    s.rsplit_once(':')?.0.parse().ok()
}

/// Live WebSocket connections per key (a client address).
#[derive(Debug)]
pub(crate) struct SlotLimiter<K> {
    counts: Arc<Mutex<HashMap<K, u32>>>,
}

impl<K> Default for SlotLimiter<K> {
    fn default() -> Self {
        Self { counts: Arc::default() }
    }
}

impl<K: Hash + Eq + Clone> SlotLimiter<K> {
    /// Takes a slot for `key` unless it already holds `max`.
    pub(crate) fn acquire(&self, key: &K, max: u32) -> Option<Slot<K>> {
        let mut counts = self.counts.lock();
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: self.counts.clone(),
            key: key.clone(),
        })
    }
}

/// One connection's place in its key's count; given back on drop.
#[derive(Debug)]
pub(crate) struct Slot<K: Hash + Eq> {
    counts: Arc<Mutex<HashMap<K, u32>>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The slots a connection holds for its life.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    /// Its client address's.
    pub(crate) address: Option<Slot<IpAddr>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net"), "::1/128".parse().expect("net")];
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
        // From an untrusted peer the header is ignored.
        assert_eq!(client_addr(ip("5.5.5.5"), &xff, &trusted), ip("5.5.5.5"));
        // From a proxy: the rightmost address that is not a proxy.
        assert_eq!(client_addr(ip("10.0.0.2"), &xff, &trusted), ip("1.2.3.4"));
        let two = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "7.7.7.7:5000")]);
        assert_eq!(client_addr(ip("::1"), &two, &trusted), ip("7.7.7.7"));
        let fwd = headers(&[("forwarded", r#"for=192.0.2.60;proto=http, for="[2001:db8::1]:4711""#)]);
        assert_eq!(client_addr(ip("10.0.0.2"), &fwd, &trusted), ip("2001:db8::1"));
        // An IPv4 peer of a dual-stack listener is trusted like its IPv4 form.
        assert_eq!(client_addr(ip("::ffff:10.0.0.2"), &xff, &trusted), ip("1.2.3.4"));
        assert_eq!(client_addr(ip("::ffff:5.5.5.5"), &xff, &trusted), ip("5.5.5.5"));
        // Nothing usable: the proxy itself.
        let junk = headers(&[("x-forwarded-for", "unknown, _hidden")]);
        assert_eq!(client_addr(ip("10.0.0.2"), &junk, &trusted), ip("10.0.0.2"));
        assert_eq!(client_addr(ip("10.0.0.2"), &headers(&[]), &trusted), ip("10.0.0.2"));
    }

    #[test]
    fn slots_are_counted_and_given_back() {
        let l = SlotLimiter::default();
        let a = l.acquire(&ip("1.1.1.1"), 2).expect("first");
        let b = l.acquire(&ip("1.1.1.1"), 2).expect("second");
        assert!(l.acquire(&ip("1.1.1.1"), 2).is_none());
        assert!(l.acquire(&ip("2.2.2.2"), 2).is_some());
        drop(a);
        assert!(l.acquire(&ip("1.1.1.1"), 2).is_some());
        drop(b);
        assert!(l.counts.lock().is_empty(), "no entry left for idle addresses");
    }
}
