//! Bus envelopes between edges and routers: msgpack (rmp-serde, named
//! fields so a newer peer's extra fields are ignored) behind a version byte.
//!
//! In `standalone` the same structs travel as plain Rust values.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::frame::SendTarget;

/// The envelope version this build writes and reads.
pub const VERSION: u8 = 1;

/// Why an envelope could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Empty payload.
    #[error("empty envelope")]
    Empty,
    /// A version this build does not speak.
    #[error("unsupported envelope version {0}")]
    Version(u8),
    /// Not msgpack of the expected shape.
    #[error("malformed envelope: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// Could not encode (a bug, not a peer's fault).
    #[error("cannot encode envelope: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Encodes a bus message: version byte, then msgpack.
///
/// # Errors
/// Only if serialization itself fails, which our types never do.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, EnvelopeError> {
    let mut buf = Vec::with_capacity(64);
    buf.push(VERSION);
    rmp_serde::encode::write_named(&mut buf, msg)?;
    Ok(Bytes::from(buf))
}

/// Decodes a bus message written by [`encode`].
///
/// # Errors
/// [`EnvelopeError`] for an empty payload, another version or bad msgpack.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, EnvelopeError> {
    let (&v, rest) = payload.split_first().ok_or(EnvelopeError::Empty)?;
    if v != VERSION {
        return Err(EnvelopeError::Version(v));
    }
    Ok(rmp_serde::from_slice(rest)?)
}

/// One connection's presence, as an edge reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnInfo {
    /// The node (edge process) holding the socket.
    pub node: String,
    /// The connection id, unique within the node.
    pub conn: u64,
    /// bizCode.
    pub biz: String,
    /// clientId.
    pub client: String,
    /// Groups the connection is in.
    pub groups: Vec<String>,
}

/// Answer to a connect, disconnect, resync or drain: 0 or an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectReply {
    /// 0 on success.
    pub code: u16,
    /// To a resync: how many of the listed connections the router had to
    /// write again (their entries were gone: the node had been purged
    /// while alive). Absent (0) from older routers and other answers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recreated: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Answer to a connect: 0 or an error code, and the groups bound to the
/// client (SPEC §7: bound groups belong to bizCode+clientId and come back
/// with every connection), which the edge adds before the welcome.
///
/// Reads as a [`ConnectReply`] for edges that predate it (named fields),
/// and a [`ConnectReply`] from an older router reads as this with no
/// groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectedReply {
    /// 0 on success.
    pub code: u16,
    /// Groups bound to the client by `bind_to_group`, restored now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// For a bizCode with history on (SPEC §7): where the connection joins
    /// its bizCode's log. Absent with history off, and from older routers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Joined>,
}

/// Where a connection joined its bizCode's log (SPEC §7, `docs/recovery.md`
/// seam 2): every entry after `seq` that is addressed to it is delivered
/// to it live.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// The bizCode's epoch (opaque; changes whenever its log was lost or
    /// reset).
    pub epoch: String,
    /// The highest stored `seq` the connection does not get live.
    pub seq: u64,
    /// The highest `seq` of the bizCode that may have left the log (by age,
    /// count, byte caps or `delete_history`): recovery from below it is
    /// incomplete.
    pub low_water: u64,
    /// The log's partition of the bizCode.
    pub partition: u32,
    /// The fencing token of the partition's owner that answered (0 in
    /// `standalone`): a message from a newer owner tells the edge that
    /// messages from this one may have been lost.
    #[serde(default)]
    pub token: u64,
}

/// Where a message from a partition's owner stands among those it sent
/// one node: `n` counts 1, 2, 3, … per (partition, token, node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The history partition.
    pub partition: u32,
    /// The owner's fencing token (its fence entry's `seq`): a higher one
    /// is a newer owner.
    pub token: u64,
    /// This message's number, or for a tick how many were sent so far.
    pub n: u64,
    /// A tick: nothing to deliver, `n` says how many messages came before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tick: bool,
}

/// A send of a history-on bizCode, forwarded to its partition's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedSend {
    /// The sending connection (node, conn); `None` for an API send.
    pub origin: Option<(String, u64)>,
    /// bizCode.
    pub biz: String,
    /// The delivery's `from`.
    pub from: String,
    /// The delivery's `msgId`.
    pub msg_id: Option<String>,
    /// Recipients.
    pub target: SendTarget,
    /// `content` as JSON text.
    pub content: String,
    /// The entry's `Nats-Msg-Id`, chosen by the router that forwards it,
    /// so that asking again (the owner's answer lost, a second subscriber
    /// answering "not the owner" first) stores it once: the log's
    /// duplicate window answers the first append. `None` from older
    /// routers: the owner picks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_id: Option<String>,
    /// The delivery asks its recipients for an acknowledgement
    /// (`"ack":true`, delivery receipts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ack: bool,
}

/// A question to a history partition's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartRequest {
    /// Log and dispatch these sends, in order.
    Sends(Vec<LoggedSend>),
    /// Log and dispatch one message to a list of clients
    /// (`send_to_clients`).
    Clients {
        /// bizCode.
        biz: String,
        /// The clients, distinct.
        clients: Vec<String>,
        /// The delivery's `from`.
        from: String,
        /// The delivery's `msgId`.
        msg_id: String,
        /// `content` as JSON text.
        content: String,
        /// The entry's `Nats-Msg-Id` (see [`LoggedSend::log_id`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_id: Option<String>,
        /// The delivery asks for acknowledgements (`"ack":true`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ack: bool,
    },
    /// Index this presence entry between two planned entries and answer
    /// where its connection joins the log (a connect, a bind, an unbind).
    Join {
        /// The entry.
        value: PresenceValue,
        /// Its store revision.
        revision: u64,
    },
    /// Turn history on or off for a bizCode.
    SetHistory {
        /// bizCode.
        biz: String,
        /// On or off.
        on: bool,
    },
    /// Empty a bizCode's log.
    DeleteHistory {
        /// bizCode.
        biz: String,
    },
}

/// A partition owner's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartReply {
    /// Per send (or for the one `Clients` send): code and recipients.
    Sent(Vec<RouteReply>),
    /// Where the connection joined (`None`: history off).
    Joined(Option<Joined>),
    /// Done; for `DeleteHistory` the new epoch and the log head.
    Done {
        /// The bizCode's epoch afterwards.
        epoch: String,
        /// The log head.
        seq: u64,
    },
    /// This router does not (or no longer) own the partition: ask again.
    NotOwner,
    /// Failed with this wire code.
    Failed(u16),
}

/// Whom a log entry is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryTo {
    /// One client (mode 100).
    Client(String),
    /// A list of clients (API `send_to_clients`, mode 100).
    Clients(Vec<String>),
    /// A group's members (mode 200).
    Group(String),
    /// Every client of the bizCode (mode 300).
    Biz,
}

/// One entry of a bizCode's log (SPEC §7): the delivery frame as clients
/// receive it (its `seq` included) and whom it is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Recipients.
    pub to: EntryTo,
    /// The sending client of a client's send (mode 100/200/300), which is
    /// left out of its own group sends and broadcasts; `None` for an API
    /// send, which is never excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The delivery frame, `seq` included.
    pub frame: Bytes,
}

impl LogEntry {
    /// The client-facing mode of the entry's deliveries.
    pub fn mode(&self) -> u16 {
        match self.to {
            EntryTo::Client(_) | EntryTo::Clients(_) => crate::frame::MODE_UNICAST,
            EntryTo::Group(_) => crate::frame::MODE_GROUP,
            EntryTo::Biz => crate::frame::MODE_BROADCAST,
        }
    }

    /// Whether the entry reaches client `client` when it is in the groups
    /// `in_group` says: its unicasts, its groups' sends and its bizCode's
    /// broadcasts, but not its own group sends and broadcasts.
    pub fn addressed_to(&self, client: &str, in_group: impl Fn(&str) -> bool) -> bool {
        let own = self.sender.as_deref() == Some(client);
        match &self.to {
            EntryTo::Client(c) => c == client,
            EntryTo::Clients(cs) => cs.iter().any(|c| c == client),
            EntryTo::Group(g) => !own && in_group(g),
            EntryTo::Biz => !own,
        }
    }
}

/// A connection went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    /// Node of the connection.
    pub node: String,
    /// Connection id.
    pub conn: u64,
    /// bizCode.
    pub biz: String,
    /// clientId.
    pub client: String,
}

/// A client send to be routed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Node of the sender.
    pub node: String,
    /// Sender's connection (excluded from group sends and broadcasts).
    pub conn: u64,
    /// Sender's bizCode: the only bizCode the send can reach.
    pub biz: String,
    /// Sender's clientId, the delivery's `from`.
    pub from: String,
    /// The client's `msgId`.
    pub msg_id: Option<String>,
    /// Recipients.
    pub target: SendTarget,
    /// `content` as JSON text.
    pub content: String,
    /// A unicast with `"ack":true`: how long (ms, at most
    /// [`MAX_ACK_TIMEOUT_MS`](crate::frame::MAX_ACK_TIMEOUT_MS)) the router
    /// waits for the recipient's acknowledgement before it sends the
    /// sender's connection its receipt (mode 4); 0: no receipt. Absent
    /// from older edges.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ack_timeout_ms: u32,
}

/// A client's acknowledgement of a delivery (mode 3), stamped by its edge
/// with the connection's authenticated bizCode and clientId (a client acks
/// only for itself). Published to every router (no queue group): whichever
/// router waits for it finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// bizCode of the acknowledging connection.
    pub biz: String,
    /// clientId of the acknowledging connection.
    pub client: String,
    /// The delivery's `msgId`.
    pub msg_id: String,
}

/// Answer to a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteReply {
    /// 0 or an error code.
    pub code: u16,
    /// Connections the message was routed to.
    pub recipients: u32,
}

/// Several routes from one node, answered by a [`RouteBatchReply`] with one
/// reply per route, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteBatch {
    /// The sends, in the order they were read.
    pub routes: Vec<Route>,
}

/// Answers to a [`RouteBatch`], in its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteBatchReply {
    /// One per route.
    pub replies: Vec<RouteReply>,
}

/// Everything a node holds, sent after a (re)connect to the bus or when a
/// router asks, in chunks; also the list a draining node leaves with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resync {
    /// The node.
    pub node: String,
    /// Its live connections (of this chunk).
    pub conns: Vec<ConnInfo>,
    /// The connection ids this chunk speaks for: the node held no other
    /// welcomed connection in this range when it built the chunk, so the
    /// router checks the node's other entries in the range with
    /// [`NodeCommand::Holds`] and removes those the node no longer holds.
    /// `None` (a drain, or an edge from before reconciling): nothing is
    /// reconciled and nothing is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers: Option<ConnRange>,
}

/// Connection ids `from..to` (end excluded) of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRange {
    /// First id in the range.
    pub from: u64,
    /// First id after the range.
    pub to: u64,
}

impl ConnRange {
    /// Every connection id.
    pub const ALL: Self = Self { from: 0, to: u64::MAX };

    /// Whether `conn` is in the range.
    pub fn contains(&self, conn: u64) -> bool {
        (self.from..self.to).contains(&conn)
    }
}

/// A question about one bizCode (registration check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BizQuery {
    /// bizCode.
    pub biz: String,
}

/// A bizCode's own limits on each edge (`set_limits`; the noisy-tenant
/// limits): 0 turns a limit off, and all are off by default. Every edge
/// applies them on its own: connections of the bizCode on that edge, and
/// one token bucket for all client sends of the bizCode on that edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BizLimits {
    /// Most WebSocket connections of the bizCode on one edge (429 past it).
    #[serde(default)]
    pub max_connections: u32,
    /// Client sends (modes 100/200/300) per second of the bizCode on one
    /// edge (1005 past it).
    #[serde(default)]
    pub sends_per_sec: u32,
    /// Sends allowed at once above the rate; 0: as many as one second's.
    #[serde(default)]
    pub sends_burst: u32,
}

impl BizLimits {
    /// Whether every limit is off.
    pub fn is_off(&self) -> bool {
        self.max_connections == 0 && self.sends_per_sec == 0
    }

    /// The burst of the sends bucket: `sends_burst`, or one second's sends.
    pub fn burst(&self) -> u32 {
        if self.sends_burst == 0 {
            self.sends_per_sec
        } else {
            self.sends_burst
        }
    }
}

/// Most bizCodes in one [`LimitsQuery`]; a router refuses a longer one
/// (1001).
pub const MAX_LIMITS_QUERY: usize = 512;

/// Edge → router: the limits of these bizCodes ([`BizLimits`]), at most
/// [`MAX_LIMITS_QUERY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsQuery {
    /// bizCodes.
    pub bizs: Vec<String>,
}

/// Answer to a [`LimitsQuery`]: 0 and one [`BizLimits`] per bizCode, in
/// its order, or an error code and none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsReply {
    /// 0 on success.
    pub code: u16,
    /// One per bizCode asked about.
    #[serde(default)]
    pub limits: Vec<BizLimits>,
}

/// Node liveness beacon, published to every router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node.
    pub node: String,
    /// Live connections on it (informational).
    pub conns: u64,
}

/// Which local connections of a node get a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliverTo {
    /// These connections.
    Conns(Vec<u64>),
    /// Every local member of (biz, group) except `exclude`.
    Group {
        /// bizCode.
        biz: String,
        /// group.
        group: String,
        /// The sender's connection, if it is on this node.
        exclude: Option<u64>,
    },
    /// Every local connection of biz except `exclude`.
    Biz {
        /// bizCode.
        biz: String,
        /// The sender's connection, if it is on this node.
        exclude: Option<u64>,
    },
}

/// Router → node commands, on the node's inbox subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeCommand {
    /// Write `frame` (rendered once by the router) to the recipients.
    Deliver {
        /// The client-facing mode, for metrics.
        mode: u16,
        /// Recipients on this node.
        to: DeliverTo,
        /// The JSON text frame.
        frame: Bytes,
        /// The entry's position in its bizCode's log (history on): a
        /// connection gets each `seq` once, in increasing order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// The message's place among those a partition's owner sent this
        /// node (history on, in a cluster): how a lost one is detected
        /// (`docs/recovery.md` seam 3). A tick is a Deliver to nobody
        /// carrying only this, which older edges take as a no-op.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order: Option<Order>,
    },
    /// Close one connection with a close code.
    Close {
        /// Connection id.
        conn: u64,
        /// Close code.
        code: u16,
    },
    /// Add a connection to a group (answered with [`CommandReply`]).
    Bind {
        /// Connection id.
        conn: u64,
        /// Group.
        group: String,
    },
    /// Remove a connection from a group (answered with [`CommandReply`]).
    Unbind {
        /// Connection id.
        conn: u64,
        /// Group.
        group: String,
    },
    /// Send a [`Resync`] now (the router purged this node while it lived,
    /// or holds entries of it that the node does not report).
    Resync,
    /// Which of these connections does the node still hold (in its
    /// registry, welcomed or registering)? Answered with [`HeldReply`].
    /// The router asks before it announces an entry a resync (re)created
    /// and before it removes an entry a resync did not list.
    Holds {
        /// Connection ids.
        conns: Vec<u64>,
    },
    /// Several commands, applied in order (deliveries of a route batch).
    Batch(Vec<NodeCommand>),
}

/// Answer to a node command that wants one: whether the connection existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    /// The connection was found and the command applied.
    pub found: bool,
}

/// Answer to [`NodeCommand::Holds`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldReply {
    /// The asked connections the node holds.
    pub held: Vec<u64>,
}

/// The value of a presence KV entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceValue {
    /// Node holding the connection.
    pub node: String,
    /// Connection id on that node.
    pub conn: u64,
    /// bizCode (also in the key, encoded).
    pub biz: String,
    /// clientId (also in the key, encoded).
    pub client: String,
    /// Groups: those of the `group=` query and the bound ones.
    pub groups: Vec<String>,
    /// Connected since, ms since the epoch.
    pub since: u64,
    /// Which of `groups` are bound to the client (`bind_to_group`) rather
    /// than named for this connection only; absent in entries written
    /// before durable membership.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_version() {
        let cmd = NodeCommand::Deliver {
            mode: 200,
            to: DeliverTo::Group {
                biz: "d1".into(),
                group: "g1".into(),
                exclude: Some(7),
            },
            frame: Bytes::from_static(br#"{"mode":200}"#),
            seq: Some(42),
            order: Some(Order {
                partition: 3,
                token: 7,
                n: 1,
                tick: false,
            }),
        };
        let bytes = encode(&cmd).expect("encode");
        assert_eq!(bytes[0], VERSION);
        let back: NodeCommand = decode(&bytes).expect("decode");
        assert_eq!(back, cmd);

        let mut wrong = bytes.to_vec();
        wrong[0] = 9;
        assert!(matches!(decode::<NodeCommand>(&wrong), Err(EnvelopeError::Version(9))));
        assert!(matches!(decode::<NodeCommand>(&[]), Err(EnvelopeError::Empty)));
        assert!(decode::<NodeCommand>(&[VERSION, 0xc1]).is_err());
    }

    /// A resync from an edge without `covers` still decodes, and one with
    /// it decodes on a router that ignores it.
    #[test]
    fn resync_covers_is_optional_both_ways() {
        #[derive(Serialize, Deserialize)]
        struct OldResync {
            node: String,
            conns: Vec<ConnInfo>,
        }
        let old = encode(&OldResync {
            node: "n".into(),
            conns: vec![],
        })
        .expect("encode");
        let r: Resync = decode(&old).expect("decode old");
        assert_eq!(r.covers, None);
        let new = Resync {
            node: "n".into(),
            conns: vec![],
            covers: Some(ConnRange { from: 3, to: 9 }),
        };
        let back: OldResync = decode(&encode(&new).expect("encode")).expect("decode new as old");
        assert_eq!(back.node, "n");
        assert_eq!(
            decode::<Resync>(&encode(&new).expect("encode")).expect("round trip"),
            new
        );
        assert!(ConnRange { from: 3, to: 9 }.contains(3) && !ConnRange { from: 3, to: 9 }.contains(9));
    }

    /// Delivery receipts add optional fields only: an older peer's route
    /// and logged send read as "no receipt", and without one the bytes are
    /// what they were (the golden test below).
    #[test]
    fn receipt_fields_are_optional_both_ways() {
        #[derive(Serialize, Deserialize)]
        struct OldLoggedSend {
            origin: Option<(String, u64)>,
            biz: String,
            from: String,
            msg_id: Option<String>,
            target: SendTarget,
            content: String,
        }
        let old = OldLoggedSend {
            origin: None,
            biz: "d1".into(),
            from: "".into(),
            msg_id: Some("m".into()),
            target: SendTarget::Client("c".into()),
            content: "1".into(),
        };
        let new: LoggedSend = decode(&encode(&old).expect("encode")).expect("decode old");
        assert!(!new.ack);
        let asking = LoggedSend { ack: true, ..new };
        let back: OldLoggedSend = decode(&encode(&asking).expect("encode")).expect("an old owner decodes it");
        assert_eq!(back.msg_id.as_deref(), Some("m"));
        assert_eq!(
            decode::<LoggedSend>(&encode(&asking).expect("encode")).expect("round trip"),
            asking
        );
        let ack = Ack {
            biz: "d1".into(),
            client: "c".into(),
            msg_id: "m".into(),
        };
        assert_eq!(decode::<Ack>(&encode(&ack).expect("encode")).expect("round trip"), ack);
    }

    /// Golden: a format change shows up as a diff here.
    #[test]
    fn route_golden_bytes() {
        let r = Route {
            node: "n".into(),
            conn: 1,
            biz: "d1".into(),
            from: "c1".into(),
            msg_id: Some("m".into()),
            target: SendTarget::Client("c2".into()),
            content: "1".into(),
            ack_timeout_ms: 0,
        };
        let bytes = encode(&r).expect("encode");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "0187a46e6f6465a16ea4636f6e6e01a362697aa26431a466726f6da26331a66d73675f6964a16da6746172676574\
             81a6436c69656e74a26332a7636f6e74656e74a131"
        );
    }
}

/// The rolling upgrade `docs/recovery.md` promises (routers first): what a
/// new router sends, an edge of the previous release decodes. Its types
/// are copied here as they were before issue 12.
#[cfg(test)]
mod previous_release {
    use bytes::Bytes;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    enum OldDeliverTo {
        Conns(Vec<u64>),
        Group {
            biz: String,
            group: String,
            exclude: Option<u64>,
        },
        Biz {
            biz: String,
            exclude: Option<u64>,
        },
    }

    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    enum OldNodeCommand {
        Deliver { mode: u16, to: OldDeliverTo, frame: Bytes },
        Close { conn: u64, code: u16 },
        Bind { conn: u64, group: String },
        Unbind { conn: u64, group: String },
        Resync,
        Holds { conns: Vec<u64> },
        Batch(Vec<OldNodeCommand>),
    }

    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct OldConnectedReply {
        code: u16,
        #[serde(default)]
        groups: Vec<String>,
    }

    #[test]
    fn an_edge_of_the_previous_release_decodes_what_a_new_router_sends() {
        let order = |tick| {
            Some(Order {
                partition: 6,
                token: 99,
                n: 4,
                tick,
            })
        };
        // A logged delivery, a tick (a delivery to nobody) and both in a batch.
        let logged = NodeCommand::Deliver {
            mode: 200,
            to: DeliverTo::Group {
                biz: "d1".into(),
                group: "g".into(),
                exclude: None,
            },
            frame: Bytes::from_static(br#"{"mode":200,"seq":7}"#),
            seq: Some(7),
            order: order(false),
        };
        let tick = NodeCommand::Deliver {
            mode: 0,
            to: DeliverTo::Conns(Vec::new()),
            frame: Bytes::new(),
            seq: None,
            order: order(true),
        };
        let batch = NodeCommand::Batch(vec![logged.clone(), tick.clone()]);
        let old: OldNodeCommand = decode(&encode(&batch).expect("encode")).expect("an old edge decodes a new batch");
        let OldNodeCommand::Batch(cmds) = old else {
            panic!("{old:?}")
        };
        assert!(
            matches!(&cmds[0], OldNodeCommand::Deliver { mode: 200, frame, .. } if frame.as_ref() == br#"{"mode":200,"seq":7}"#)
        );
        // The tick is a delivery to nobody: a no-op for an old edge.
        assert!(matches!(&cmds[1], OldNodeCommand::Deliver { to: OldDeliverTo::Conns(c), .. } if c.is_empty()));

        // The connect reply's join is an optional field an old edge skips.
        let reply = ConnectedReply {
            code: 0,
            groups: vec!["room".into()],
            history: Some(Joined {
                epoch: "e".into(),
                seq: 5,
                low_water: 0,
                partition: 6,
                token: 99,
            }),
        };
        let old: OldConnectedReply = decode(&encode(&reply).expect("encode")).expect("old reply");
        assert_eq!(
            old,
            OldConnectedReply {
                code: 0,
                groups: vec!["room".into()]
            }
        );

        // And the reverse (an old router's reply, a new edge): no join.
        let from_old = encode(&OldConnectedReply {
            code: 0,
            groups: vec![],
        })
        .expect("encode");
        assert_eq!(decode::<ConnectedReply>(&from_old).expect("new reply").history, None);
        let old_deliver = encode(&OldNodeCommand::Deliver {
            mode: 100,
            to: OldDeliverTo::Conns(vec![1]),
            frame: Bytes::from_static(b"{}"),
        })
        .expect("encode");
        assert!(matches!(
            decode::<NodeCommand>(&old_deliver).expect("new command"),
            NodeCommand::Deliver {
                seq: None,
                order: None,
                ..
            }
        ));
    }
}
