//! The WebSocket handshake's query: `bizCode` (or `systemId`), `clientId`,
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
            "clientId" => client = Some(v.into_owned()),
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
    Ok(Handshake {
        biz,
        client,
        groups,
        token,
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
    }
}
