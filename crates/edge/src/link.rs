//! The edge → router seam. Over NATS it is request/reply on `sb.router.*`
//! with a queue group (`nats::NatsRouter`); in `standalone` the
//! binary implements it with direct calls into the router.

use async_trait::async_trait;
use switchboard_protocol::envelope::{Ack, BizLimits, ConnInfo, ConnectedReply, Disconnect, Resync, Route, RouteReply};

/// Why the router could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// No router answered in time or the bus is down.
    #[error("router unavailable: {0}")]
    Unavailable(String),
    /// The answer could not be decoded.
    #[error("bad answer from router: {0}")]
    BadAnswer(String),
}

/// What an edge asks of the routers.
///
/// Calls for one connection are made in order and each awaits its answer,
/// so sends of one sender are routed in order.
#[async_trait]
pub trait RouterLink: Send + Sync + 'static {
    /// Registers presence; answered after the entry is written, with the
    /// groups bound to the client (to add before the welcome).
    async fn connect(&self, info: ConnInfo) -> Result<ConnectedReply, LinkError>;
    /// Removes presence if it is still this connection's (idempotent).
    async fn disconnect(&self, d: Disconnect) -> Result<(), LinkError>;
    /// Routes one client send; answered after the deliveries were handed on.
    async fn route(&self, r: Route) -> Result<RouteReply, LinkError>;
    /// Re-asserts presence of the listed connections (idempotent); answers
    /// how many the router had to write again (their entries were gone).
    async fn resync(&self, r: Resync) -> Result<u32, LinkError>;
    /// Removes the listed connections of a draining node from presence now
    /// (each only if it is still that connection's; idempotent).
    async fn drain(&self, d: Resync) -> Result<(), LinkError>;
    /// Whether a bizCode is registered (asked only where registration is
    /// required).
    async fn is_registered(&self, biz: &str) -> Result<bool, LinkError>;
    /// The limits of each of `bizs` (at most
    /// [`MAX_LIMITS_QUERY`](switchboard_protocol::envelope::MAX_LIMITS_QUERY)),
    /// in order. A link that cannot ask answers an error, and the edge then
    /// keeps what it knew (fails open).
    async fn biz_limits(&self, bizs: Vec<String>) -> Result<Vec<BizLimits>, LinkError> {
        let _ = bizs;
        Err(LinkError::Unavailable("this link cannot ask for limits".into()))
    }
    /// Hands a client's ack (mode 3), stamped with its connection's
    /// bizCode and clientId, to every router (fire and forget: no answer;
    /// the router waiting for it completes the receipt). A link that
    /// cannot answers an error and the ack is lost (the receipt then says
    /// `unacked`).
    async fn ack(&self, a: Ack) -> Result<(), LinkError> {
        let _ = a;
        Err(LinkError::Unavailable("this link cannot forward acks".into()))
    }
}
