//! Routing: locating clients, resolving sends into one Deliver per node,
//! and presence notices.

use super::*;

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

    /// Routes a client send: renders the delivery once and sends one
    /// Deliver per node that hosts a recipient. Answered after the
    /// deliveries were handed to the bus.
    pub async fn route(&self, r: Route) -> RouteReply {
        let started = Instant::now();
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
                    return RouteReply {
                        code: ErrorCode::Offline.as_u16(),
                        recipients: 0,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "presence lookup failed");
                    return RouteReply {
                        code: ErrorCode::Internal.as_u16(),
                        recipients: 0,
                    };
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
        for (node, to) in plan {
            let cmd = NodeCommand::Deliver {
                mode,
                to,
                frame: frame.clone(),
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
        RouteReply { code: 0, recipients }
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
