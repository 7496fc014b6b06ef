//! The router → edge seam. Over NATS: publish/request on the node's inbox
//! subject ([`crate::nats::NatsEdges`]); in `standalone`: direct calls into
//! the local edge.

use async_trait::async_trait;
use switchboard_protocol::envelope::{CommandReply, NodeCommand};

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
}
