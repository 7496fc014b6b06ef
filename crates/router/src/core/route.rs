//! Routing: locating clients, resolving sends into one Deliver per node,
//! and presence notices.

use super::*;

/// Most frame bytes in one batch of deliveries to a node (NATS' default
/// payload limit is 1 MiB).
const BATCH_BYTES: usize = 256 * 1024;

/// A send resolved into deliveries.
struct Planned {
    mode: u16,
    frame: Bytes,
    plan: Vec<(Arc<str>, DeliverTo)>,
    recipients: u32,
}

impl Router {
    /// Where a client is: the index, or the store when the index has not
    /// seen it yet (its watch may lag a connect handled by another router).
    pub(super) async fn locate(&self, biz: &str, client: &str) -> Result<Option<(Arc<str>, u64)>, StoreError> {
        if let Some(e) = self.inner.index.lock().get(biz, client) {
            return Ok(Some((e.node.clone(), e.conn)));
        }
        let v = self.inner.store.get(&presence_key(biz, client)).await?;
        Ok(v.map(|v| (Arc::from(v.value.node.as_str()), v.value.conn)))
    }

    /// Resolves a client send into one Deliver per node that hosts a
    /// recipient (the delivery frame rendered once), or the reply refusing it.
    async fn plan(&self, r: &Route) -> Result<Planned, RouteReply> {
        let frame = Bytes::from(frame::delivery(
            &r.target,
            r.msg_id.as_deref(),
            &r.from,
            &r.content,
            now_ms(),
        ));
        let mode = r.target.mode();
        let plan: Vec<(Arc<str>, DeliverTo)>;
        let recipients: u32;
        match &r.target {
            SendTarget::Client(target) => match self.locate(&r.biz, target).await {
                Ok(Some((node, conn))) => {
                    plan = vec![(node, DeliverTo::Conns(vec![conn]))];
                    recipients = 1;
                }
                Ok(None) => {
                    return Err(RouteReply {
                        code: ErrorCode::Offline.as_u16(),
                        recipients: 0,
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "presence lookup failed");
                    return Err(RouteReply {
                        code: ErrorCode::Internal.as_u16(),
                        recipients: 0,
                    });
                }
            },
            SendTarget::Group(group) => {
                let ix = self.inner.index.lock();
                let (p, n) = match ix.group(&r.biz, group) {
                    Some(g) => {
                        let sender_in = ix.get(&r.biz, &r.from).is_some_and(|e| {
                            *e.node == *r.node && e.conn == r.conn && g.members.contains(r.from.as_str())
                        });
                        let p = g
                            .nodes
                            .keys()
                            .map(|node| {
                                let exclude = (**node == *r.node).then_some(r.conn);
                                (
                                    node.clone(),
                                    DeliverTo::Group {
                                        biz: r.biz.clone(),
                                        group: group.clone(),
                                        exclude,
                                    },
                                )
                            })
                            .collect();
                        (p, g.members.len() - usize::from(sender_in))
                    }
                    None => (Vec::new(), 0),
                };
                plan = p;
                recipients = u32::try_from(n).unwrap_or(u32::MAX);
            }
            SendTarget::Biz => {
                let ix = self.inner.index.lock();
                let (p, n) = match ix.biz_nodes(&r.biz) {
                    Some((nodes, total)) => {
                        let sender_in = ix
                            .get(&r.biz, &r.from)
                            .is_some_and(|e| *e.node == *r.node && e.conn == r.conn);
                        let p = nodes
                            .keys()
                            .map(|node| {
                                let exclude = (**node == *r.node).then_some(r.conn);
                                (
                                    node.clone(),
                                    DeliverTo::Biz {
                                        biz: r.biz.clone(),
                                        exclude,
                                    },
                                )
                            })
                            .collect();
                        (p, total - usize::from(sender_in))
                    }
                    None => (Vec::new(), 0),
                };
                plan = p;
                recipients = u32::try_from(n).unwrap_or(u32::MAX);
            }
        }
        Ok(Planned {
            mode,
            frame,
            plan,
            recipients,
        })
    }

    /// Routes a client send: one Deliver per node that hosts a recipient.
    /// Answered after the deliveries were handed to the bus.
    pub async fn route(&self, r: Route) -> RouteReply {
        let started = Instant::now();
        let p = match self.plan(&r).await {
            Ok(p) => p,
            Err(refused) => return refused,
        };
        for (node, to) in p.plan {
            let cmd = NodeCommand::Deliver {
                mode: p.mode,
                to,
                frame: p.frame.clone(),
            };
            if let Err(e) = self.inner.edges.send(&node, cmd).await {
                tracing::warn!(node_id = %node, error = %e, "deliver failed");
                return RouteReply {
                    code: ErrorCode::Internal.as_u16(),
                    recipients: 0,
                };
            }
        }
        self.inner
            .metrics
            .route_duration
            .observe(started.elapsed().as_secs_f64());
        RouteReply {
            code: 0,
            recipients: p.recipients,
        }
    }

    /// Routes several sends: the deliveries for each node go out as one
    /// batch (split at `BATCH_BYTES`), in the order of the sends. A send
    /// is answered 0 only if every batch carrying its deliveries was handed
    /// to the bus.
    pub async fn route_batch(&self, routes: Vec<Route>) -> Vec<RouteReply> {
        let started = Instant::now();
        let mut replies = Vec::with_capacity(routes.len());
        // node -> its deliveries, each with the index of the send it serves
        let mut per_node: HashMap<Arc<str>, Vec<(NodeCommand, usize)>> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            match self.plan(r).await {
                Ok(p) => {
                    for (node, to) in p.plan {
                        let cmd = NodeCommand::Deliver {
                            mode: p.mode,
                            to,
                            frame: p.frame.clone(),
                        };
                        per_node.entry(node).or_default().push((cmd, i));
                    }
                    replies.push(RouteReply {
                        code: 0,
                        recipients: p.recipients,
                    });
                }
                Err(refused) => replies.push(refused),
            }
        }
        for (node, cmds) in per_node {
            let mut batch = Vec::new();
            let mut served = Vec::new();
            let mut bytes = 0;
            let mut cmds = cmds.into_iter().peekable();
            while let Some((cmd, i)) = cmds.next() {
                if let NodeCommand::Deliver { frame, .. } = &cmd {
                    bytes += frame.len() + 64;
                }
                batch.push(cmd);
                served.push(i);
                if bytes >= BATCH_BYTES || cmds.peek().is_none() {
                    let cmd = match <[NodeCommand; 1]>::try_from(std::mem::take(&mut batch)) {
                        Ok([one]) => one,
                        Err(many) => NodeCommand::Batch(many),
                    };
                    if let Err(e) = self.inner.edges.send(&node, cmd).await {
                        tracing::warn!(node_id = %node, error = %e, "deliver failed");
                        for &i in &served {
                            replies[i] = RouteReply {
                                code: ErrorCode::Internal.as_u16(),
                                recipients: 0,
                            };
                        }
                    }
                    served.clear();
                    bytes = 0;
                }
            }
        }
        let took = started.elapsed().as_secs_f64() / routes.len().max(1) as f64;
        for _ in 0..routes.len() {
            self.inner.metrics.route_duration.observe(took);
        }
        replies
    }

    /// Delivers one mode-100 frame to each online client of `clients`
    /// (one Deliver per node). Returns how many were online.
    pub async fn send_clients(
        &self,
        biz: &str,
        clients: &[String],
        from: &str,
        msg_id: &str,
        content: &str,
    ) -> Result<u32, ErrorCode> {
        let mut by_node: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for c in clients {
            if !seen.insert(c.as_str()) {
                continue;
            }
            match self.locate(biz, c).await {
                Ok(Some((node, conn))) => by_node.entry(node).or_default().push(conn),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "presence lookup failed");
                    return Err(ErrorCode::Internal);
                }
            }
        }
        let target = SendTarget::Client(String::new());
        let frame = Bytes::from(frame::delivery(&target, Some(msg_id), from, content, now_ms()));
        let mut n = 0u32;
        for (node, conns) in by_node {
            n += u32::try_from(conns.len()).unwrap_or(u32::MAX);
            let cmd = NodeCommand::Deliver {
                mode: frame::MODE_UNICAST,
                to: DeliverTo::Conns(conns),
                frame: frame.clone(),
            };
            if let Err(e) = self.inner.edges.send(&node, cmd).await {
                tracing::warn!(node_id = %node, error = %e, "deliver failed");
                return Err(ErrorCode::Internal);
            }
        }
        Ok(n)
    }

    /// Sends presence notices for `client` to the other members of each of
    /// `groups` (or of the bizCode), skipping groups over the size limit.
    pub(super) async fn notify<G: AsRef<str>>(
        &self,
        event: PresenceEvent,
        biz: &str,
        client: &str,
        groups: &[G],
        skip: Option<(&str, u64)>,
    ) {
        let limit = self.inner.config.notice_max_members;
        let mut sends: Vec<(Arc<str>, NodeCommand)> = Vec::new();
        {
            let ix = self.inner.index.lock();
            let exclude_on = |node: &str| skip.and_then(|(n, c)| (n == node).then_some(c));
            match self.inner.config.presence_notices {
                NoticeScope::Off => return,
                NoticeScope::Groups => {
                    for g in groups.iter().map(AsRef::as_ref) {
                        let Some(group) = ix.group(biz, g) else {
                            continue;
                        };
                        if group.members.len() > limit {
                            continue;
                        }
                        let frame = Bytes::from(frame::presence_notice(event, client, Some(g)));
                        for node in group.nodes.keys() {
                            sends.push((
                                node.clone(),
                                NodeCommand::Deliver {
                                    mode: frame::MODE_PRESENCE,
                                    to: DeliverTo::Group {
                                        biz: biz.to_owned(),
                                        group: g.to_string(),
                                        exclude: exclude_on(node),
                                    },
                                    frame: frame.clone(),
                                },
                            ));
                        }
                    }
                }
                NoticeScope::Biz => {
                    if let Some((nodes, total)) = ix.biz_nodes(biz) {
                        if total <= limit {
                            let frame = Bytes::from(frame::presence_notice(event, client, None));
                            for node in nodes.keys() {
                                sends.push((
                                    node.clone(),
                                    NodeCommand::Deliver {
                                        mode: frame::MODE_PRESENCE,
                                        to: DeliverTo::Biz {
                                            biz: biz.to_owned(),
                                            exclude: exclude_on(node),
                                        },
                                        frame: frame.clone(),
                                    },
                                ));
                            }
                        }
                    }
                }
            }
        }
        for (node, cmd) in sends {
            let _ = self.inner.edges.send(&node, cmd).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::EdgeError;
    use crate::store::{MemoryRegistry, MemoryStore};
    use async_trait::async_trait;
    use switchboard_protocol::envelope::{self, CommandReply};

    /// Records what the router hands to each node.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, NodeCommand)>>);

    #[async_trait]
    impl EdgeLink for Recorded {
        async fn send(&self, node: &str, cmd: NodeCommand) -> Result<(), EdgeError> {
            self.0.lock().push((node.to_owned(), cmd));
            Ok(())
        }
        async fn request(&self, _node: &str, _cmd: NodeCommand) -> Result<CommandReply, EdgeError> {
            Ok(CommandReply { found: true })
        }
    }

    fn conn(node: &str, conn: u64, client: &str) -> ConnInfo {
        ConnInfo {
            node: node.into(),
            conn,
            biz: "b".into(),
            client: client.into(),
            groups: vec![],
        }
    }

    fn send(to: &str, content: String) -> Route {
        Route {
            node: "n1".into(),
            conn: 1,
            biz: "b".into(),
            from: "a".into(),
            msg_id: None,
            target: SendTarget::Client(to.into()),
            content,
        }
    }

    /// A router on an in-memory store whose commands to nodes are recorded.
    fn router_recording() -> (Router, Arc<Recorded>) {
        let edges = Arc::new(Recorded::default());
        let router = Router::new(
            RouterConfig::default(),
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryRegistry::default()),
            edges.clone(),
            Arc::new(Metrics::new()),
        );
        (router, edges)
    }

    fn delivered_conns(cmd: &NodeCommand) -> Vec<u64> {
        match cmd {
            NodeCommand::Deliver {
                to: DeliverTo::Conns(c),
                ..
            } => c.clone(),
            NodeCommand::Batch(cmds) => cmds.iter().flat_map(delivered_conns).collect(),
            _ => vec![],
        }
    }

    #[tokio::test]
    async fn a_batch_answers_in_order_and_sends_one_message_per_node() {
        let (router, edges) = router_recording();
        for (node, id, client) in [("n1", 1, "a"), ("n2", 7, "x"), ("n2", 8, "y"), ("n3", 9, "z")] {
            assert_eq!(router.connect(conn(node, id, client)).await.code, 0);
        }
        let replies = router
            .route_batch(vec![
                send("x", "1".into()),
                send("nobody", "2".into()),
                send("z", "3".into()),
                send("y", "4".into()),
            ])
            .await;
        let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
        assert_eq!(codes, vec![0, ErrorCode::Offline.as_u16(), 0, 0]);
        let mut sent = edges.0.lock().clone();
        sent.sort_by(|a, b| a.0.cmp(&b.0));
        let per_node: Vec<(&str, Vec<u64>)> = sent.iter().map(|(n, c)| (n.as_str(), delivered_conns(c))).collect();
        assert_eq!(per_node, vec![("n2", vec![7, 8]), ("n3", vec![9])]);
        assert!(matches!(sent[0].1, NodeCommand::Batch(_)) && matches!(sent[1].1, NodeCommand::Deliver { .. }));
    }

    #[tokio::test]
    async fn a_large_batch_is_split_under_the_bus_payload_limit() {
        let (router, edges) = router_recording();
        assert_eq!(router.connect(conn("n2", 7, "x")).await.code, 0);
        let big = format!("\"{}\"", "x".repeat(60 * 1024));
        let replies = router
            .route_batch((0..20).map(|_| send("x", big.clone())).collect())
            .await;
        assert!(replies.iter().all(|r| r.code == 0 && r.recipients == 1));
        let sent = edges.0.lock().clone();
        assert!(sent.len() > 1, "20 × 60 KiB must not be one bus message");
        let total: usize = sent.iter().map(|(_, c)| delivered_conns(c).len()).sum();
        assert_eq!(total, 20);
        for (_, c) in &sent {
            let bytes = envelope::encode(c).map(|b| b.len()).unwrap_or(usize::MAX);
            assert!(bytes < 1024 * 1024, "{bytes} bytes");
        }
    }
}
