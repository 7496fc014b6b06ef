//! Which key is calling, and which bizCodes it may serve.
//!
//! The Bearer token is compared with every configured key in constant time
//! ([`matching_key`]); no match is a 401. A key scoped to some bizCodes
//! ([`ApiKey`]) gets 403 for any other ([`Caller::may_serve`]), checked
//! once the bizCode is known and valid, before anything is looked up or
//! done for it.

use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::error::ApiError;
use crate::config::ApiKey;

/// Who is calling: decides which bizCodes a call may serve.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Caller<'a> {
    /// API auth is off: every bizCode.
    Any,
    /// The key the Bearer token matched.
    Key(&'a ApiKey),
}

impl Caller<'_> {
    /// Refuses (403) a call for a bizCode outside the caller's key scope.
    /// Runs once the bizCode is known and valid, before anything is read
    /// for it (registration) or done to it.
    pub(crate) fn may_serve(self, biz: &str) -> Result<(), ApiError> {
        match self {
            Self::Key(key) if !key.allows(biz) => Err(ApiError::Forbidden { biz: biz.to_owned() }),
            _ => Ok(()),
        }
    }

    /// Refuses (403) a call only operators may make (`set_limits`: a
    /// tenant's key must not raise its own limits) to a scoped key.
    pub(crate) fn must_be_global(self) -> Result<(), ApiError> {
        match self {
            Self::Key(key) if key.biz_codes().is_some() => Err(ApiError::NotGlobal),
            _ => Ok(()),
        }
    }

    /// Which key this is, for the rate limit: its place in `keys`
    /// (`usize::MAX` with auth off).
    pub(crate) fn id(self, keys: &[ApiKey]) -> usize {
        match self {
            Self::Any => usize::MAX,
            Self::Key(key) => keys.iter().position(|k| std::ptr::eq(k, key)).unwrap_or(usize::MAX),
        }
    }
}

/// The key `given` equals, compared with every key in constant time: no
/// early exit, and which key matched (if any) is only chosen with
/// constant-time selects, so the timing says nothing about the keys but
/// their lengths (as `ct_eq` on slices of different lengths).
pub(crate) fn matching_key<'a>(keys: &'a [ApiKey], given: &[u8]) -> Option<&'a ApiKey> {
    let mut found = subtle::Choice::from(0u8);
    let mut index = 0u64;
    for (i, key) in keys.iter().enumerate() {
        let eq = key.secret().ct_eq(given);
        index.conditional_assign(&(i as u64), eq);
        found |= eq;
    }
    if bool::from(found) {
        usize::try_from(index).ok().and_then(|i| keys.get(i))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use switchboard_protocol::RefusalCode;

    use super::*;

    fn keys() -> Vec<ApiKey> {
        vec![
            ApiKey::global("global-key-0123456789"),
            ApiKey::scoped("shop-key-0123456789ab", vec!["shop".into(), "chat".into()]),
            ApiKey::scoped("news-key-0123456789ab", vec!["news".into()]),
        ]
    }

    #[test]
    fn the_matcher_finds_the_key_that_matched() {
        let keys = keys();
        for (i, k) in keys.iter().enumerate() {
            let found = matching_key(&keys, k.secret());
            assert_eq!(found, Some(&keys[i]), "key {i}");
        }
        // Prefixes, extensions, other lengths, nothing, near misses.
        for given in [
            &b""[..],
            b"global-key-012345678",
            b"global-key-01234567890",
            b"shop-key-0123456789aB",
            b"news-key-0123456789ab ",
            b"x",
        ] {
            assert_eq!(matching_key(&keys, given), None, "{}", String::from_utf8_lossy(given));
        }
        assert_eq!(matching_key(&[], b"global-key-0123456789"), None);
        // The last key matches too (no early exit skips it, none is off by one).
        assert_eq!(
            matching_key(&keys, b"news-key-0123456789ab").and_then(ApiKey::biz_codes),
            Some(&["news".to_owned()][..])
        );
    }

    #[test]
    fn a_scoped_key_serves_its_biz_codes_only() {
        let keys = keys();
        let shop = Caller::Key(&keys[1]);
        assert!(shop.may_serve("shop").is_ok() && shop.may_serve("chat").is_ok());
        let e = shop.may_serve("news").expect_err("another bizCode");
        assert_eq!(
            e.status_and_code(),
            (StatusCode::FORBIDDEN, RefusalCode::Forbidden.as_u16())
        );
        assert!(e.message().contains("news"), "{}", e.message());
        assert!(shop.may_serve("sho").is_err() && shop.may_serve("shop2").is_err());
        assert!(Caller::Key(&keys[0]).may_serve("news").is_ok());
        assert!(Caller::Any.may_serve("news").is_ok());
    }

    #[test]
    fn only_global_keys_are_operators_and_keys_have_ids() {
        let keys = keys();
        let e = Caller::Key(&keys[1]).must_be_global().expect_err("scoped");
        assert_eq!(e.status_and_code().0, StatusCode::FORBIDDEN);
        assert!(Caller::Key(&keys[0]).must_be_global().is_ok());
        assert!(Caller::Any.must_be_global().is_ok());
        assert_eq!(Caller::Key(&keys[2]).id(&keys), 2);
        assert_eq!(Caller::Any.id(&keys), usize::MAX);
    }
}
