//! The WebSocket handshake: the opening request's HTTP checks (RFC 6455
//! §4.1–§4.2) and its query: `bizCode` (or `systemId`), `clientId`,
//! `group` (comma list), `token`. Checked before the upgrade.

use switchboard_protocol::ids::{self, IdKind};

/// A checked handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// bizCode (with authentication on, the token may supply it).
    pub biz: Option<String>,
    /// clientId, if the client chose one.
    pub client: Option<String>,
    /// Groups, deduplicated, in the order given.
    pub groups: Vec<String>,
    /// The token, if any.
    pub token: Option<String>,
    /// The position the client asks to recover from (SPEC §7), if it
    /// asked.
    pub recover: Option<Recover>,
}

/// Longest `epoch` a client may name: longer ones match no epoch.
const MAX_EPOCH_LEN: usize = 128;

/// A recovery asked for with `recover=<seq>&epoch=<epoch>`. A bad value
/// is not an error (SPEC §7): it yields `recovered: false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recover {
    /// The last `seq` the client processed; `None` when `recover` is not
    /// a `seq` (a non-negative integer up to 2^53 - 1).
    pub seq: Option<u64>,
    /// The epoch it was in; `None` when missing (or over 128 bytes).
    pub epoch: Option<String>,
}

impl Recover {
    /// Reads `recover` and `epoch` (either may be absent or bad).
    fn read(seq: Option<&str>, epoch: Option<String>) -> Self {
        Self {
            seq: seq.and_then(|s| s.parse::<u64>().ok()).filter(|s| *s < (1 << 53)),
            epoch: epoch.filter(|e| e.len() <= MAX_EPOCH_LEN),
        }
    }
}

/// Why a handshake was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// No bizCode / systemId.
    #[error("bizCode is required")]
    MissingBiz,
    /// An id broke the rules.
    #[error(transparent)]
    BadId(#[from] ids::IdError),
    /// Too many groups.
    #[error("too many groups (at most {0})")]
    TooManyGroups(usize),
    /// bizCode and systemId both given and different.
    #[error("bizCode and systemId disagree")]
    Conflict,
    /// clientId given more than once with different values.
    #[error("clientId given twice with different values")]
    ClientConflict,
}

/// Why an opening request is not a WebSocket handshake we can accept
/// (RFC 6455 §4.2.1–§4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// No `Upgrade: websocket` with `Connection: upgrade`: 426.
    #[error("expected a WebSocket upgrade")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` other than 13: 426 with
    /// `Sec-WebSocket-Version: 13` so the client can fall back (§4.4).
    #[error("unsupported Sec-WebSocket-Version (only 13)")]
    Version,
    /// Not HTTP/1.1 or later (§4.1 item 2): 400.
    #[error("a WebSocket handshake needs HTTP/1.1")]
    HttpVersion,
    /// No `Host` header, or more than one (§4.1 item 4; RFC 9112 §3.2): 400.
    #[error("exactly one Host header is required")]
    MissingHost,
    /// `Sec-WebSocket-Key` missing, repeated, or not 16 bytes in base64
    /// (§4.1 item 7): 400.
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    Key,
}

impl UpgradeError {
    /// The answer: 426 Upgrade Required, or 400.
    pub fn status(self) -> http::StatusCode {
        match self {
            Self::NotUpgrade | Self::Version => http::StatusCode::UPGRADE_REQUIRED,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Checks that `req` is a WebSocket opening handshake this server accepts.
///
/// # Errors
/// [`UpgradeError`] naming the first problem.
pub fn check_upgrade<B>(req: &http::Request<B>) -> Result<(), UpgradeError> {
    let headers = req.headers();
    if !has_token(headers, http::header::UPGRADE, "websocket")
        || !has_token(headers, http::header::CONNECTION, "upgrade")
    {
        return Err(UpgradeError::NotUpgrade);
    }
    let mut versions = headers.get_all(http::header::SEC_WEBSOCKET_VERSION).iter();
    if versions.next().map(http::HeaderValue::as_bytes) != Some(b"13") || versions.next().is_some() {
        return Err(UpgradeError::Version);
    }
    if req.version() < http::Version::HTTP_11 {
        return Err(UpgradeError::HttpVersion);
    }
    if headers.get_all(http::header::HOST).iter().count() != 1 {
        return Err(UpgradeError::MissingHost);
    }
    let mut keys = headers.get_all(http::header::SEC_WEBSOCKET_KEY).iter();
    match (keys.next(), keys.next()) {
        (Some(key), None) if is_nonce(key.as_bytes()) => Ok(()),
        _ => Err(UpgradeError::Key),
    }
}

/// Whether a comma-separated header (any of its lines) holds `token`,
/// compared case-insensitively.
fn has_token(headers: &http::HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&c| c == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Base64 of exactly 16 bytes: 22 alphabet characters, the last of which
/// carries only 2 bits (so is one of `A Q g w`), then `==`.
fn is_nonce(key: &[u8]) -> bool {
    let key = key.trim_ascii();
    key.len() == 24
        && key[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
        && &key[22..] == b"=="
}

/// Parses and checks a handshake query string.
///
/// # Errors
/// [`HandshakeError`] naming the first problem.
pub fn parse(query: &str, max_groups: usize) -> Result<Handshake, HandshakeError> {
    let mut biz: Option<String> = None;
    let mut client = None;
    let mut groups: Vec<String> = Vec::new();
    let mut token = None;
    let mut recover: Option<String> = None;
    let mut epoch: Option<String> = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "bizCode" | "systemId" => {
                if let Some(b) = &biz {
                    if *b != v {
                        return Err(HandshakeError::Conflict);
                    }
                }
                biz = Some(v.into_owned());
            }
            "clientId" => {
                if client.as_ref().is_some_and(|c: &String| *c != v) {
                    return Err(HandshakeError::ClientConflict);
                }
                client = Some(v.into_owned());
            }
            "group" | "groups" => {
                for g in v.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                    ids::validate(IdKind::Group, g)?;
                    if !groups.iter().any(|x| x == g) {
                        if groups.len() == max_groups {
                            return Err(HandshakeError::TooManyGroups(max_groups));
                        }
                        groups.push(g.to_owned());
                    }
                }
            }
            "token" => token = Some(v.into_owned()),
            "recover" => recover = Some(v.into_owned()),
            "epoch" => epoch = Some(v.into_owned()),
            _ => {}
        }
    }
    let biz = biz.filter(|b| !b.is_empty());
    if let Some(b) = &biz {
        ids::validate(IdKind::Biz, b)?;
    }
    let client = client.filter(|c| !c.is_empty());
    if let Some(c) = &client {
        ids::validate(IdKind::Client, c)?;
    }
    let recover = recover.map(|r| Recover::read(Some(&r), epoch));
    Ok(Handshake {
        biz,
        client,
        groups,
        token,
        recover,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_urls_in_any_order() {
        let h = parse("clientId=c1&bizCode=d1&token=456&group=g1", 64).expect("valid");
        assert_eq!(h.biz.as_deref(), Some("d1"));
        assert_eq!(h.client.as_deref(), Some("c1"));
        assert_eq!(h.groups, vec!["g1"]);
        assert_eq!(h.token.as_deref(), Some("456"));
        let h = parse("bizCode=d1&group=g1,g2&clientId=c4&token=456", 64).expect("valid");
        assert_eq!(h.groups, vec!["g1", "g2"]);
        let h = parse("systemId=d1&group=g1%2Cg1,,g2", 64).expect("valid");
        assert_eq!((h.biz.as_deref(), h.client, h.groups.len()), (Some("d1"), None, 2));
        assert_eq!(h.recover, None);
    }

    #[test]
    fn a_bad_recovery_position_is_not_an_error() {
        let h = parse("bizCode=d1&recover=41&epoch=e-1", 64).expect("valid");
        assert_eq!(
            h.recover,
            Some(Recover {
                seq: Some(41),
                epoch: Some("e-1".into())
            })
        );
        for (q, seq) in [
            ("bizCode=d1&recover=-1", None),
            ("bizCode=d1&recover=x", None),
            ("bizCode=d1&recover=9007199254740992", None),
            ("bizCode=d1&recover=9007199254740991", Some((1u64 << 53) - 1)),
        ] {
            let h = parse(q, 64).expect("a bad recover is no handshake error");
            assert_eq!(h.recover.map(|r| (r.seq, r.epoch)), Some((seq, None)), "{q}");
        }
        let long = format!("bizCode=d1&recover=1&epoch={}", "e".repeat(200));
        assert_eq!(
            parse(&long, 64).ok().and_then(|h| h.recover).and_then(|r| r.epoch),
            None
        );
        assert_eq!(
            parse("bizCode=d1&epoch=e", 64).map(|h| h.recover),
            Ok(None),
            "epoch alone asks nothing"
        );
    }

    fn request(edit: impl FnOnce(http::request::Builder) -> http::request::Builder) -> http::Request<()> {
        let b = http::Request::get("/ws?bizCode=d1")
            .header("host", "127.0.0.1")
            .header("upgrade", "websocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        edit(b).body(()).expect("request")
    }

    #[test]
    fn checks_the_opening_handshake() {
        assert_eq!(check_upgrade(&request(|b| b)), Ok(()));
        let mut no_upgrade = request(|b| b);
        no_upgrade.headers_mut().remove("upgrade");
        assert_eq!(check_upgrade(&no_upgrade), Err(UpgradeError::NotUpgrade));
        for v in ["8", "12", "14", "abc", ""] {
            let mut r = request(|b| b);
            r.headers_mut()
                .insert("sec-websocket-version", http::HeaderValue::from_static(v));
            assert_eq!(check_upgrade(&r), Err(UpgradeError::Version), "{v:?}");
        }
        assert_eq!(
            check_upgrade(&request(|b| b.header("sec-websocket-version", "13"))),
            Err(UpgradeError::Version),
            "repeated version"
        );
        assert_eq!(
            check_upgrade(&request(|b| b.version(http::Version::HTTP_10))),
            Err(UpgradeError::HttpVersion)
        );
        let mut no_host = request(|b| b);
        no_host.headers_mut().remove("host");
        assert_eq!(check_upgrade(&no_host), Err(UpgradeError::MissingHost));
        assert_eq!(
            check_upgrade(&request(|b| b.header("host", "other"))),
            Err(UpgradeError::MissingHost),
            "two Host headers"
        );
        for key in [
            "",
            "abc",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25jZQ==AAAA",
            "dGhlIHNhbXBsZSBub25j*Q==",
            "AAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let mut r = request(|b| b);
            r.headers_mut()
                .insert("sec-websocket-key", http::HeaderValue::from_static(key));
            assert_eq!(check_upgrade(&r), Err(UpgradeError::Key), "{key:?}");
        }
        assert_eq!(
            check_upgrade(&request(|b| b.header("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA=="))),
            Err(UpgradeError::Key),
            "repeated key"
        );
    }

    #[test]
    fn refuses_bad_handshakes() {
        assert_eq!(parse("clientId=c1", 64).map(|h| h.biz), Ok(None));
        assert_eq!(parse("bizCode=", 64).map(|h| h.biz), Ok(None));
        assert!(matches!(parse("bizCode=d%201", 64), Err(HandshakeError::BadId(_))));
        assert!(matches!(
            parse("bizCode=d1&clientId=*", 64),
            Err(HandshakeError::BadId(_))
        ));
        let long = "c".repeat(129);
        assert!(matches!(
            parse(&format!("bizCode=d1&clientId={long}"), 64),
            Err(HandshakeError::BadId(_))
        ));
        assert!(matches!(
            parse("bizCode=d1&group=a,b>", 64),
            Err(HandshakeError::BadId(_))
        ));
        assert_eq!(
            parse("bizCode=d1&group=a,b,c", 2),
            Err(HandshakeError::TooManyGroups(2))
        );
        assert_eq!(parse("bizCode=d1&systemId=d2", 64), Err(HandshakeError::Conflict));
        assert_eq!(
            parse("bizCode=d1&clientId=a&clientId=b", 64),
            Err(HandshakeError::ClientConflict)
        );
        assert!(parse("bizCode=d1&clientId=a&clientId=a", 64).is_ok());
    }
}
