//! Client frames (SPEC §2 "Frames"): parsing what clients send, rendering
//! what the gateway sends. Rendering happens once per message; the bytes are
//! then shared by every recipient.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::codes::ErrorCode;

/// Heartbeat.
pub const MODE_HEARTBEAT: u16 = 1;
/// Reply to a client send.
pub const MODE_REPLY: u16 = 2;
/// Welcome.
pub const MODE_WELCOME: u16 = 0;
/// Unicast.
pub const MODE_UNICAST: u16 = 100;
/// Multicast to a group.
pub const MODE_GROUP: u16 = 200;
/// Broadcast to a bizCode.
pub const MODE_BROADCAST: u16 = 300;
/// Presence notice.
pub const MODE_PRESENCE: u16 = 400;
/// A client's acknowledgement of a delivery that asked for one
/// (`"ack":true`): `{"mode":3,"msgId":..}`.
pub const MODE_ACK: u16 = 3;
/// A delivery receipt to the sender of a client send with `"ack":true`:
/// `{"mode":4,"msgId":..,"acked":[..],"unacked":[..]}`.
pub const MODE_RECEIPT: u16 = 4;

/// Longest delivery receipt wait (ms) a send may ask for: the API's
/// `ackTimeoutMs` and the edge's `edge.ack_timeout` are at most this.
pub const MAX_ACK_TIMEOUT_MS: u32 = 30_000;
/// Upstream message: a client tells its backend (an `upstream` event).
pub const MODE_UPSTREAM: u16 = 500;
/// Deepest nesting of an upstream message's `content` (arrays and
/// objects): the event reaches a backend's own JSON parser (Python's
/// `json` gives up near 1,000 levels, `serde_json` at 128 with the batch
/// around the event), and one event it cannot read would hold back the
/// whole batch, other clients' events with it.
pub const MAX_CONTENT_DEPTH: usize = 64;

/// A parsed client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Mode 1.
    Heartbeat {
        /// Echoed in the reply.
        msg_id: Option<String>,
    },
    /// Mode 100, 200 or 300.
    Send(Send),
    /// Mode 3: the client acknowledges the delivery with this `msgId`.
    Ack {
        /// The delivery's `msgId`.
        msg_id: String,
    },
    /// Mode 500: a message for the backend, stored as an `upstream`
    /// connection event.
    Upstream(Upstream),
}

/// A client's message to its backend (mode 500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The client's message id, echoed in the reply and the event.
    pub msg_id: Option<String>,
    /// The `content` JSON text, exactly as the client sent it.
    pub content: String,
}

/// A client send (mode 100/200/300).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The client's message id, echoed in the reply and the delivery.
    pub msg_id: Option<String>,
    /// Who should get it.
    pub target: SendTarget,
    /// The `content` JSON text, exactly as the client sent it.
    pub content: String,
    /// `"ack": true` on a unicast (mode 100): the sender wants a delivery
    /// receipt (mode 4) once the recipient acknowledged it or the edge's
    /// ack timeout passed. Always `false` for modes 200 and 300.
    pub ack: bool,
}

/// The recipients of a send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SendTarget {
    /// Mode 100: one client of the same bizCode.
    Client(String),
    /// Mode 200: a group of the same bizCode.
    Group(String),
    /// Mode 300: every client of the same bizCode.
    Biz,
}

impl SendTarget {
    /// The delivery mode for this target.
    pub fn mode(&self) -> u16 {
        match self {
            Self::Client(_) => MODE_UNICAST,
            Self::Group(_) => MODE_GROUP,
            Self::Biz => MODE_BROADCAST,
        }
    }
}

/// A frame that could not be accepted; becomes a mode-2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// 1001 or 1002.
    pub code: ErrorCode,
    /// The `msgId`, when it could be read.
    pub msg_id: Option<String>,
    /// What was wrong, for the reply's `msg`.
    pub detail: &'static str,
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(borrow)]
    mode: Option<&'a RawValue>,
    #[serde(borrow, rename = "msgId")]
    msg_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "targetClientId")]
    target: Option<&'a RawValue>,
    #[serde(borrow)]
    group: Option<&'a RawValue>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    ack: Option<&'a RawValue>,
}

/// Parses one client text frame.
///
/// # Errors
/// [`FrameError`] with code 1001 (not a JSON object, missing or wrong-typed
/// field) or 1002 (unknown mode), carrying the `msgId` when it was readable.
pub fn parse_client_frame(text: &[u8]) -> Result<ClientFrame, FrameError> {
    let invalid = |msg_id, detail| FrameError {
        code: ErrorCode::InvalidFrame,
        msg_id,
        detail,
    };
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(invalid(None, "frame is not a JSON object"));
    }
    let raw: RawFrame<'_> = serde_json::from_slice(text).map_err(|_| invalid(None, "frame is not valid JSON"))?;
    let msg_id = match raw.msg_id {
        None => None,
        Some(v) => match parse_msg_id(v) {
            Some(id) => id,
            None => return Err(invalid(None, "msgId must be a string or a number")),
        },
    };
    let Some(mode) = raw.mode else {
        return Err(invalid(msg_id, "mode is missing"));
    };
    let Ok(mode) = serde_json::from_str::<i64>(mode.get()) else {
        return Err(invalid(msg_id, "mode must be an integer"));
    };
    let target = match mode {
        1 => return Ok(ClientFrame::Heartbeat { msg_id }),
        3 => {
            return match msg_id {
                Some(msg_id) => Ok(ClientFrame::Ack { msg_id }),
                None => Err(invalid(None, "msgId is missing")),
            }
        }
        100 => match raw.target.map(|v| serde_json::from_str::<String>(v.get())) {
            Some(Ok(t)) => SendTarget::Client(t),
            Some(Err(_)) => return Err(invalid(msg_id, "targetClientId must be a string")),
            None => return Err(invalid(msg_id, "targetClientId is missing")),
        },
        200 => match raw.group.map(|v| serde_json::from_str::<String>(v.get())) {
            Some(Ok(g)) => SendTarget::Group(g),
            Some(Err(_)) => return Err(invalid(msg_id, "group must be a string")),
            None => return Err(invalid(msg_id, "group is missing")),
        },
        300 => SendTarget::Biz,
        500 => {
            let Some(content) = raw.content else {
                return Err(invalid(msg_id, "content is missing"));
            };
            if nesting(content.get()) > MAX_CONTENT_DEPTH {
                return Err(invalid(msg_id, "content is nested too deeply"));
            }
            return Ok(ClientFrame::Upstream(Upstream {
                msg_id,
                content: content.get().to_owned(),
            }));
        }
        _ => {
            return Err(FrameError {
                code: ErrorCode::UnknownMode,
                msg_id,
                detail: "unknown mode",
            })
        }
    };
    let Some(content) = raw.content else {
        return Err(invalid(msg_id, "content is missing"));
    };
    let ack = match raw.ack.map(|v| v.get()) {
        None | Some("false" | "null") => false,
        Some("true") => true,
        Some(_) => return Err(invalid(msg_id, "ack must be a boolean")),
    };
    // A receipt is for a unicast only; on a group send or broadcast the
    // flag is ignored.
    let ack = ack && matches!(target, SendTarget::Client(_));
    if ack && msg_id.is_none() {
        return Err(invalid(None, "a send with ack needs a msgId"));
    }
    Ok(ClientFrame::Send(Send {
        msg_id,
        ack,
        target,
        content: content.get().to_owned(),
    }))
}

/// How deep arrays and objects nest in `json` (valid JSON text), without
/// recursion: brackets inside strings do not count.
fn nesting(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// `msgId` is a string, or a number kept as its text. `Some(None)` for null.
fn parse_msg_id(v: &RawValue) -> Option<Option<String>> {
    let text = v.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).ok().map(Some),
        Some(b'-' | b'0'..=b'9') => Some(Some(text.to_owned())),
        Some(b'n') => Some(None),
        _ => None,
    }
}

/// Small JSON writer for gateway frames: no intermediate `Value`, one buffer.
struct Out(Vec<u8>);

impl Out {
    fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }
    fn raw(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn num(&mut self, n: u64) -> &mut Self {
        self.raw(&n.to_string())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        // serde_json escapes correctly; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.0, s);
        self
    }
    fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }
    fn done(self) -> Vec<u8> {
        self.0
    }
}

/// What the welcome says about the log (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WelcomeLog<'a> {
    /// The bizCode's epoch and the position every later entry addressed
    /// to the connection reaches it from (for a recovered connection:
    /// where it recovered from); `None` with history off.
    pub position: Option<(&'a str, u64)>,
    /// Whether the recovery the client asked for is complete; `None` when
    /// it asked for none.
    pub recovered: Option<bool>,
}

/// The welcome frame (mode 0), always the first a client receives; with
/// history on it carries `epoch` and `seq`, and `recovered` when the
/// client asked to recover.
pub fn welcome(
    client: &str,
    biz: &str,
    groups: &[String],
    node: &str,
    heartbeat_sec: u64,
    log: WelcomeLog<'_>,
) -> Vec<u8> {
    let mut o = Out::with_capacity(200);
    o.raw(r#"{"mode":0,"code":0,"msg":"success","data":{"clientId":"#)
        .str(client)
        .raw(r#","bizCode":"#)
        .str(biz)
        .raw(r#","groups":["#);
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            o.raw(",");
        }
        o.str(g);
    }
    o.raw(r#"],"node":"#)
        .str(node)
        .raw(r#","heartbeatSec":"#)
        .num(heartbeat_sec);
    if let Some((epoch, seq)) = log.position {
        o.raw(r#","epoch":"#).str(epoch).raw(r#","seq":"#).num(seq);
    }
    if let Some(r) = log.recovered {
        o.raw(if r {
            r#","recovered":true"#
        } else {
            r#","recovered":false"#
        });
    }
    o.raw("}}");
    o.done()
}

/// The heartbeat reply (mode 1).
pub fn heartbeat_reply(msg_id: Option<&str>, ts_ms: u64) -> Vec<u8> {
    let mut o = Out::with_capacity(64);
    o.raw(r#"{"mode":1,"msgId":"#)
        .opt_str(msg_id)
        .raw(r#","ts":"#)
        .num(ts_ms)
        .raw("}");
    o.done()
}

/// A mode-2 reply. On success `recipients` is `Some(n)` and becomes
/// `data: {"recipients": n}`; on failure `data` is null.
pub fn reply(msg_id: Option<&str>, code: ErrorCode, msg: &str, recipients: Option<u32>) -> Vec<u8> {
    let mut o = Out::with_capacity(96);
    o.raw(r#"{"mode":2,"msgId":"#)
        .opt_str(msg_id)
        .raw(r#","code":"#)
        .num(u64::from(code.as_u16()))
        .raw(r#","msg":"#)
        .str(msg)
        .raw(r#","data":"#);
    match recipients {
        Some(n) => {
            o.raw(r#"{"recipients":"#).num(u64::from(n)).raw("}");
        }
        None => {
            o.raw("null");
        }
    }
    o.raw("}");
    o.done()
}

/// A delivery (mode 100/200/300). `content` is JSON text, spliced in as is.
pub fn delivery(target: &SendTarget, msg_id: Option<&str>, from: &str, content: &str, ts_ms: u64) -> Vec<u8> {
    logged_delivery(target, msg_id, from, content, ts_ms, false, None)
}

/// A delivery that is an entry of its bizCode's log: [`delivery`] with
/// `"ack":true` after `ts` when the sender wants a receipt (the recipient
/// answers with a mode-3 frame), and `"seq"` last (SPEC §7) when `seq` is
/// `Some`.
pub fn logged_delivery(
    target: &SendTarget,
    msg_id: Option<&str>,
    from: &str,
    content: &str,
    ts_ms: u64,
    ack: bool,
    seq: Option<u64>,
) -> Vec<u8> {
    let mut o = Out::with_capacity(100 + content.len());
    o.raw(r#"{"mode":"#)
        .num(u64::from(target.mode()))
        .raw(r#","msgId":"#)
        .opt_str(msg_id)
        .raw(r#","from":"#)
        .str(from);
    if let SendTarget::Group(g) = target {
        o.raw(r#","group":"#).str(g);
    }
    o.raw(r#","content":"#).raw(content).raw(r#","ts":"#).num(ts_ms);
    if ack {
        o.raw(r#","ack":true"#);
    }
    if let Some(seq) = seq {
        o.raw(r#","seq":"#).num(seq);
    }
    o.raw("}");
    o.done()
}

/// An upstream message (mode 500) as a client writes it: what
/// [`parse_client_frame`] reads back. `content` is JSON text, spliced in
/// as is.
pub fn client_upstream(up: &Upstream) -> Vec<u8> {
    let mut o = Out::with_capacity(48 + up.content.len());
    o.raw(r#"{"mode":500,"msgId":"#)
        .opt_str(up.msg_id.as_deref())
        .raw(r#","content":"#)
        .raw(&up.content)
        .raw("}");
    o.done()
}

/// A client send (mode 100/200/300) as a client writes it: what
/// [`parse_client_frame`] reads back. The gateway never sends it; client
/// tools (the load generator) use it so they speak the protocol this crate
/// parses. `content` is JSON text, spliced in as is.
pub fn client_send(send: &Send) -> Vec<u8> {
    let mut o = Out::with_capacity(64 + send.content.len());
    o.raw(r#"{"mode":"#)
        .num(u64::from(send.target.mode()))
        .raw(r#","msgId":"#)
        .opt_str(send.msg_id.as_deref());
    match &send.target {
        SendTarget::Client(c) => {
            o.raw(r#","targetClientId":"#).str(c);
        }
        SendTarget::Group(g) => {
            o.raw(r#","group":"#).str(g);
        }
        SendTarget::Biz => {}
    }
    o.raw(r#","content":"#).raw(&send.content);
    if send.ack {
        o.raw(r#","ack":true"#);
    }
    o.raw("}");
    o.done()
}

/// A client's acknowledgement (mode 3) as a client writes it: what
/// [`parse_client_frame`] reads back as [`ClientFrame::Ack`]. The gateway
/// never sends it; client tools use it.
pub fn client_ack(msg_id: &str) -> Vec<u8> {
    let mut o = Out::with_capacity(32 + msg_id.len());
    o.raw(r#"{"mode":3,"msgId":"#).str(msg_id).raw("}");
    o.done()
}

/// A delivery receipt (mode 4) to the sender of a client send with
/// `"ack":true`: which recipients acknowledged the delivery in time and
/// which did not.
pub fn receipt<A: AsRef<str>, U: AsRef<str>>(msg_id: &str, acked: &[A], unacked: &[U]) -> Vec<u8> {
    fn list<S: AsRef<str>>(o: &mut Out, ids: &[S]) {
        o.raw("[");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                o.raw(",");
            }
            o.str(id.as_ref());
        }
        o.raw("]");
    }
    let mut o = Out::with_capacity(64 + msg_id.len());
    o.raw(r#"{"mode":4,"msgId":"#).str(msg_id).raw(r#","acked":"#);
    list(&mut o, acked);
    o.raw(r#","unacked":"#);
    list(&mut o, unacked);
    o.raw("}");
    o.done()
}

/// Presence event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    /// The client came online.
    Online,
    /// The client went offline.
    Offline,
}

/// A presence notice (mode 400). `group` is `None` for bizCode-wide notices.
pub fn presence_notice(event: PresenceEvent, client: &str, group: Option<&str>) -> Vec<u8> {
    let mut o = Out::with_capacity(96);
    o.raw(r#"{"mode":400,"event":"#)
        .raw(match event {
            PresenceEvent::Online => r#""online""#,
            PresenceEvent::Offline => r#""offline""#,
        })
        .raw(r#","clientId":"#)
        .str(client)
        .raw(r#","group":"#)
        .opt_str(group)
        .raw("}");
    o.done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn v(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    #[test]
    fn parses_the_seed_frames() {
        let f = parse_client_frame(
            r#"{"msgId":" 10001","targetClientId":"c2","mode":100,"content":"你好，c2"}"#.as_bytes(),
        )
        .expect("valid");
        assert_eq!(
            f,
            ClientFrame::Send(Send {
                msg_id: Some(" 10001".into()),
                target: SendTarget::Client("c2".into()),
                content: r#""你好，c2""#.into(),
                ack: false,
            })
        );
        let f = parse_client_frame(br#"{"msgId":"10004","mode":1}"#).expect("valid");
        assert_eq!(
            f,
            ClientFrame::Heartbeat {
                msg_id: Some("10004".into())
            }
        );
        let f = parse_client_frame(br#"{"msgId":7,"group":"g1","mode":200,"content":{"a":[1]}}"#).expect("valid");
        assert_eq!(
            f,
            ClientFrame::Send(Send {
                msg_id: Some("7".into()),
                target: SendTarget::Group("g1".into()),
                content: r#"{"a":[1]}"#.into(),
                ack: false,
            })
        );
        let f = parse_client_frame(br#"{"mode":300,"content":1,"extra":true}"#).expect("valid");
        assert!(matches!(
            f,
            ClientFrame::Send(Send {
                target: SendTarget::Biz,
                ..
            })
        ));
    }

    #[test]
    fn upstream_content_is_nested_at_most_max_content_depth() {
        let nested = |depth: usize, open: &str, close: &str| {
            format!(
                r#"{{"mode":500,"msgId":"u","content":{}1{}}}"#,
                open.repeat(depth),
                close.repeat(depth)
            )
        };
        for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
            let ok = nested(MAX_CONTENT_DEPTH, open, close);
            assert!(
                matches!(parse_client_frame(ok.as_bytes()), Ok(ClientFrame::Upstream(_))),
                "{MAX_CONTENT_DEPTH} levels are fine"
            );
            // A receiver's parser (Python's json, serde_json's 128 levels
            // with the batch around it) must not choke on an event: a
            // client could hold back its tenant's whole batches.
            for depth in [MAX_CONTENT_DEPTH + 1, 20_000] {
                let e = parse_client_frame(nested(depth, open, close).as_bytes()).expect_err("too deep");
                assert_eq!(e.code, ErrorCode::InvalidFrame);
                assert_eq!(e.msg_id.as_deref(), Some("u"));
                assert_eq!(e.detail, "content is nested too deeply");
            }
        }
        // Brackets inside strings are not nesting.
        let s = format!(r#"{{"mode":500,"content":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(matches!(parse_client_frame(s.as_bytes()), Ok(ClientFrame::Upstream(_))));
    }

    #[test]
    fn refuses_bad_frames_with_the_right_code() {
        let cases: &[(&[u8], ErrorCode, Option<&str>)] = &[
            (b"not json", ErrorCode::InvalidFrame, None),
            (b"[1,2]", ErrorCode::InvalidFrame, None),
            (b"{\"mode\":", ErrorCode::InvalidFrame, None),
            (br#"{"msgId":"a"}"#, ErrorCode::InvalidFrame, Some("a")),
            (br#"{"msgId":"a","mode":"1"}"#, ErrorCode::InvalidFrame, Some("a")),
            (br#"{"msgId":"a","mode":7}"#, ErrorCode::UnknownMode, Some("a")),
            (
                br#"{"msgId":"a","mode":100,"content":1}"#,
                ErrorCode::InvalidFrame,
                Some("a"),
            ),
            (
                br#"{"msgId":"a","mode":100,"targetClientId":5,"content":1}"#,
                ErrorCode::InvalidFrame,
                Some("a"),
            ),
            (
                br#"{"msgId":"a","mode":200,"content":1}"#,
                ErrorCode::InvalidFrame,
                Some("a"),
            ),
            (br#"{"msgId":"a","mode":300}"#, ErrorCode::InvalidFrame, Some("a")),
            (br#"{"msgId":{},"mode":1}"#, ErrorCode::InvalidFrame, None),
        ];
        for (text, code, msg_id) in cases {
            let e = parse_client_frame(text).expect_err("must fail");
            assert_eq!(e.code, *code, "{}", String::from_utf8_lossy(text));
            assert_eq!(e.msg_id.as_deref(), *msg_id, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn client_sends_render_what_the_parser_reads_back() {
        let sends = [
            Send {
                msg_id: Some("m\"1".into()),
                target: SendTarget::Client("c2".into()),
                content: r#"{"t":1,"p":"x"}"#.into(),
                ack: false,
            },
            Send {
                msg_id: None,
                target: SendTarget::Group("g1".into()),
                content: "7".into(),
                ack: false,
            },
            Send {
                msg_id: Some("3".into()),
                target: SendTarget::Biz,
                content: r#""hi""#.into(),
                ack: false,
            },
        ];
        for send in sends {
            let text = client_send(&send);
            assert_eq!(
                parse_client_frame(&text),
                Ok(ClientFrame::Send(send)),
                "{}",
                String::from_utf8_lossy(&text)
            );
        }
        assert_eq!(
            v(&client_send(&Send {
                msg_id: Some("1".into()),
                target: SendTarget::Client("c2".into()),
                content: r#"{"a":1}"#.into(),
                ack: false,
            })),
            json!({"mode":100,"msgId":"1","targetClientId":"c2","content":{"a":1}})
        );
    }

    #[test]
    fn renders_gateway_frames_as_the_spec_shows() {
        assert_eq!(
            v(&welcome(
                "c1",
                "d1",
                &["g1".into(), "g2".into()],
                "edge-7f3a",
                30,
                WelcomeLog::default()
            )),
            json!({"mode":0,"code":0,"msg":"success","data":{"clientId":"c1","bizCode":"d1","groups":["g1","g2"],"node":"edge-7f3a","heartbeatSec":30}})
        );
        assert_eq!(
            v(&heartbeat_reply(Some("10004"), 5)),
            json!({"mode":1,"msgId":"10004","ts":5})
        );
        assert_eq!(
            v(&reply(Some("m\"1"), ErrorCode::Ok, "success", Some(3))),
            json!({"mode":2,"msgId":"m\"1","code":0,"msg":"success","data":{"recipients":3}})
        );
        assert_eq!(
            v(&reply(None, ErrorCode::Offline, "target is not online", None)),
            json!({"mode":2,"msgId":null,"code":1004,"msg":"target is not online","data":null})
        );
        assert_eq!(
            v(&delivery(
                &SendTarget::Group("g1".into()),
                Some("1"),
                "c1",
                r#"{"x":"y"}"#,
                9
            )),
            json!({"mode":200,"msgId":"1","from":"c1","group":"g1","content":{"x":"y"},"ts":9})
        );
        assert_eq!(
            v(&presence_notice(PresenceEvent::Offline, "c3", Some("g1"))),
            json!({"mode":400,"event":"offline","clientId":"c3","group":"g1"})
        );
    }

    #[test]
    fn history_adds_seq_to_deliveries_and_the_log_position_to_the_welcome() {
        assert_eq!(
            v(&logged_delivery(
                &SendTarget::Biz,
                None,
                "",
                "1",
                9,
                false,
                Some(1_700_000_000_000_123)
            )),
            json!({"mode":300,"msgId":null,"from":"","content":1,"ts":9,"seq":1_700_000_000_000_123_u64})
        );
        let log = WelcomeLog {
            position: Some(("e1", 41)),
            recovered: Some(true),
        };
        assert_eq!(
            v(&welcome("c1", "d1", &[], "n", 30, log)),
            json!({"mode":0,"code":0,"msg":"success","data":{"clientId":"c1","bizCode":"d1","groups":[],"node":"n","heartbeatSec":30,"epoch":"e1","seq":41,"recovered":true}})
        );
        let off = WelcomeLog {
            position: None,
            recovered: Some(false),
        };
        assert_eq!(
            v(&welcome("c1", "d1", &[], "n", 30, off))["data"],
            json!({"clientId":"c1","bizCode":"d1","groups":[],"node":"n","heartbeatSec":30,"recovered":false}),
            "history off: no position, and a recovery asked for fails"
        );
        let fresh = WelcomeLog { recovered: None, ..log };
        assert_eq!(
            v(&welcome("c1", "d1", &[], "n", 30, fresh))["data"].get("recovered"),
            None,
            "recovered only when the client asked to recover"
        );
    }

    #[test]
    fn receipts_ack_frames_and_ack_flags() {
        assert_eq!(
            parse_client_frame(br#"{"mode":3,"msgId":"m1"}"#),
            Ok(ClientFrame::Ack { msg_id: "m1".into() })
        );
        assert_eq!(
            parse_client_frame(br#"{"mode":3,"msgId":17}"#),
            Ok(ClientFrame::Ack { msg_id: "17".into() })
        );
        for bad in [
            &br#"{"mode":3}"#[..],
            br#"{"mode":3,"msgId":null}"#,
            br#"{"mode":3,"msgId":[]}"#,
        ] {
            let e = parse_client_frame(bad).expect_err("no msgId");
            assert_eq!(e.code, ErrorCode::InvalidFrame, "{}", String::from_utf8_lossy(bad));
        }
        let Ok(ClientFrame::Send(s)) =
            parse_client_frame(br#"{"mode":100,"msgId":"a","targetClientId":"c2","content":1,"ack":true}"#)
        else {
            panic!("a unicast with ack")
        };
        assert!(s.ack);
        let e =
            parse_client_frame(br#"{"mode":100,"targetClientId":"c2","content":1,"ack":true}"#).expect_err("no msgId");
        assert_eq!(e.code, ErrorCode::InvalidFrame);
        let e = parse_client_frame(br#"{"mode":100,"msgId":"a","targetClientId":"c2","content":1,"ack":1}"#)
            .expect_err("not a boolean");
        assert_eq!((e.code, e.msg_id.as_deref()), (ErrorCode::InvalidFrame, Some("a")));
        let Ok(ClientFrame::Send(s)) = parse_client_frame(br#"{"mode":300,"content":1,"ack":true}"#) else {
            panic!("a broadcast")
        };
        assert!(!s.ack, "ack is for unicasts only");
        assert_eq!(
            v(&receipt("m1", &["c2"], &["c3", "c\"4"])),
            json!({"mode":4,"msgId":"m1","acked":["c2"],"unacked":["c3","c\"4"]})
        );
        assert_eq!(
            v(&logged_delivery(
                &SendTarget::Client("c2".into()),
                Some("m1"),
                "c1",
                "1",
                9,
                true,
                Some(5)
            )),
            json!({"mode":100,"msgId":"m1","from":"c1","content":1,"ts":9,"ack":true,"seq":5})
        );
        assert_eq!(v(&client_ack("m\"1")), json!({"mode":3,"msgId":"m\"1"}));
    }
}
