//! What the core is asked to route: one send, and the connection it came
//! from, if any.
//!
//! A client's send (an edge's [`Route`]) has an [`Origin`]: the sender's own
//! connection is left out of its group send or broadcast and is not counted
//! among the recipients. A send made through the HTTP API has none: every
//! member is a recipient. The fields borrow from what the caller decoded, so
//! routing a batch copies nothing but the delivery frame it renders.

use switchboard_protocol::envelope::Route;
use switchboard_protocol::frame::SendTarget;

/// The connection a send came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The sender's node.
    pub node: &'a str,
    /// The sender's connection on that node.
    pub conn: u64,
}

impl Origin<'_> {
    /// The connection to leave out of a delivery to `node`: the origin's,
    /// if it is on that node.
    pub(crate) fn exclude_on(origin: Option<Self>, node: &str) -> Option<u64> {
        origin.and_then(|o| (o.node == node).then_some(o.conn))
    }
}

/// One send to route.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// The sending connection; `None` for an API send.
    pub origin: Option<Origin<'a>>,
    /// The bizCode: the only one the send can reach.
    pub biz: &'a str,
    /// The delivery's `from`.
    pub from: &'a str,
    /// The delivery's `msgId`.
    pub msg_id: Option<&'a str>,
    /// Recipients.
    pub target: &'a SendTarget,
    /// `content` as JSON text.
    pub content: &'a str,
    /// The delivery asks its recipients to acknowledge it (`"ack":true`,
    /// delivery receipts); whoever routes it has registered the wait.
    pub ack: bool,
}

impl<'a> From<&'a Route> for Outbound<'a> {
    /// A client's send, from the connection the edge names.
    fn from(r: &'a Route) -> Self {
        Self {
            origin: Some(Origin {
                node: &r.node,
                conn: r.conn,
            }),
            biz: &r.biz,
            from: &r.from,
            msg_id: r.msg_id.as_deref(),
            target: &r.target,
            content: &r.content,
            ack: r.ack_timeout_ms > 0 && matches!(r.target, SendTarget::Client(_)),
        }
    }
}
