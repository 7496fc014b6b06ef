//! The `handshake_query` fuzz target: the handshake query parser over
//! arbitrary queries.

use switchboard_protocol::ids::{self, IdKind};

use crate::handshake;

/// The `handshake_query` target: [`handshake::parse`] over any query.
///
/// Input: byte 0 picks `max_groups` (0–65; the default is 64), the rest
/// is the query string (lossy UTF-8, as a URI's query is text).
///
/// # Panics
/// When an invariant breaks: what is accepted holds only valid ids
/// (SPEC §2), at most `max_groups` distinct groups, no empty bizCode or
/// clientId; the accepted handshake written back as a query parses to
/// itself; each accepted id round-trips through its subject encoding.
pub fn handshake_query(data: &[u8]) {
    let [groups, query @ ..] = data else {
        return;
    };
    let max_groups = usize::from(groups % 66);
    let query = String::from_utf8_lossy(query);
    let Ok(h) = handshake::parse(&query, max_groups) else {
        return;
    };
    for (kind, id) in [(IdKind::Biz, &h.biz), (IdKind::Client, &h.client)] {
        if let Some(id) = id {
            check_id(kind, id);
        }
    }
    assert!(
        h.groups.len() <= max_groups,
        "{} groups over {max_groups}",
        h.groups.len()
    );
    for (i, g) in h.groups.iter().enumerate() {
        check_id(IdKind::Group, g);
        assert!(!h.groups[..i].contains(g), "group {g} listed twice");
    }
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(b) = &h.biz {
        q.append_pair("bizCode", b);
    }
    if let Some(c) = &h.client {
        q.append_pair("clientId", c);
    }
    if !h.groups.is_empty() {
        q.append_pair("group", &h.groups.join(","));
    }
    if let Some(t) = &h.token {
        q.append_pair("token", t);
    }
    let written = q.finish();
    let again = handshake::parse(&written, max_groups).unwrap_or_else(|e| panic!("{written:?} refused: {e}"));
    assert_eq!(again, h, "{written:?} parsed to another handshake");
}

fn check_id(kind: IdKind, id: &str) {
    assert_eq!(
        ids::validate(kind, id),
        Ok(()),
        "accepted a bad {}: {id:?}",
        kind.field()
    );
    let token = ids::encode(id);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{token:?} is not subject-safe"
    );
    assert_eq!(ids::decode(&token).as_deref(), Some(id), "{id:?} does not round-trip");
}

/// Seeds for `handshake_query`: the seed URLs' queries and each way a
/// query can be refused.
pub fn handshake_query_seeds() -> Vec<Vec<u8>> {
    [
        "clientId=c1&bizCode=d1&token=456&group=g1",
        "bizCode=d1&group=g1,g2&clientId=c4&token=456",
        "systemId=d1&group=g1%2Cg1,,g2",
        "bizCode=d1&systemId=d1&groups=a&group=b",
        "bizCode=d1&systemId=d2",
        "bizCode=&clientId=",
        "bizCode=d%201",
        "bizCode=d1&clientId=*",
        "bizCode=d1&group=a,b>",
        "bizCode=d1&group=a,b,c,d,e,f,g,h",
        "bizCode=user%40example.com&clientId=x:y-z_1.2",
        "token=eyJhbGciOiJIUzI1NiJ9.e30.sig&bizCode=d1",
        "bizCode=d1&&=&x&clientId=%E2%82%AC",
        "bizCode=d1&clientId=cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
    ]
    .iter()
    .enumerate()
    .map(|(i, q)| {
        let groups: u8 = if i == 9 { 2 } else { 64 };
        [&[groups][..], q.as_bytes()].concat()
    })
    .collect()
}
