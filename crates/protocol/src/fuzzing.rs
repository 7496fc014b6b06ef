//! Fuzz entry points (not part of the API): the bodies of the `fuzz/`
//! targets `client_frame` and `bus_envelope`, and [`replay`], with which
//! each crate's `tests/fuzz_corpus.rs` runs a target over its saved corpus
//! so `cargo test` replays it.
//!
//! Each target takes arbitrary bytes, drives the real code over them and
//! panics when an invariant breaks, so the fuzzer reports it as a crash.

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codes::{CloseCode, ErrorCode};
use crate::envelope::{
    self, BizQuery, CommandReply, ConnInfo, ConnRange, ConnectReply, DeliverTo, Disconnect, Heartbeat, HeldReply,
    NodeCommand, PresenceValue, Resync, Route, RouteBatch, RouteBatchReply, RouteReply,
};
use crate::frame::{self, ClientFrame, SendTarget};

/// The `client_frame` target: [`frame::parse_client_frame`] over any text
/// a client can send.
///
/// # Panics
/// When an invariant breaks:
/// - a refusal is 1001 or 1002, and its mode-2 reply is valid JSON that
///   echoes the `msgId` read;
/// - an accepted send's `content` is valid JSON, and the delivery
///   rendered from it is valid JSON carrying that content byte for byte,
///   the `msgId` and the mode of the target;
/// - an accepted frame written back as a client frame parses to itself.
pub fn client_frame(data: &[u8]) {
    let parsed = match frame::parse_client_frame(data) {
        Ok(f) => f,
        Err(e) => {
            assert!(
                matches!(e.code, ErrorCode::InvalidFrame | ErrorCode::UnknownMode),
                "refused with {:?}",
                e.code
            );
            let r = head(&frame::reply(e.msg_id.as_deref(), e.code, e.detail, None));
            assert_eq!(r, (frame::MODE_REPLY, e.msg_id));
            return;
        }
    };
    match &parsed {
        ClientFrame::Heartbeat { msg_id } => {
            let r = head(&frame::heartbeat_reply(msg_id.as_deref(), 1));
            assert_eq!(r, (frame::MODE_HEARTBEAT, msg_id.clone()));
        }
        ClientFrame::Ack { msg_id } => {
            let r = head(&frame::receipt(msg_id, &[msg_id.as_str()], &[] as &[&str]));
            assert_eq!(r, (frame::MODE_RECEIPT, Some(msg_id.clone())));
        }
        ClientFrame::Send(s) => {
            let _: IgnoredAny = serde_json::from_str(&s.content)
                .unwrap_or_else(|e| panic!("accepted content {:?} is not JSON: {e}", s.content));
            let bytes = frame::delivery(&s.target, s.msg_id.as_deref(), "c1", &s.content, 9);
            let d: Rendered<'_> = json(&bytes);
            assert_eq!(d.mode, s.target.mode());
            assert_eq!(d.msg_id, s.msg_id);
            assert_eq!(d.content.map(RawValue::get), Some(s.content.as_str()));
            assert_eq!(
                d.group,
                if let SendTarget::Group(g) = &s.target {
                    Some(g.clone())
                } else {
                    None
                }
            );
            let r = head(&frame::reply(s.msg_id.as_deref(), ErrorCode::Ok, "success", Some(1)));
            assert_eq!(r, (frame::MODE_REPLY, s.msg_id.clone()));
        }
        ClientFrame::Upstream(u) => {
            // What the edge stores: an event whose JSON keeps the content.
            let event = crate::event::Event::new("f".into(), crate::event::EventKind::Upstream, "d1", "c1", "n", 1)
                .with_upstream(u.msg_id.clone(), &u.content)
                .unwrap_or_else(|e| panic!("accepted content {:?} is not JSON: {e}", u.content));
            let bytes = event.to_json();
            let d: Rendered<'_> = json(&bytes);
            assert_eq!(d.msg_id, u.msg_id);
            assert_eq!(d.content.map(RawValue::get), Some(u.content.as_str()));
        }
    }
    let written = write_client_frame(&parsed);
    let again = frame::parse_client_frame(&written)
        .unwrap_or_else(|e| panic!("{:?} refused: {}", String::from_utf8_lossy(&written), e.detail));
    assert_eq!(
        again,
        parsed,
        "{:?} parsed to another frame",
        String::from_utf8_lossy(&written)
    );
}

/// The fields of a gateway frame the checks read.
#[derive(Deserialize)]
struct Rendered<'a> {
    mode: u16,
    #[serde(rename = "msgId")]
    msg_id: Option<String>,
    group: Option<String>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// Parses a gateway frame; it must be valid JSON.
fn json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> T {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "gateway frame {:?} is not valid JSON: {e}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// The mode and `msgId` of a gateway frame, which must be valid JSON.
fn head(bytes: &[u8]) -> (u16, Option<String>) {
    let r: Rendered<'_> = json(bytes);
    (r.mode, r.msg_id)
}

/// A client frame as a client library would write it.
fn write_client_frame(f: &ClientFrame) -> Vec<u8> {
    let str = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let ack_id;
    let (mode, msg_id) = match f {
        ClientFrame::Heartbeat { msg_id } => (frame::MODE_HEARTBEAT, msg_id),
        ClientFrame::Ack { msg_id } => {
            ack_id = Some(msg_id.clone());
            (frame::MODE_ACK, &ack_id)
        }
        ClientFrame::Send(s) => (s.target.mode(), &s.msg_id),
        ClientFrame::Upstream(u) => (frame::MODE_UPSTREAM, &u.msg_id),
    };
    let mut out = format!(r#"{{"mode":{mode}"#);
    if let Some(id) = msg_id {
        out.push_str(&format!(r#","msgId":{}"#, str(id)));
    }
    if let ClientFrame::Send(s) = f {
        match &s.target {
            SendTarget::Client(c) => out.push_str(&format!(r#","targetClientId":{}"#, str(c))),
            SendTarget::Group(g) => out.push_str(&format!(r#","group":{}"#, str(g))),
            SendTarget::Biz => {}
        }
        out.push_str(&format!(r#","content":{}"#, s.content));
        if s.ack {
            out.push_str(r#","ack":true"#);
        }
    }
    if let ClientFrame::Upstream(u) = f {
        out.push_str(&format!(r#","content":{}"#, u.content));
    }
    out.push('}');
    out.into_bytes()
}

/// The `bus_envelope` target: [`envelope::decode`] of every bus message
/// type over any payload (a peer's bug or a stray publisher).
///
/// # Panics
/// When a decoded message, encoded again, does not decode to itself.
pub fn bus_envelope(data: &[u8]) {
    round_trip::<ConnInfo>(data);
    round_trip::<ConnectReply>(data);
    round_trip::<Disconnect>(data);
    round_trip::<Route>(data);
    round_trip::<envelope::Ack>(data);
    round_trip::<RouteReply>(data);
    round_trip::<RouteBatch>(data);
    round_trip::<RouteBatchReply>(data);
    round_trip::<Resync>(data);
    round_trip::<BizQuery>(data);
    round_trip::<Heartbeat>(data);
    round_trip::<NodeCommand>(data);
    round_trip::<CommandReply>(data);
    round_trip::<HeldReply>(data);
    round_trip::<PresenceValue>(data);
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Ok(msg) = envelope::decode::<T>(data) else {
        return;
    };
    let bytes = envelope::encode(&msg).unwrap_or_else(|e| panic!("{msg:?} cannot be encoded: {e}"));
    let back: T = envelope::decode(&bytes).unwrap_or_else(|e| panic!("{msg:?} encoded is refused: {e}"));
    assert_eq!(back, msg, "an envelope did not survive a round trip");
}

/// Seeds for `client_frame`: each mode of the README and SPEC, and each
/// way a frame is refused.
pub fn client_frame_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"msgId":" 10001","targetClientId":"c2","mode":100,"content":"你好，c2"}"#,
        r#"{"msgId":"10004","mode":1}"#,
        r#"{"msgId":7,"group":"g1","mode":200,"content":{"a":[1,{"b":null}]}}"#,
        r#"{"mode":300,"content":1,"extra":true}"#,
        r#" {"mode":300,"msgId":-1.5e3,"content":"\u00e9\ud83d\ude00"}"#,
        r#"{"mode":100,"msgId":null,"targetClientId":"c\"2","content":[true,false]}"#,
        "not json",
        "[1,2]",
        r#"{"mode":"#,
        r#"{"msgId":"a"}"#,
        r#"{"msgId":"a","mode":"1"}"#,
        r#"{"msgId":"a","mode":7}"#,
        r#"{"msgId":"a","mode":100,"content":1}"#,
        r#"{"msgId":"a","mode":100,"targetClientId":5,"content":1}"#,
        r#"{"msgId":"a","mode":200,"content":1}"#,
        r#"{"msgId":"a","mode":300}"#,
        r#"{"msgId":{},"mode":1}"#,
        r#"{"mode":1,"mode":100}"#,
        r#"{"mode":1e2,"content":0}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Seeds for `bus_envelope`: one of each message type, as encoded.
pub fn bus_envelope_seeds() -> Vec<Vec<u8>> {
    let info = ConnInfo {
        node: "edge1-1881f870".into(),
        conn: 42,
        biz: "d1".into(),
        client: "c1".into(),
        groups: vec!["g1".into(), "g2".into()],
    };
    let route = Route {
        node: "edge1-1881f870".into(),
        conn: 42,
        biz: "d1".into(),
        from: "c1".into(),
        msg_id: Some(" 10001".into()),
        target: SendTarget::Group("g1".into()),
        content: r#""你好""#.into(),
        ack_timeout_ms: 0,
    };
    let deliver = NodeCommand::Deliver {
        mode: 200,
        to: DeliverTo::Group {
            biz: "d1".into(),
            group: "g1".into(),
            exclude: Some(42),
        },
        frame: Bytes::from_static(br#"{"mode":200,"msgId":"1","from":"c1","group":"g1","content":1,"ts":9}"#),
        seq: None,
        order: None,
    };
    let encoded: Vec<Result<Bytes, envelope::EnvelopeError>> = vec![
        envelope::encode(&info),
        envelope::encode(&ConnectReply { code: 0, recreated: 0 }),
        envelope::encode(&Disconnect {
            node: "n".into(),
            conn: 1,
            biz: "d1".into(),
            client: "c1".into(),
        }),
        envelope::encode(&route),
        envelope::encode(&RouteReply {
            code: ErrorCode::Offline.as_u16(),
            recipients: 0,
        }),
        envelope::encode(&RouteBatch {
            routes: vec![
                route.clone(),
                Route {
                    target: SendTarget::Biz,
                    msg_id: None,
                    ..route.clone()
                },
            ],
        }),
        envelope::encode(&RouteBatchReply {
            replies: vec![RouteReply { code: 0, recipients: 3 }],
        }),
        envelope::encode(&Resync {
            node: "n".into(),
            conns: vec![info.clone()],
            covers: None,
        }),
        envelope::encode(&Resync {
            node: "n".into(),
            conns: vec![],
            covers: Some(ConnRange { from: 1, to: 1000 }),
        }),
        envelope::encode(&BizQuery { biz: "d1".into() }),
        envelope::encode(&Heartbeat {
            node: "n".into(),
            conns: 7,
        }),
        envelope::encode(&deliver),
        envelope::encode(&NodeCommand::Deliver {
            mode: 100,
            to: DeliverTo::Conns(vec![1, 2, u64::MAX]),
            frame: Bytes::from_static(b"{}"),
            seq: Some(1),
            order: None,
        }),
        envelope::encode(&NodeCommand::Close {
            conn: 1,
            code: CloseCode::Replaced.as_u16(),
        }),
        envelope::encode(&NodeCommand::Bind {
            conn: 1,
            group: "g1".into(),
        }),
        envelope::encode(&NodeCommand::Resync),
        envelope::encode(&NodeCommand::Batch(vec![
            deliver.clone(),
            NodeCommand::Batch(vec![NodeCommand::Unbind {
                conn: 2,
                group: "g2".into(),
            }]),
        ])),
        envelope::encode(&CommandReply { found: true }),
        envelope::encode(&NodeCommand::Holds { conns: vec![1, 42] }),
        envelope::encode(&HeldReply { held: vec![42] }),
        envelope::encode(&PresenceValue {
            node: "n".into(),
            conn: 1,
            biz: "d1".into(),
            client: "c1".into(),
            groups: vec![],
            since: 1_795_460_174_907,
            bound: vec!["g1".into()],
        }),
    ];
    encoded.into_iter().flatten().map(|b| b.to_vec()).collect()
}

/// The repository's `fuzz/` directory.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Runs `target` over its seeds, every file of `fuzz/corpus/<name>/` and
/// of `fuzz/regressions/<name>/` (inputs that once crashed it); returns
/// how many inputs ran.
///
/// # Panics
/// If the corpus directory is missing or empty (a replay that runs
/// nothing must not pass), or naming every input on which `target`
/// panicked.
pub fn replay(name: &str, target: fn(&[u8]), seeds: &[Vec<u8>]) -> usize {
    let mut inputs: Vec<(String, Vec<u8>)> = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("seed {i}"), s.clone()))
        .collect();
    let corpus = fuzz_dir().join("corpus").join(name);
    let saved = read_dir(&corpus);
    assert!(!saved.is_empty(), "no saved corpus in {}", corpus.display());
    inputs.extend(saved);
    inputs.extend(read_dir(&fuzz_dir().join("regressions").join(name)));
    let failed: Vec<&str> = inputs
        .iter()
        .filter(|(_, data)| std::panic::catch_unwind(|| target(data)).is_err())
        .map(|(path, _)| path.as_str())
        .collect();
    assert!(failed.is_empty(), "{name} failed on {failed:?}");
    inputs.len()
}

/// Every file of `dir` (none if it does not exist), by path.
fn read_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let path = e.path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), data)
        })
        .collect();
    files.sort();
    files
}

/// Writes `seeds` into `fuzz/corpus/<name>/` as `seed-<n>` (what
/// `scripts/fuzz.sh` starts from); returns the directory.
///
/// # Panics
/// If the files cannot be written.
pub fn write_seeds(name: &str, seeds: &[Vec<u8>]) -> PathBuf {
    let dir = fuzz_dir().join("corpus").join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for (i, s) in seeds.iter().enumerate() {
        let path = dir.join(format!("seed-{i:02}"));
        std::fs::write(&path, s).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    dir
}
