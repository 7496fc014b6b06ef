//! `standalone`'s seams: the router and the edge plugged together with
//! direct calls (no NATS, no emulation of it).

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use switchboard_edge::{Edge, LinkError, RouterLink};
use switchboard_protocol::envelope::{
    Ack, BizLimits, CommandReply, ConnInfo, ConnectedReply, Disconnect, NodeCommand, Resync, Route, RouteReply,
};
use switchboard_router::wire::{connected_reply, route_reply};
use switchboard_router::{EdgeError, EdgeLink, Router};

/// Edge → router, in process: answers as the router's NATS service does
/// ([`switchboard_router::wire`]).
pub(crate) struct LocalRouter(pub(crate) Router);

#[async_trait]
impl RouterLink for LocalRouter {
    async fn connect(&self, info: ConnInfo) -> Result<ConnectedReply, LinkError> {
        Ok(connected_reply(&self.0.connect(info).await))
    }
    async fn disconnect(&self, d: Disconnect) -> Result<(), LinkError> {
        let _ = self.0.disconnect(d).await;
        Ok(())
    }
    async fn route(&self, r: Route) -> Result<RouteReply, LinkError> {
        let replies = self.0.route_sends(std::slice::from_ref(&r)).await;
        Ok(replies
            .first()
            .map_or(RouteReply { code: 0, recipients: 0 }, route_reply))
    }
    async fn ack(&self, a: Ack) -> Result<(), LinkError> {
        self.0.ack(&a);
        Ok(())
    }
    async fn resync(&self, r: Resync) -> Result<u32, LinkError> {
        Ok(self.0.resync_counted(r).await.1)
    }
    async fn drain(&self, d: Resync) -> Result<(), LinkError> {
        let _ = self.0.drain(d).await;
        Ok(())
    }
    async fn is_registered(&self, biz: &str) -> Result<bool, LinkError> {
        self.0
            .is_registered(biz)
            .await
            .map_err(|e| LinkError::Unavailable(e.code().message().to_owned()))
    }
    async fn biz_limits(&self, bizs: Vec<String>) -> Result<Vec<BizLimits>, LinkError> {
        self.0
            .biz_limits(&bizs)
            .await
            .map_err(|e| LinkError::Unavailable(e.code().message().to_owned()))
    }
}

/// Router → edge, in process. The edge is set once it exists (the two
/// refer to each other).
#[derive(Default, Clone)]
pub(crate) struct LocalEdges {
    pub(crate) edge: Arc<OnceLock<Edge>>,
}

impl LocalEdges {
    fn edge(&self, node: &str) -> Result<&Edge, EdgeError> {
        self.edge
            .get()
            .filter(|e| e.node_id() == node)
            .ok_or_else(|| EdgeError(format!("unknown node {node}")))
    }
}

#[async_trait]
impl EdgeLink for LocalEdges {
    async fn send(&self, node: &str, cmd: NodeCommand) -> Result<(), EdgeError> {
        self.edge(node)?.handle_command(cmd);
        Ok(())
    }
    async fn request(&self, node: &str, cmd: NodeCommand) -> Result<CommandReply, EdgeError> {
        Ok(self
            .edge(node)?
            .handle_command(cmd)
            .unwrap_or(CommandReply { found: true }))
    }
}
