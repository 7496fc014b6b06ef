//! The node inbox's commands: what a router asks of this edge (deliver,
//! close, bind, unbind, batches of those, and which connections it still
//! holds). The transport is elsewhere: the NATS subscriber in
//! `nats`, or direct calls in `standalone`.
//!
//! A close code arrives as a number (the bus format); it becomes a
//! [`CloseCode`] here, at the edge of the crate, and a number that is not
//! one of ours is refused with a log line.

use switchboard_protocol::envelope::{CommandReply, DeliverTo, HeldReply, NodeCommand};
use switchboard_protocol::{frame, CloseCode};

use crate::edge::Edge;
use crate::outbox;
use crate::registry::Dirty;

impl Edge {
    /// Applies a router command. Bind/Unbind/Close answer whether the
    /// connection was found; Deliver answers nothing and writes at once.
    pub fn handle_command(&self, cmd: NodeCommand) -> Option<CommandReply> {
        let mut dirty = Dirty::default();
        let reply = self.handle_command_deferred(cmd, &mut dirty);
        dirty.flush();
        reply
    }

    /// Like [`handle_command`](Self::handle_command), but a delivery only
    /// queues: the connections to write are added to `dirty`, which the
    /// caller flushes after a batch of commands, so frames for the same
    /// connection share one write.
    ///
    /// A Close with a code that is not a [`CloseCode`] closes nothing and
    /// answers "not found".
    pub fn handle_command_deferred(&self, cmd: NodeCommand, dirty: &mut Dirty) -> Option<CommandReply> {
        let inner = self.inner();
        match cmd {
            NodeCommand::Deliver {
                mode,
                to,
                frame,
                seq,
                order,
            } => {
                if let Some(o) = order {
                    if !inner.check_order(o) || o.tick {
                        return None;
                    }
                }
                if mode == frame::MODE_RECEIPT {
                    if let DeliverTo::Conns(conns) = &to {
                        for c in conns.iter().filter_map(|&id| inner.registry().get(id)) {
                            c.receipts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
                let framed = outbox::text_frame(&frame);
                let d = inner
                    .registry()
                    .deliver(&to, &framed, seq, inner.config().send_queue_bytes, dirty);
                let metrics = inner.metrics();
                metrics.deliveries.inc_by(d.queued);
                metrics.slow_consumer_closes.inc_by(d.overflowed);
                metrics.frames_sent.get(mode).inc_by(d.queued);
                None
            }
            NodeCommand::Close { conn, code } => {
                let Some(code) = CloseCode::from_u16(code) else {
                    tracing::warn!(conn_id = conn, code, "close with an unknown close code refused");
                    return Some(CommandReply { found: false });
                };
                let found = inner
                    .registry()
                    .get(conn)
                    .map(|c| c.close_after_welcome(code))
                    .is_some();
                Some(CommandReply { found })
            }
            NodeCommand::Bind { conn, group } => Some(CommandReply {
                found: inner.registry().bind(conn, &group),
            }),
            NodeCommand::Unbind { conn, group } => Some(CommandReply {
                found: inner.registry().unbind(conn, &group),
            }),
            // Resync and Holds need the bus; the NATS inbox handles them.
            NodeCommand::Resync | NodeCommand::Holds { .. } => None,
            NodeCommand::Batch(cmds) => {
                for cmd in cmds {
                    self.handle_command_deferred(cmd, dirty);
                }
                None
            }
        }
    }

    /// Answers a router's `Holds`: which of `conns` are still here.
    pub(crate) fn holds(&self, conns: Vec<u64>) -> HeldReply {
        let registry = self.inner().registry();
        HeldReply {
            held: conns.into_iter().filter(|&id| registry.get(id).is_some()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use bytes::Bytes;
    use switchboard_protocol::envelope::{ConnInfo, ConnectedReply, Disconnect, Resync, Route, RouteReply};
    use switchboard_runtime::metrics::Metrics;
    use switchboard_runtime::ops::Health;

    use super::*;
    use crate::config::EdgeConfig;
    use crate::link::{LinkError, RouterLink};
    use crate::outbox::Out;
    use crate::registry::Conn;

    /// A router that never answers (the inbox does not ask it).
    struct NoRouter;

    #[async_trait]
    impl RouterLink for NoRouter {
        async fn connect(&self, _: ConnInfo) -> Result<ConnectedReply, LinkError> {
            Err(LinkError::Unavailable("none".into()))
        }
        async fn disconnect(&self, _: Disconnect) -> Result<(), LinkError> {
            Err(LinkError::Unavailable("none".into()))
        }
        async fn route(&self, _: Route) -> Result<RouteReply, LinkError> {
            Err(LinkError::Unavailable("none".into()))
        }
        async fn resync(&self, _: Resync) -> Result<u32, LinkError> {
            Err(LinkError::Unavailable("none".into()))
        }
        async fn drain(&self, _: Resync) -> Result<(), LinkError> {
            Err(LinkError::Unavailable("none".into()))
        }
        async fn is_registered(&self, _: &str) -> Result<bool, LinkError> {
            Err(LinkError::Unavailable("none".into()))
        }
    }

    #[test]
    fn close_takes_our_codes_and_refuses_others() {
        let edge = Edge::new(
            EdgeConfig::default(),
            "n1".into(),
            Arc::new(NoRouter),
            None,
            Arc::new(Metrics::new()),
            Arc::new(Health::default()),
        );
        let conn = Arc::new(Conn::new(7, "d1", "c1", &[], 0));
        edge.inner().registry().insert(conn.clone());
        conn.activate(Bytes::from_static(b"welcome"), 1 << 20);
        conn.outbox.take();

        let unknown = NodeCommand::Close { conn: 7, code: 1234 };
        assert_eq!(edge.handle_command(unknown), Some(CommandReply { found: false }));
        assert!(!conn.outbox.is_closing(), "an unknown code closes nothing");

        let api = NodeCommand::Close {
            conn: 7,
            code: CloseCode::ClosedByApi.as_u16(),
        };
        assert_eq!(edge.handle_command(api), Some(CommandReply { found: true }));
        let q: Vec<_> = conn.outbox.take().expect("close queued").into_iter().collect();
        assert_eq!(q, vec![Out::Close(CloseCode::ClosedByApi)]);

        let gone = NodeCommand::Close {
            conn: 8,
            code: CloseCode::ClosedByApi.as_u16(),
        };
        assert_eq!(edge.handle_command(gone), Some(CommandReply { found: false }));
    }
}
