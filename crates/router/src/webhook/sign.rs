//! Webhook signatures: HMAC-SHA256 over `"<t>.<body>"` with the bizCode's
//! secret, sent as `X-Switchboard-Signature: t=<unix s>,v1=<hex>` (one
//! `v1` per secret in use: two while a rotated-out secret still signs).
//!
//! A receiver recomputes the HMAC over the `t` it got, a `.` and the raw
//! body, compares it in constant time with any `v1`, and refuses a `t`
//! more than [`REPLAY_WINDOW_SECS`] from its clock (replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";

/// How far a receiver should accept `t` from its own clock, in seconds
/// (documented; the sender stamps each attempt anew).
pub const REPLAY_WINDOW_SECS: u64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// The MAC of `"<t>.<body>"` (`None` never happens: HMAC takes a key of
/// any length).
fn mac(secret: &str, t: u64, body: &[u8]) -> Option<HmacSha256> {
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).ok()?;
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Some(m)
}

/// The hex HMAC-SHA256 of `"<t>.<body>"` under `secret`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let Some(m) = mac(secret, t, body) else {
        return String::new();
    };
    let tag = m.finalize().into_bytes();
    let mut hex = String::with_capacity(tag.len() * 2);
    for b in tag {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 15)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The header value for `body` sent at `t` (unix seconds), signed with
/// each of `secrets`.
pub fn header(secrets: &[&str], t: u64, body: &[u8]) -> String {
    let mut v = format!("t={t}");
    for s in secrets {
        v.push_str(",v1=");
        v.push_str(&sign(s, t, body));
    }
    v
}

/// Whether `header` signs `body` with `secret` and its `t` is within
/// `window_secs` of `now` (unix seconds): what a receiver checks.
pub fn verify(header: &str, secret: &str, body: &[u8], now: u64, window_secs: u64) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if t.abs_diff(now) > window_secs {
        return false;
    }
    sigs.iter().any(|hex| {
        let Some(tag) = decode_hex(hex) else { return false };
        mac(secret, t, body).is_some_and(|m| m.verify_slice(&tag).is_ok())
    })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [h, l] => Some((char::from(*h).to_digit(16)? * 16 + char::from(*l).to_digit(16)?) as u8),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_vector() {
        // printf '1700000000.{"events":[]}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            sign("whsec_test", 1_700_000_000, br#"{"events":[]}"#),
            "4f6f9b7a41398ad124e52a1320534f978e522923f3f2b2724e31d7a9dbf78a7f"
        );
    }

    #[test]
    fn verify_accepts_any_listed_secret_within_the_window() {
        let body = br#"{"events":[{"id":"1"}]}"#;
        let h = header(&["new", "old"], 1000, body);
        assert!(h.starts_with("t=1000,v1="), "{h}");
        assert!(verify(&h, "new", body, 1000, 300));
        assert!(verify(&h, "old", body, 1299, 300));
        assert!(!verify(&h, "other", body, 1000, 300));
        assert!(!verify(&h, "new", b"{}", 1000, 300), "another body");
        assert!(!verify(&h, "new", body, 1301, 300), "too late: a replay");
        assert!(!verify("v1=00", "new", body, 1000, 300), "no t");
        assert!(!verify("t=1000,v1=zz", "new", body, 1000, 300));
    }
}
