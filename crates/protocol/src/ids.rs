//! Ids: validation (SPEC §2) and encoding into subject tokens and KV keys.
//!
//! The id charset `[A-Za-z0-9_.:@-]` allows `.`, `:` and `@`, which NATS
//! subjects and KV keys treat specially or refuse, so an id is never put raw
//! into a subject or key: [`encode`] turns it into base64url (no padding),
//! whose alphabet `[A-Za-z0-9_-]` is safe in both.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The longest id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// What kind of id is being checked; names the field in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// `bizCode` / `systemId`.
    Biz,
    /// `clientId`.
    Client,
    /// A group name.
    Group,
}

impl IdKind {
    /// The field name users know.
    pub fn field(self) -> &'static str {
        match self {
            Self::Biz => "bizCode",
            Self::Client => "clientId",
            Self::Group => "group",
        }
    }
}

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty id.
    #[error("{} is empty", .0.field())]
    Empty(IdKind),
    /// Longer than [`MAX_ID_LEN`].
    #[error("{} is longer than 128 bytes", .0.field())]
    TooLong(IdKind),
    /// A byte outside `[A-Za-z0-9_.:@-]`.
    #[error("{} may only contain A-Z a-z 0-9 _ . : @ -", .0.field())]
    BadChar(IdKind),
}

/// Checks an id against SPEC §2: 1..=128 bytes of `[A-Za-z0-9_.:@-]`.
///
/// # Errors
/// [`IdError`] naming the field and the rule broken.
pub fn validate(kind: IdKind, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty(kind));
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(kind));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'))
    {
        return Err(IdError::BadChar(kind));
    }
    Ok(())
}

/// Encodes an id as one subject token / key segment (base64url, no padding).
pub fn encode(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// Decodes what [`encode`] made; `None` if it is not such a token.
pub fn decode(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_spec_charset() {
        for id in ["c1", "a.b", "user@example.com", "x:y-z_1", &"a".repeat(128)] {
            assert_eq!(validate(IdKind::Client, id), Ok(()), "{id}");
        }
    }

    #[test]
    fn refuses_bad_ids() {
        assert_eq!(validate(IdKind::Biz, ""), Err(IdError::Empty(IdKind::Biz)));
        assert_eq!(
            validate(IdKind::Client, &"a".repeat(129)),
            Err(IdError::TooLong(IdKind::Client))
        );
        for id in ["*", ">", "a b", "a/b", "é", "a\nb", "a,b", "d1 c1"] {
            assert_eq!(
                validate(IdKind::Group, id),
                Err(IdError::BadChar(IdKind::Group)),
                "{id}"
            );
        }
    }

    #[test]
    fn encoding_is_subject_safe_and_reversible() {
        for id in ["a.b", "d1.c1", "x:y@z", "-_-", &"z".repeat(128)] {
            let token = encode(id);
            assert!(token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            assert_eq!(decode(&token).as_deref(), Some(id));
        }
        assert_ne!(encode("d1.c1"), format!("{}.{}", encode("d1"), encode("c1")));
    }
}
