//! The router → edge seam, and router → partition owner
//! ([`OwnerLink`]). Over NATS: publish/request on the node's inbox
//! subject ([`crate::nats::NatsEdges`]); in `standalone`: direct calls into
//! the local edge.

use async_trait::async_trait;
use switchboard_protocol::envelope::{CommandReply, NodeCommand, PartReply, PartRequest};

/// Why a node could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("node unreachable: {0}")]
pub struct EdgeError(pub String);

/// What a router asks of edge nodes.
#[async_trait]
pub trait EdgeLink: Send + Sync + 'static {
    /// Fire-and-forget: deliveries, closes, resync requests. Commands to one
    /// node are applied in the order they were sent.
    async fn send(&self, node: &str, cmd: NodeCommand) -> Result<(), EdgeError>;
    /// A command with an answer (bind/unbind/close).
    async fn request(&self, node: &str, cmd: NodeCommand) -> Result<CommandReply, EdgeError>;
    /// Which of `conns` the node still holds ([`NodeCommand::Holds`]). A
    /// link that cannot ask answers an error, and the router then neither
    /// announces nor removes on the strength of it.
    async fn holds(&self, node: &str, conns: Vec<u64>) -> Result<Vec<u64>, EdgeError> {
        let _ = conns;
        Err(EdgeError(format!("cannot ask node {node} which connections it holds")))
    }

    /// Whether this router's own link carries a round trip right now. A
    /// link that went silent (a partition, not a close) looks up until the
    /// client's pings time out; meanwhile every node looks silent to it,
    /// and purging them would be wrong. Links that cannot go silent (in
    /// process) always answer.
    async fn round_trip(&self) -> bool {
        true
    }
}

/// Router → the router that owns a history partition (SPEC §7). Over NATS:
/// a request on `sb.part.<p>` ([`crate::nats::NatsOwners`]); `standalone`
/// owns every partition and has none.
#[async_trait]
pub trait OwnerLink: Send + Sync + 'static {
    /// Asks partition `p`'s owner, waiting (within the link's patience) while
    /// no router owns it, as during a handover.
    async fn ask(&self, p: u32, req: &PartRequest) -> Result<PartReply, EdgeError>;
}
