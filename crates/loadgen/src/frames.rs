//! The client frames the load generator writes and reads, on the protocol
//! crate's definitions (SPEC §2), so the load generator and the gateway
//! cannot drift apart.
//!
//! Sends are built with [`frame::client_send`], the renderer whose output
//! `parse_client_frame` (the gateway's parser) reads back. Received frames
//! are parsed into [`Incoming`], a typed view of only the fields the
//! scenarios read: the protocol crate renders gateway frames but has no
//! parser for them, and a JSON tree per frame would cost the load generator
//! CPU it shares with the gateway. Modes and codes are compared against the
//! protocol's `MODE_*` constants and [`ErrorCode`].

use serde::{Deserialize, Serialize};
use switchboard_protocol::frame::{self, SendTarget};
use switchboard_protocol::ErrorCode;
use tokio_tungstenite::tungstenite::Message;

/// A client send (mode 100/200/300) as a text message.
pub(crate) fn send(target: SendTarget, msg_id: String, content: String) -> Message {
    let text = frame::client_send(&frame::Send {
        msg_id: Some(msg_id),
        target,
        content,
        ack: false,
    });
    // Rendered from `String`s by a JSON writer: always UTF-8, no copy.
    let text = String::from_utf8(text).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Message::text(text)
}

/// The load generator's own fields inside `content`: written by senders,
/// read back by receivers. Fields that are 0 or empty are left out.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Probe<'a> {
    /// Send time, ns of [`crate::client::now_ns`].
    #[serde(default)]
    pub(crate) t: u64,
    /// Sequence number per sender.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) s: u64,
    /// Sender index.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) f: u64,
    /// Broadcast repetition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) r: Option<u64>,
    /// Padding to the requested payload size; never read back.
    #[serde(skip_deserializing, skip_serializing_if = "str::is_empty")]
    pub(crate) p: &'a str,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Probe<'_> {
    /// The `content` JSON text of a send.
    pub(crate) fn json(&self) -> String {
        // Integers and a plain string: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The fields of a gateway frame the scenarios read; everything else is
/// skipped without being built.
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming {
    /// Frame mode (`frame::MODE_*`).
    pub(crate) mode: u16,
    /// Reply and welcome code.
    #[serde(default)]
    code: Option<u16>,
    /// A reply's `data` (null on failure).
    #[serde(default)]
    data: Option<ReplyData>,
    /// A delivery's content, when the load generator sent it.
    #[serde(default)]
    pub(crate) content: Probe<'static>,
}

#[derive(Debug, Deserialize)]
struct ReplyData {
    #[serde(default)]
    recipients: Option<u64>,
}

impl Incoming {
    /// Parses a text message, `None` for anything else or a frame whose
    /// fields are not as this view expects.
    pub(crate) fn parse(msg: &Message) -> Option<Self> {
        match msg {
            Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
            _ => None,
        }
    }

    /// The welcome (mode 0), the first frame of every connection.
    pub(crate) fn is_welcome(&self) -> bool {
        self.mode == frame::MODE_WELCOME
    }

    /// A reply to a send (mode 2): `Ok(recipients)` when it succeeded,
    /// `Err(code)` when refused; `None` for any other frame.
    pub(crate) fn reply(&self) -> Option<Result<u64, u16>> {
        if self.mode != frame::MODE_REPLY {
            return None;
        }
        match self.code {
            Some(c) if c == ErrorCode::Ok.as_u16() => {
                Some(Ok(self.data.as_ref().and_then(|d| d.recipients).unwrap_or(0)))
            }
            other => Some(Err(other.unwrap_or(u16::MAX))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::frame::{delivery, reply, welcome, ClientFrame};

    #[test]
    fn sends_are_client_frames_the_gateway_parses() {
        let probe = Probe {
            t: 5,
            s: 2,
            f: 1,
            r: None,
            p: "xx",
        };
        let msg = send(SendTarget::Group("g1".into()), "2".into(), probe.json());
        let Message::Text(text) = msg else {
            panic!("a send is a text message")
        };
        let parsed = frame::parse_client_frame(text.as_bytes()).expect("the gateway accepts it");
        let ClientFrame::Send(s) = parsed else {
            panic!("parsed as a send")
        };
        assert_eq!(s.target, SendTarget::Group("g1".into()));
        assert_eq!(s.msg_id.as_deref(), Some("2"));
        let content: serde_json::Value = serde_json::from_str(&s.content).expect("content is JSON");
        assert_eq!(content, serde_json::json!({"t":5,"s":2,"f":1,"p":"xx"}));
    }

    #[test]
    fn reads_what_the_gateway_renders() {
        let text = |bytes: Vec<u8>| Message::text(String::from_utf8(bytes).expect("UTF-8"));
        let w =
            Incoming::parse(&text(welcome("c1", "d1", &["g".into()], "n", 30, Default::default()))).expect("welcome");
        assert!(w.is_welcome());
        assert_eq!(w.reply(), None);

        let ok = Incoming::parse(&text(reply(Some("1"), ErrorCode::Ok, "success", Some(3)))).expect("reply");
        assert_eq!(ok.reply(), Some(Ok(3)));
        let refused = reply(None, ErrorCode::Offline, "target is not online", None);
        let refused = Incoming::parse(&text(refused)).expect("reply");
        assert_eq!(refused.reply(), Some(Err(ErrorCode::Offline.as_u16())));

        let probe = Probe {
            t: 9,
            s: 4,
            f: 0,
            r: Some(2),
            p: "pad",
        };
        let target = SendTarget::Client("c2".into());
        let d = Incoming::parse(&text(delivery(&target, Some("4"), "c1", &probe.json(), 1))).expect("delivery");
        assert_eq!(d.mode, frame::MODE_UNICAST);
        assert_eq!((d.content.t, d.content.s, d.content.f, d.content.r), (9, 4, 0, Some(2)));
        assert_eq!(d.reply(), None);
    }
}
