//! Connection events for backends (issue 15, README "Connection events"):
//! what edges and routers publish to the JetStream stream
//! [`subject::EVENTS_STREAM`](crate::subject::EVENTS_STREAM) on
//! [`subject::event`](crate::subject::event) and what webhooks carry.
//!
//! One JSON object per event. Every event has `id` (unique; the dedupe key,
//! also the JetStream `Nats-Msg-Id`), `kind`, `bizCode`, `clientId`, `node`
//! (the process that observed it) and `ts` (ms since the Unix epoch); the
//! other fields depend on the kind and are left out when they do not apply.
//! Readers ignore fields they do not know (new ones may be added) and an
//! unknown `cause` reads as [`Cause::Other`]. The schema is
//! `docs/events.schema.json`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A connection was registered (before its welcome). Fields: `connId`,
    /// `groups` (its `group=` list and restored bound groups).
    Connected,
    /// A connection ended. Fields: `connId`, `code` (close code), `reason`,
    /// `cause`.
    Disconnected,
    /// The clientId's first connection: it had none before (a replacement
    /// is not an online). Fields: `connId`, `edge`.
    Online,
    /// The clientId's last connection is gone (a replacement is not an
    /// offline). Fields: `connId`, `edge`, `cause` when known.
    Offline,
    /// The API bound the client to a group (`bind_to_group`). Field:
    /// `group`.
    Bound,
    /// The API unbound the client from a group (`unbind_from_group`).
    /// Field: `group`.
    Unbound,
    /// The client sent a mode-500 frame. Fields: `connId`, `msgId`,
    /// `content`.
    Upstream,
}

impl EventKind {
    /// Every kind, in the order of a client's life.
    pub const ALL: [EventKind; 7] = [
        Self::Connected,
        Self::Online,
        Self::Bound,
        Self::Upstream,
        Self::Unbound,
        Self::Disconnected,
        Self::Offline,
    ];

    /// The name used in JSON and as the last subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Bound => "bound",
            Self::Unbound => "unbound",
            Self::Upstream => "upstream",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Why a connection ended (`disconnected.cause`, `offline.cause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The client closed (close frame or end of stream).
    Close,
    /// Its edge died; a router purged its connections (no close code
    /// reached the client: `code` 1006).
    CrashPurge,
    /// Its edge drained (1012).
    Drain,
    /// A newer connection with the same bizCode+clientId replaced it (4009).
    Replaced,
    /// The API closed it (`close_client`, 4000).
    ApiClose,
    /// No frame from the client for 3 × heartbeatSec (1001).
    IdleTimeout,
    /// Its token expired (4001).
    TokenExpired,
    /// Its send queue overflowed (4008).
    SlowConsumer,
    /// It broke the protocol (1002, 1007, 1009) or kept abusing the rate
    /// limit (1008).
    ProtocolError,
    /// The gateway closed it for another reason (presence could not be
    /// registered 1013, a recovery close 1012, a socket error).
    Error,
    /// A cause this reader does not know (added later).
    #[serde(other)]
    Other,
}

impl Cause {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Close => "close",
            Self::CrashPurge => "crash_purge",
            Self::Drain => "drain",
            Self::Replaced => "replaced",
            Self::ApiClose => "api_close",
            Self::IdleTimeout => "idle_timeout",
            Self::TokenExpired => "token_expired",
            Self::SlowConsumer => "slow_consumer",
            Self::ProtocolError => "protocol_error",
            Self::Error => "error",
            Self::Other => "other",
        }
    }
}

/// One connection event. Build it with [`Event::new`] and the `with_*`
/// setters; the JSON shape is the contract (README "Connection events").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (the dedupe key and JetStream `Nats-Msg-Id`).
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// The tenant.
    #[serde(rename = "bizCode")]
    pub biz: String,
    /// The client.
    #[serde(rename = "clientId")]
    pub client: String,
    /// The node id of the process that observed it (an edge, or a router
    /// for `online`/`offline`/`bound`/`unbound` and crash purges).
    pub node: String,
    /// When it was observed, ms since the Unix epoch.
    pub ts: u64,
    /// The connection's id (unique per connection on its edge).
    #[serde(rename = "connId", default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
    /// The edge that holds (or held) the connection, for events a router
    /// observed (`online`, `offline`, crash-purge `disconnected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<String>,
    /// `connected`: the connection's groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// `disconnected`: the WebSocket close code (1006 when none was sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// `disconnected`: the close reason (may be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `disconnected` (and `offline` when known): why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// `bound` / `unbound`: the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `upstream`: the client's `msgId`.
    #[serde(rename = "msgId", default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// `upstream`: the client's `content`, exactly as it sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Box<RawValue>>,
}

impl Event {
    /// An event with the common fields; `id` must be unique (the runtime
    /// makes UUIDv7s) and `ts` is ms since the Unix epoch.
    pub fn new(id: String, kind: EventKind, biz: &str, client: &str, node: &str, ts: u64) -> Self {
        Self {
            id,
            kind,
            biz: biz.to_owned(),
            client: client.to_owned(),
            node: node.to_owned(),
            ts,
            conn: None,
            edge: None,
            groups: None,
            code: None,
            reason: None,
            cause: None,
            group: None,
            msg_id: None,
            content: None,
        }
    }

    /// Sets `connId`.
    pub fn with_conn(mut self, conn: u64) -> Self {
        self.conn = Some(conn);
        self
    }

    /// Sets `edge`.
    pub fn with_edge(mut self, edge: &str) -> Self {
        self.edge = Some(edge.to_owned());
        self
    }

    /// Sets `groups`.
    pub fn with_groups(mut self, groups: Vec<String>) -> Self {
        self.groups = Some(groups);
        self
    }

    /// Sets `code`, `reason` and `cause`.
    pub fn with_close(mut self, code: u16, reason: &str, cause: Cause) -> Self {
        self.code = Some(code);
        self.reason = Some(reason.to_owned());
        self.cause = Some(cause);
        self
    }

    /// Sets `cause` alone (`offline`).
    pub fn with_cause(mut self, cause: Cause) -> Self {
        self.cause = Some(cause);
        self
    }

    /// Sets `group`.
    pub fn with_group(mut self, group: &str) -> Self {
        self.group = Some(group.to_owned());
        self
    }

    /// Sets `msgId` and `content` (JSON text, kept as is).
    ///
    /// # Errors
    /// When `content` is not one JSON value.
    pub fn with_upstream(mut self, msg_id: Option<String>, content: &str) -> Result<Self, serde_json::Error> {
        self.msg_id = msg_id;
        self.content = Some(RawValue::from_string(content.to_owned())?);
        Ok(self)
    }

    /// The event as JSON bytes (what the stream and webhooks carry).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and a valid RawValue cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an event; unknown fields are ignored.
    ///
    /// # Errors
    /// When `bytes` is not an event.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The subject this event is published on.
    pub fn subject(&self) -> String {
        crate::subject::event(&self.biz, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_causes_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        let c: Cause = serde_json::from_str("\"crash_purge\"").unwrap_or(Cause::Other);
        assert_eq!(c, Cause::CrashPurge);
        let c: Cause = serde_json::from_str("\"meteor\"").unwrap_or(Cause::Close);
        assert_eq!(c, Cause::Other);
        assert_eq!(Cause::SlowConsumer.as_str(), "slow_consumer");
    }

    #[test]
    fn json_shape_is_the_contract() {
        let e = Event::new("01".into(), EventKind::Disconnected, "d1", "c1", "edge-1", 7)
            .with_conn(3)
            .with_close(4009, "replaced", Cause::Replaced);
        let text = String::from_utf8(e.to_json()).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"id":"01","kind":"disconnected","bizCode":"d1","clientId":"c1","node":"edge-1","ts":7,"connId":3,"code":4009,"reason":"replaced","cause":"replaced"}"#
        );
        let up = Event::new("02".into(), EventKind::Upstream, "d1", "c1", "edge-1", 8)
            .with_upstream(Some("m1".into()), r#"{"a": [1, 2]}"#)
            .ok();
        let text = up.map(|e| String::from_utf8(e.to_json()).unwrap_or_default());
        assert_eq!(
            text.as_deref(),
            Some(
                r#"{"id":"02","kind":"upstream","bizCode":"d1","clientId":"c1","node":"edge-1","ts":8,"msgId":"m1","content":{"a": [1, 2]}}"#
            )
        );
    }

    #[test]
    fn readers_ignore_unknown_fields() {
        let e = Event::from_json(
            br#"{"id":"x","kind":"bound","bizCode":"d1","clientId":"c1","node":"r1","ts":1,"group":"g","future":{"x":1}}"#,
        );
        let e = e.ok();
        assert_eq!(e.as_ref().map(|e| e.kind), Some(EventKind::Bound));
        assert_eq!(e.and_then(|e| e.group).as_deref(), Some("g"));
        assert!(Event::new("a".into(), EventKind::Bound, "d1", "c", "n", 0)
            .with_upstream(None, "{not json")
            .is_err());
    }
}
