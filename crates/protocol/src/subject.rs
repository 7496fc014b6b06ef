//! NATS subjects and KV keys. Built here, never by `format!` at call sites;
//! every token that comes from user input goes through [`ids::encode`].

use crate::event::EventKind;
use crate::ids;

/// Queue group shared by all routers.
pub const ROUTER_QUEUE: &str = "sb-router";
/// Edge → router: a connection came up (request/reply, queue group).
pub const ROUTER_CONNECT: &str = "sb.router.connect";
/// Edge → router: a connection went away (request/reply, queue group).
pub const ROUTER_DISCONNECT: &str = "sb.router.disconnect";
/// Edge → router: client sends, a [`RouteBatch`](crate::envelope::RouteBatch)
/// answered in order (request/reply, queue group); a single send is a batch
/// of one. Edges batch what queued up while the previous request was being
/// written, so under load one bus message carries many sends.
pub const ROUTER_ROUTE_BATCH: &str = "sb.router.route_batch";
/// Edge → router: all of a node's connections (request/reply, queue group).
pub const ROUTER_RESYNC: &str = "sb.router.resync";
/// Edge → router: a draining node's connections leave presence at once
/// (request/reply, queue group).
pub const ROUTER_DRAIN: &str = "sb.router.drain";
/// Edge → router: is this bizCode registered? (request/reply, queue group).
pub const ROUTER_CHECK_BIZ: &str = "sb.router.check_biz";
/// Edge → router: the limits of some bizCodes
/// ([`LimitsQuery`](crate::envelope::LimitsQuery); request/reply, queue
/// group). Edges ask when a bizCode is new to them and again every
/// `edge.biz_limits_refresh` for the bizCodes they serve.
pub const ROUTER_BIZ_LIMITS: &str = "sb.router.biz_limits";
/// Edge → every router: node heartbeat (plain publish, no queue group).
pub const ROUTER_HEARTBEAT: &str = "sb.router.heartbeat";
/// Edge → every router: a client's acknowledgement of a delivery
/// ([`Ack`](crate::envelope::Ack); plain publish, no queue group): the
/// router waiting for it may be any of them.
pub const ROUTER_ACK: &str = "sb.router.ack";

/// Router → the router that owns history partition `p` (request/reply,
/// only the owner subscribes): logged sends, joins and history changes
/// (SPEC §7, `docs/recovery.md` seams 1 and 2).
pub fn partition_owner(p: u32) -> String {
    format!("sb.part.{p}")
}

/// Prefix of the reply subjects of an edge's requests (its NATS inbox):
/// NATS permissions let edges subscribe here and not to routers' replies.
pub const EDGE_INBOX_PREFIX: &str = "_INBOX.sb-edge";
/// Prefix of the reply subjects of a router's requests and JetStream
/// consumers.
pub const ROUTER_INBOX_PREFIX: &str = "_INBOX.sb-router";

/// Whether `reply` is in an edge's inbox: the only place a router
/// answers. NATS does not check a request's reply subject against the
/// requester's permissions, so answering anywhere else would let whoever
/// may send a router a request make it write where only routers may.
pub fn is_edge_reply(reply: &str) -> bool {
    reply
        .strip_prefix(EDGE_INBOX_PREFIX)
        .is_some_and(|r| r.starts_with('.'))
}

/// Whether `reply` is in a router's inbox: the only place an edge answers.
pub fn is_router_reply(reply: &str) -> bool {
    reply
        .strip_prefix(ROUTER_INBOX_PREFIX)
        .is_some_and(|r| r.starts_with('.'))
}

/// The JetStream stream of connection events (README "Connection events").
pub const EVENTS_STREAM: &str = "sb-events";
/// Every subject of [`EVENTS_STREAM`]: `sb.events.<b64(biz)>.<kind>`.
pub const EVENTS_ALL: &str = "sb.events.>";

/// The subject of one event: `sb.events.<b64(biz)>.<kind>`.
pub fn event(biz: &str, kind: EventKind) -> String {
    let mut s = events_prefix(biz);
    s.push_str(kind.as_str());
    s
}

/// A filter for every event of one bizCode: `sb.events.<b64(biz)>.>`
/// (what a per-bizCode consumer or subscriber uses).
pub fn events_of_biz(biz: &str) -> String {
    let mut s = events_prefix(biz);
    s.push('>');
    s
}

fn events_prefix(biz: &str) -> String {
    let mut s = String::from("sb.events.");
    s.push_str(&ids::encode(biz));
    s.push('.');
    s
}

/// Splits an event subject back into (bizCode, kind).
pub fn parse_event(subject: &str) -> Option<(String, EventKind)> {
    let rest = subject.strip_prefix("sb.events.")?;
    let (b, k) = rest.split_once('.')?;
    Some((ids::decode(b)?, EventKind::parse(k)?))
}

/// The inbox subject of one edge node.
pub fn node_inbox(node_id: &str) -> String {
    let mut s = String::from("sb.node.");
    s.push_str(&ids::encode(node_id));
    s
}

/// The presence KV key of one client: `<b64(biz)>.<b64(client)>`.
pub fn presence_key(biz: &str, client: &str) -> String {
    let mut s = ids::encode(biz);
    s.push('.');
    s.push_str(&ids::encode(client));
    s
}

/// Splits a presence key back into (bizCode, clientId).
pub fn parse_presence_key(key: &str) -> Option<(String, String)> {
    let (b, c) = key.split_once('.')?;
    Some((ids::decode(b)?, ids::decode(c)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crafted_ids_cannot_form_wildcards_or_cross_keys() {
        let k = presence_key("d1", "c1.x");
        assert_eq!(k.matches('.').count(), 1);
        assert_eq!(parse_presence_key(&k), Some(("d1".to_owned(), "c1.x".to_owned())));
        assert_ne!(presence_key("d1.c1", "x"), presence_key("d1", "c1.x"));
        let s = node_inbox("edge.*.>");
        assert!(!s["sb.node.".len()..].contains(['.', '*', '>']));
    }

    #[test]
    fn event_subjects_are_one_token_per_id() {
        let s = event("d1.>", EventKind::Upstream);
        assert_eq!(s.matches('.').count(), 3);
        assert!(s.ends_with(".upstream"));
        assert_eq!(parse_event(&s), Some(("d1.>".to_owned(), EventKind::Upstream)));
        assert_eq!(events_of_biz("d1"), format!("sb.events.{}.>", ids::encode("d1")));
        assert_eq!(parse_event("sb.events.x.nope"), None);
    }
}
