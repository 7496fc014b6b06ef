//! Routing: resolving sends into one Deliver per node that hosts a
//! recipient, handing each node its deliveries as one bus message, and
//! presence notices.
//!
//! One path for every send: a single send (the API's, or an edge's) is a
//! batch of one. A send to a group or a whole bizCode and a presence notice
//! fan out the same way ([`fan_out`]): one Deliver per hosting node, the
//! frame rendered once and shared, the origin's own connection left out
//! on its node. Nothing is allocated per recipient: a node's edge expands
//! a group or bizCode delivery locally.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use switchboard_protocol::envelope::{DeliverTo, NodeCommand, Order};
use switchboard_protocol::frame::{self, PresenceEvent, SendTarget};
use switchboard_protocol::subject::presence_key;
use switchboard_runtime::now_ms;

use super::Router;
use crate::config::NoticeScope;
use crate::error::RouterError;
use crate::index::Index;
use crate::outbound::{Origin, Outbound};
use crate::store::StoreError;

/// Most frame bytes in one batch of deliveries to a node (NATS' default
/// payload limit is 1 MiB).
const BATCH_BYTES: usize = 256 * 1024;

/// Bytes counted per delivery on top of its frame (its envelope fields).
const DELIVERY_OVERHEAD: usize = 64;

/// Whom a delivery to many reaches on each node it goes to.
#[derive(Debug, Clone, Copy)]
enum Audience<'a> {
    /// The members of a group.
    Group(&'a str),
    /// Every client of the bizCode.
    Biz,
}

impl<'a> Audience<'a> {
    /// The nodes hosting members of `biz`'s audience, how many members it
    /// has, and (for a group) its members; `None` if it has none.
    fn reach<'i>(self, ix: &'i Index, biz: &str) -> Option<Reach<'i>> {
        match self {
            Self::Group(g) => ix.group(biz, g).map(|g| Reach {
                nodes: &g.nodes,
                members: g.members.len(),
                group: Some(&g.members),
            }),
            Self::Biz => ix.biz_nodes(biz).map(|(nodes, members)| Reach {
                nodes,
                members,
                group: None,
            }),
        }
    }

    /// The group, for a presence notice.
    fn group(self) -> Option<&'a str> {
        match self {
            Self::Group(g) => Some(g),
            Self::Biz => None,
        }
    }

    /// The recipients on one node: the audience but `exclude`.
    fn on_node(self, biz: &str, exclude: Option<u64>) -> DeliverTo {
        match self {
            Self::Group(group) => DeliverTo::Group {
                biz: biz.to_owned(),
                group: group.to_owned(),
                exclude,
            },
            Self::Biz => DeliverTo::Biz {
                biz: biz.to_owned(),
                exclude,
            },
        }
    }
}

/// Where an audience is, as [`Audience::reach`] found it.
struct Reach<'i> {
    nodes: &'i HashMap<Arc<str>, u32>,
    members: usize,
    /// A group's members (`None` for a whole bizCode).
    group: Option<&'i HashSet<Arc<str>>>,
}

impl Reach<'_> {
    /// Whether the origin of a send is one of the members counted: its
    /// connection is the one the index holds for `client`, and (for a
    /// group) the client is a member.
    fn counts(&self, ix: &Index, biz: &str, client: &str, origin: Option<Origin<'_>>) -> bool {
        let Some(o) = origin else {
            return false;
        };
        self.group.is_none_or(|members| members.contains(client))
            && ix
                .get(biz, client)
                .is_some_and(|e| *e.node == *o.node && e.conn == o.conn)
    }
}

/// One Deliver of `frame` per node of `nodes`, to the audience there, the
/// origin's connection left out on its node.
#[allow(clippy::too_many_arguments)]
fn fan_out<'a>(
    nodes: &'a HashMap<Arc<str>, u32>,
    biz: &'a str,
    audience: Audience<'a>,
    origin: Option<Origin<'a>>,
    mode: u16,
    frame: &'a Bytes,
    seq: Option<u64>,
) -> impl Iterator<Item = (Arc<str>, NodeCommand)> + 'a {
    nodes.keys().map(move |node| {
        let to = audience.on_node(biz, Origin::exclude_on(origin, node));
        let cmd = NodeCommand::Deliver {
            mode,
            to,
            frame: frame.clone(),
            seq,
            order: None,
        };
        (node.clone(), cmd)
    })
}

/// Deliveries waiting to be handed to the bus: per node, in send order,
/// each with the index of the send it serves.
#[derive(Default)]
pub(super) struct Deliveries(HashMap<Arc<str>, Vec<(NodeCommand, usize)>>);

impl Deliveries {
    fn push(&mut self, node: Arc<str>, cmd: NodeCommand, send: usize) {
        self.0.entry(node).or_default().push((cmd, send));
    }

    /// Adds `other`'s deliveries after these, as serving send `send`.
    pub(super) fn absorb(&mut self, other: Deliveries, send: usize) {
        for (node, cmds) in other.0 {
            let mine = self.0.entry(node).or_default();
            mine.extend(cmds.into_iter().map(|(cmd, _)| (cmd, send)));
        }
    }

    /// Gives every delivery the [`Order`] `order` numbers it with for its
    /// node (a logged send's, in a cluster).
    pub(super) fn number(&mut self, mut order: impl FnMut(&Arc<str>) -> Option<Order>) {
        for (node, cmds) in &mut self.0 {
            for (cmd, _) in cmds {
                if let NodeCommand::Deliver { order: o, .. } = cmd {
                    *o = order(node);
                }
            }
        }
    }
}

/// The delivery frame of `send`, stamped now; with `seq` when it is an
/// entry of its bizCode's log.
pub(super) fn render(send: &Outbound<'_>, seq: Option<u64>) -> Bytes {
    Bytes::from(frame::logged_delivery(
        send.target,
        send.msg_id,
        send.from,
        send.content,
        now_ms(),
        send.ack,
        seq,
    ))
}

/// The delivery frame (mode 100) of a `send_to_clients`, stamped now.
pub(super) fn render_clients(msg_id: &str, from: &str, content: &str, ack: bool, seq: Option<u64>) -> Bytes {
    let target = SendTarget::Client(String::new());
    Bytes::from(frame::logged_delivery(
        &target,
        Some(msg_id),
        from,
        content,
        now_ms(),
        ack,
        seq,
    ))
}

/// Logs a failed presence lookup once, where it happened.
fn lookup_failed(e: StoreError) -> RouterError {
    tracing::warn!(error = %e, "presence lookup failed");
    e.into()
}

impl Router {
    /// Where a client is: the index, or the store when the index has not
    /// seen it yet (its watch may lag a connect handled by another router).
    pub(super) async fn locate(&self, biz: &str, client: &str) -> Result<Option<(Arc<str>, u64)>, StoreError> {
        if self.inner.index_live.load(std::sync::atomic::Ordering::Acquire) {
            if let Some(e) = self.inner.index.lock().get(biz, client) {
                return Ok(Some((e.node.clone(), e.conn)));
            }
        }
        let v = self.inner.store.get(&presence_key(biz, client)).await?;
        Ok(v.map(|v| (Arc::from(v.value.node.as_str()), v.value.conn)))
    }

    /// Routes sends: the deliveries for each node go out as one batch
    /// (split at [`BATCH_BYTES`]), in the order of the sends. Answers one
    /// result per send, in order: how many connections it was routed to,
    /// once every batch carrying its deliveries was handed to the bus.
    ///
    /// # Errors
    /// Per send: [`RouterError::Offline`] for a unicast target that is not
    /// online, [`RouterError::Store`] if the target could not be looked up,
    /// [`RouterError::Node`] if a batch could not be handed over.
    pub async fn route(&self, sends: &[Outbound<'_>]) -> Vec<Result<u32, RouterError>> {
        let started = Instant::now();
        let mut out = Deliveries::default();
        // Sends of history-on bizCodes are appended (pipelined) and
        // dispatched per partition, in its order (SPEC §7); `None`: route
        // as ever.
        let logged = self.route_logged(sends).await;
        let mut replies = Vec::with_capacity(sends.len());
        for (i, (send, logged)) in sends.iter().zip(logged).enumerate() {
            if let Some(reply) = logged {
                replies.push(reply);
                continue;
            }
            let frame = render(send, None);
            replies.push(self.plan(send, i, &mut out, &frame, None).await);
        }
        self.hand_over(out, &mut replies).await;
        let took = started.elapsed().as_secs_f64() / sends.len().max(1) as f64;
        for _ in sends {
            self.inner.metrics.route_duration.observe(took);
        }
        replies
    }

    /// Routes one send as if its bizCode had history off (no log, no
    /// `seq`): what a partition's owner does with a forwarded send of a
    /// bizCode whose history was just turned off.
    pub(super) async fn route_direct(&self, send: &Outbound<'_>) -> Result<u32, RouterError> {
        let frame = render(send, None);
        let mut out = Deliveries::default();
        let mut reply = [self.plan(send, 0, &mut out, &frame, None).await];
        self.hand_over(out, &mut reply).await;
        let [reply] = reply;
        reply
    }

    /// Routes one send: [`Router::route`] of a batch of one.
    ///
    /// # Errors
    /// As [`Router::route`].
    pub async fn route_one(&self, send: Outbound<'_>) -> Result<u32, RouterError> {
        // `route` answers every send, so there is exactly one answer.
        self.route(std::slice::from_ref(&send)).await.pop().unwrap_or(Ok(0))
    }

    /// Resolves send number `i`, rendered as `frame` (an entry at `seq`
    /// with history on), into deliveries added to `out`; returns how many
    /// connections it reaches.
    pub(super) async fn plan(
        &self,
        send: &Outbound<'_>,
        i: usize,
        out: &mut Deliveries,
        frame: &Bytes,
        seq: Option<u64>,
    ) -> Result<u32, RouterError> {
        let mode = send.target.mode();
        let audience = match send.target {
            SendTarget::Client(target) => {
                let located = self.locate(send.biz, target).await.map_err(lookup_failed)?;
                let (node, conn) = located.ok_or(RouterError::Offline)?;
                let to = DeliverTo::Conns(vec![conn]);
                out.push(
                    node,
                    NodeCommand::Deliver {
                        mode,
                        to,
                        frame: frame.clone(),
                        seq,
                        order: None,
                    },
                    i,
                );
                return Ok(1);
            }
            SendTarget::Group(group) => Audience::Group(group),
            SendTarget::Biz => Audience::Biz,
        };
        let ix = self.inner.index.lock();
        let Some(reach) = audience.reach(&ix, send.biz) else {
            return Ok(0);
        };
        let origin_counted = reach.counts(&ix, send.biz, send.from, send.origin);
        for (node, cmd) in fan_out(reach.nodes, send.biz, audience, send.origin, mode, frame, seq) {
            out.push(node, cmd, i);
        }
        Ok(u32::try_from(reach.members - usize::from(origin_counted)).unwrap_or(u32::MAX))
    }

    /// Hands each node its deliveries as one bus message (split at
    /// [`BATCH_BYTES`]; a lone delivery goes as itself). A send whose
    /// deliveries could not all be handed over is answered with the error.
    pub(super) async fn hand_over(&self, out: Deliveries, replies: &mut [Result<u32, RouterError>]) {
        for (node, mut cmds) in out.0 {
            if cmds.len() == 1 {
                // A lone delivery goes as itself, without batch bookkeeping.
                if let Some((cmd, i)) = cmds.pop() {
                    self.hand_to(&node, cmd, std::slice::from_ref(&i), replies).await;
                }
                continue;
            }
            let mut batch = Vec::new();
            let mut served = Vec::new();
            let mut bytes = 0;
            let mut cmds = cmds.into_iter().peekable();
            while let Some((cmd, i)) = cmds.next() {
                if let NodeCommand::Deliver { frame, .. } = &cmd {
                    bytes += frame.len() + DELIVERY_OVERHEAD;
                }
                batch.push(cmd);
                served.push(i);
                if bytes < BATCH_BYTES && cmds.peek().is_some() {
                    continue;
                }
                let cmd = match <[NodeCommand; 1]>::try_from(std::mem::take(&mut batch)) {
                    Ok([one]) => one,
                    Err(many) => NodeCommand::Batch(many),
                };
                self.hand_to(&node, cmd, &served, replies).await;
                served.clear();
                bytes = 0;
            }
        }
    }

    /// Hands `cmd` to `node`; on failure the sends it `served` are
    /// answered with the error.
    async fn hand_to(&self, node: &str, cmd: NodeCommand, served: &[usize], replies: &mut [Result<u32, RouterError>]) {
        if let Err(e) = self.inner.edges.send(node, cmd).await {
            tracing::warn!(node_id = %node, error = %e, "deliver failed");
            for &i in served {
                if let Some(reply) = replies.get_mut(i) {
                    *reply = Err(e.clone().into());
                }
            }
        }
    }

    /// Delivers one mode-100 frame to each online client of `clients`
    /// (one Deliver per node), with `"ack":true` when `ack` (the caller
    /// registered the receipt wait). Returns how many were online.
    ///
    /// # Errors
    /// [`RouterError::Store`] if a client could not be looked up,
    /// [`RouterError::Node`] if a delivery could not be handed over.
    pub async fn send_clients(
        &self,
        biz: &str,
        clients: &[String],
        from: &str,
        msg_id: &str,
        content: &str,
        ack: bool,
    ) -> Result<u32, RouterError> {
        let mut seen = HashSet::new();
        let clients: Vec<&str> = clients.iter().map(String::as_str).filter(|c| seen.insert(*c)).collect();
        if let Some(reply) = self
            .send_clients_logged(biz, &clients, from, msg_id, content, ack)
            .await
        {
            return reply;
        }
        let frame = render_clients(msg_id, from, content, ack, None);
        let (out, n) = self.clients_by_node(biz, &clients, &frame, None).await?;
        let mut reply = [Ok(n)];
        self.hand_over(out, &mut reply).await;
        let [reply] = reply;
        reply
    }

    /// One Deliver of `frame` per node hosting some of `clients` (distinct),
    /// and how many of them are online.
    pub(super) async fn clients_by_node(
        &self,
        biz: &str,
        clients: &[&str],
        frame: &Bytes,
        seq: Option<u64>,
    ) -> Result<(Deliveries, u32), RouterError> {
        let mut by_node: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
        for c in clients {
            if let Some((node, conn)) = self.locate(biz, c).await.map_err(lookup_failed)? {
                by_node.entry(node).or_default().push(conn);
            }
        }
        let mut out = Deliveries::default();
        let mut n = 0u32;
        for (node, conns) in by_node {
            n += u32::try_from(conns.len()).unwrap_or(u32::MAX);
            out.push(node, super::history::deliver_conns(conns, frame, seq), 0);
        }
        Ok((out, n))
    }

    /// Sends presence notices for `client` to the other members of each of
    /// `groups` (or of the bizCode), skipping audiences over the size
    /// limit; `origin` (the connection that came or went) is left out.
    pub(super) async fn notify<G: AsRef<str>>(
        &self,
        event: PresenceEvent,
        biz: &str,
        client: &str,
        groups: &[G],
        origin: Option<Origin<'_>>,
    ) {
        let limit = self.inner.config.notice_max_members;
        let mut sends: Vec<(Arc<str>, NodeCommand)> = Vec::new();
        {
            let ix = self.inner.index.lock();
            let mut notify = |audience: Audience<'_>| {
                let Some(reach) = audience.reach(&ix, biz) else {
                    return;
                };
                if reach.members > limit {
                    return;
                }
                let frame = Bytes::from(frame::presence_notice(event, client, audience.group()));
                sends.extend(fan_out(
                    reach.nodes,
                    biz,
                    audience,
                    origin,
                    frame::MODE_PRESENCE,
                    &frame,
                    None,
                ));
            };
            match self.inner.config.presence_notices {
                NoticeScope::Off => return,
                NoticeScope::Groups => groups.iter().for_each(|g| notify(Audience::Group(g.as_ref()))),
                NoticeScope::Biz => notify(Audience::Biz),
            }
        }
        for (node, cmd) in sends {
            let _ = self.inner.edges.send(&node, cmd).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_protocol::envelope::{self, Route};

    use super::*;
    use crate::core::testing::{info, router};

    /// A unicast from client `a` (node n1, conn 1) to `to`.
    fn send(to: &str, content: String) -> Route {
        Route {
            node: "n1".into(),
            conn: 1,
            biz: "b".into(),
            from: "a".into(),
            msg_id: None,
            target: SendTarget::Client(to.into()),
            content,
            ack_timeout_ms: 0,
        }
    }

    fn outbound(routes: &[Route]) -> Vec<Outbound<'_>> {
        routes.iter().map(Outbound::from).collect()
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
        let (router, edges, _) = router();
        for (node, id, client) in [("n1", 1, "a"), ("n2", 7, "x"), ("n2", 8, "y"), ("n3", 9, "z")] {
            router.connect(info(node, id, client)).await.expect("connect");
        }
        edges.sent.lock().clear();
        let routes = [
            send("x", "1".into()),
            send("nobody", "2".into()),
            send("z", "3".into()),
            send("y", "4".into()),
        ];
        let replies = router.route(&outbound(&routes)).await;
        assert!(
            matches!(replies[..], [Ok(1), Err(RouterError::Offline), Ok(1), Ok(1)]),
            "{replies:?}"
        );
        let mut sent = edges.sent.lock().clone();
        sent.sort_by(|a, b| a.0.cmp(&b.0));
        let per_node: Vec<(&str, Vec<u64>)> = sent.iter().map(|(n, c)| (n.as_str(), delivered_conns(c))).collect();
        assert_eq!(per_node, vec![("n2", vec![7, 8]), ("n3", vec![9])]);
        assert!(matches!(sent[0].1, NodeCommand::Batch(_)) && matches!(sent[1].1, NodeCommand::Deliver { .. }));
    }

    #[tokio::test]
    async fn a_large_batch_is_split_under_the_bus_payload_limit() {
        let (router, edges, _) = router();
        router.connect(info("n2", 7, "x")).await.expect("connect");
        edges.sent.lock().clear();
        let big = format!("\"{}\"", "x".repeat(60 * 1024));
        let routes: Vec<Route> = (0..20).map(|_| send("x", big.clone())).collect();
        let replies = router.route(&outbound(&routes)).await;
        assert!(replies.iter().all(|r| matches!(r, Ok(1))));
        let sent = edges.sent.lock().clone();
        assert!(sent.len() > 1, "20 × 60 KiB must not be one bus message");
        let total: usize = sent.iter().map(|(_, c)| delivered_conns(c).len()).sum();
        assert_eq!(total, 20);
        for (_, c) in &sent {
            let bytes = envelope::encode(c).map(|b| b.len()).unwrap_or(usize::MAX);
            assert!(bytes < 1024 * 1024, "{bytes} bytes");
        }
    }

    /// A group send fans out one Deliver per hosting node; a client's send
    /// leaves its own connection out (and does not count it), an API send
    /// (no origin) reaches and counts every member.
    #[tokio::test]
    async fn a_group_send_leaves_out_its_origin_only() {
        let (router, edges, _) = router();
        for (node, id, client) in [("n1", 1, "a"), ("n1", 2, "b"), ("n2", 3, "c")] {
            router.connect(info(node, id, client)).await.expect("connect");
        }
        let group = SendTarget::Group("g".into());
        let from_a = Outbound {
            origin: Some(Origin { node: "n1", conn: 1 }),
            biz: "b",
            from: "a",
            msg_id: None,
            target: &group,
            content: "1",
            ack: false,
        };
        for (send, recipients, excluded) in [(from_a, 2, Some(1)), (Outbound { origin: None, ..from_a }, 3, None)] {
            edges.sent.lock().clear();
            assert_eq!(router.route_one(send).await.expect("routed"), recipients);
            let mut sent: Vec<(String, Option<u64>)> = edges
                .sent
                .lock()
                .iter()
                .map(|(node, cmd)| match cmd {
                    NodeCommand::Deliver {
                        to: DeliverTo::Group { exclude, .. },
                        ..
                    } => (node.clone(), *exclude),
                    other => panic!("{other:?}"),
                })
                .collect();
            sent.sort();
            assert_eq!(sent, vec![("n1".to_owned(), excluded), ("n2".to_owned(), None)]);
        }
        // Not the origin's current connection (replaced meanwhile): counted.
        let stale = Outbound {
            origin: Some(Origin { node: "n1", conn: 9 }),
            ..from_a
        };
        assert_eq!(router.route_one(stale).await.expect("routed"), 3);
        let nobody = SendTarget::Group("none".into());
        let empty = Outbound {
            target: &nobody,
            ..from_a
        };
        assert_eq!(router.route_one(empty).await.expect("routed"), 0);
    }
}
