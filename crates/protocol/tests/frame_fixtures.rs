//! The golden frame fixtures, `fixtures/frames/*.json`: one file per frame
//! kind and direction, each a list of frames exactly as they travel. Every
//! client → gateway frame is parsed by the gateway's parser and rendered
//! back to the same bytes; every gateway → client frame is rendered byte for
//! byte by the renderer the edge uses. The JS SDK's tests (`clients/js`)
//! check its encoder and decoder against the same files, so the SDK and the
//! gateway cannot drift apart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_protocol::frame::{self, ClientFrame, PresenceEvent, SendTarget, WelcomeLog};
use switchboard_protocol::ErrorCode;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    direction: String,
    kind: String,
    mode: u16,
    frames: Vec<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Welcome {
    mode: u16,
    code: u16,
    msg: String,
    data: WelcomeData,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WelcomeData {
    client_id: String,
    biz_code: String,
    groups: Vec<String>,
    node: String,
    heartbeat_sec: u64,
    epoch: Option<String>,
    seq: Option<u64>,
    recovered: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HeartbeatReply {
    mode: u16,
    msg_id: Option<String>,
    ts: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipients {
    recipients: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Reply {
    mode: u16,
    msg_id: Option<String>,
    code: u16,
    msg: String,
    data: Option<Recipients>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Delivery<'a> {
    mode: u16,
    msg_id: Option<String>,
    from: String,
    group: Option<String>,
    #[serde(borrow)]
    content: &'a RawValue,
    ts: u64,
    ack: Option<bool>,
    seq: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Receipt {
    mode: u16,
    msg_id: String,
    acked: Vec<String>,
    unacked: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Presence {
    mode: u16,
    event: String,
    client_id: String,
    group: Option<String>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/frames")
}

/// Every fixture file: (file name, fixture).
fn fixtures() -> Vec<(String, Fixture)> {
    let entries = std::fs::read_dir(dir()).unwrap_or_else(|e| panic!("read {}: {e}", dir().display()));
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("list {}: {e}", dir().display())).path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {name}: {e}"));
        let fixture: Fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push((name, fixture));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn parse<'a, T: Deserialize<'a>>(name: &str, raw: &'a RawValue) -> T {
    serde_json::from_str(raw.get()).unwrap_or_else(|e| panic!("{name}: {e}: {}", raw.get()))
}

/// The bytes the gateway renders for this gateway → client frame.
fn render_gateway_frame(name: &str, mode: u16, raw: &RawValue) -> Vec<u8> {
    match mode {
        frame::MODE_WELCOME => {
            let w: Welcome = parse(name, raw);
            assert_eq!((w.mode, w.code, w.msg.as_str()), (0, 0, "success"), "{name}");
            let d = &w.data;
            let position = match (&d.epoch, d.seq) {
                (Some(epoch), Some(seq)) => Some((epoch.as_str(), seq)),
                (None, None) => None,
                _ => panic!("{name}: epoch and seq come together: {}", raw.get()),
            };
            let log = WelcomeLog {
                position,
                recovered: d.recovered,
            };
            frame::welcome(&d.client_id, &d.biz_code, &d.groups, &d.node, d.heartbeat_sec, log)
        }
        frame::MODE_HEARTBEAT => {
            let h: HeartbeatReply = parse(name, raw);
            assert_eq!(h.mode, mode, "{name}");
            frame::heartbeat_reply(h.msg_id.as_deref(), h.ts)
        }
        frame::MODE_REPLY => {
            let r: Reply = parse(name, raw);
            assert_eq!(r.mode, mode, "{name}");
            let code = ErrorCode::from_u16(r.code).unwrap_or_else(|| panic!("{name}: unknown code {}", r.code));
            assert_eq!(
                r.data.is_some(),
                code == ErrorCode::Ok,
                "{name}: data is {{recipients}} on success, null otherwise"
            );
            frame::reply(r.msg_id.as_deref(), code, &r.msg, r.data.map(|d| d.recipients))
        }
        frame::MODE_UNICAST | frame::MODE_GROUP | frame::MODE_BROADCAST => {
            let d: Delivery<'_> = parse(name, raw);
            assert_eq!(d.mode, mode, "{name}");
            let target = match (mode, d.group) {
                (frame::MODE_UNICAST, None) => SendTarget::Client("any".into()),
                (frame::MODE_GROUP, Some(g)) => SendTarget::Group(g),
                (frame::MODE_BROADCAST, None) => SendTarget::Biz,
                _ => panic!("{name}: group belongs to mode 200 only: {}", raw.get()),
            };
            assert_ne!(d.ack, Some(false), "{name}: ack is absent or true");
            let ack = d.ack == Some(true);
            frame::logged_delivery(&target, d.msg_id.as_deref(), &d.from, d.content.get(), d.ts, ack, d.seq)
        }
        frame::MODE_PRESENCE => {
            let p: Presence = parse(name, raw);
            assert_eq!(p.mode, mode, "{name}");
            let event = match p.event.as_str() {
                "online" => PresenceEvent::Online,
                "offline" => PresenceEvent::Offline,
                other => panic!("{name}: unknown event {other}"),
            };
            frame::presence_notice(event, &p.client_id, p.group.as_deref())
        }
        frame::MODE_RECEIPT => {
            let r: Receipt = parse(name, raw);
            assert_eq!(r.mode, mode, "{name}");
            frame::receipt(&r.msg_id, &r.acked, &r.unacked)
        }
        other => panic!("{name}: no gateway frame of mode {other}"),
    }
}

/// The bytes a client writes for this frame, after the gateway parsed it.
fn reparse_client_frame(name: &str, mode: u16, raw: &RawValue) -> Vec<u8> {
    let parsed = frame::parse_client_frame(raw.get().as_bytes())
        .unwrap_or_else(|e| panic!("{name}: the gateway refuses {}: {e:?}", raw.get()));
    match parsed {
        ClientFrame::Heartbeat { msg_id } => {
            assert_eq!(mode, frame::MODE_HEARTBEAT, "{name}");
            // No renderer for a client heartbeat in the gateway: its shape.
            serde_json::json!({"mode": frame::MODE_HEARTBEAT, "msgId": msg_id})
                .to_string()
                .into_bytes()
        }
        ClientFrame::Ack { msg_id } => {
            assert_eq!(mode, frame::MODE_ACK, "{name}");
            frame::client_ack(&msg_id)
        }
        ClientFrame::Send(send) => {
            assert_eq!(send.target.mode(), mode, "{name}");
            frame::client_send(&send)
        }
        ClientFrame::Upstream(up) => {
            assert_eq!(mode, frame::MODE_UPSTREAM, "{name}");
            frame::client_upstream(&up)
        }
    }
}

#[test]
fn every_fixture_is_what_the_gateway_reads_and_writes() {
    let mut count = 0;
    for (name, f) in fixtures() {
        assert_eq!(
            name,
            format!("{}_{}.json", f.direction.split('-').next().unwrap_or_default(), f.kind)
        );
        assert!(!f.frames.is_empty(), "{name} has no frames");
        for raw in &f.frames {
            let bytes = match f.direction.as_str() {
                "gateway-to-client" => render_gateway_frame(&name, f.mode, raw),
                "client-to-gateway" => reparse_client_frame(&name, f.mode, raw),
                other => panic!("{name}: unknown direction {other}"),
            };
            assert_eq!(
                String::from_utf8_lossy(&bytes),
                raw.get(),
                "{name}: the gateway's bytes (left) differ from the fixture (right)"
            );
            count += 1;
        }
    }
    assert!(count > 0, "no fixtures in {}", dir().display());
}

#[test]
fn every_frame_kind_has_a_fixture() {
    let have: BTreeSet<(String, u16)> = fixtures().into_iter().map(|(_, f)| (f.direction, f.mode)).collect();
    let client = [
        frame::MODE_HEARTBEAT,
        frame::MODE_ACK,
        frame::MODE_UNICAST,
        frame::MODE_GROUP,
        frame::MODE_BROADCAST,
        frame::MODE_UPSTREAM,
    ];
    let gateway = [
        frame::MODE_WELCOME,
        frame::MODE_HEARTBEAT,
        frame::MODE_REPLY,
        frame::MODE_UNICAST,
        frame::MODE_GROUP,
        frame::MODE_BROADCAST,
        frame::MODE_PRESENCE,
        frame::MODE_RECEIPT,
    ];
    let want: BTreeSet<(String, u16)> = client
        .iter()
        .map(|m| ("client-to-gateway".to_owned(), *m))
        .chain(gateway.iter().map(|m| ("gateway-to-client".to_owned(), *m)))
        .collect();
    assert_eq!(have, want);
}
