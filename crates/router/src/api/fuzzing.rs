//! Fuzz entry point (not part of the API): the body of the `fuzz/` target
//! `api_body`, also run by `tests/fuzz_corpus.rs` over the saved corpus so
//! `cargo test` replays it.
//!
//! It answers a call as [`Api`] does once the headers passed (body parsing
//! and every check after it), against a real [`Router`] on the in-memory
//! store with two clients online, whose commands to nodes are kept.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde::de::IgnoredAny;
use switchboard_protocol::envelope::{self, CommandReply, ConnInfo, NodeCommand};
use switchboard_protocol::frame;
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::ops::Health;

use super::call::Call;
use super::error::ApiError;
use super::keys::Caller;
use super::Api;
use crate::config::{ApiConfig, RouterConfig};
use crate::link::{EdgeError, EdgeLink};
use crate::store::{MemoryRegistry, MemoryStore};
use crate::Router;

/// The tenant of every fuzzed call (the headers are not fuzzed here).
const BIZ: &str = "d1";

/// Commands the router sent to nodes.
#[derive(Default)]
struct Kept(Mutex<Vec<NodeCommand>>);

#[async_trait]
impl EdgeLink for Kept {
    async fn send(&self, _node: &str, cmd: NodeCommand) -> Result<(), EdgeError> {
        self.0.lock().push(cmd);
        Ok(())
    }

    async fn request(&self, _node: &str, cmd: NodeCommand) -> Result<CommandReply, EdgeError> {
        self.0.lock().push(cmd);
        Ok(CommandReply { found: true })
    }
}

/// The `api_body` target.
///
/// Input: byte 0 picks the call, the rest is the JSON body.
///
/// # Panics
/// When an invariant breaks:
/// - the answer is 200 or a 4xx (the in-memory store never fails, so a
///   body can only be a client's mistake), with a `{code,msg,data}` JSON
///   body whose `code` is 0 exactly on 200;
/// - every frame the router hands a node is valid JSON with a delivery
///   or presence mode, and every command survives the bus encoding.
pub fn api_body(data: &[u8]) {
    let [call, body @ ..] = data else {
        return;
    };
    let call = Call::ALL[usize::from(*call) % Call::ALL.len()];
    let body = Bytes::copy_from_slice(body);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("no runtime: {e}"),
    };
    rt.block_on(async {
        static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
        let metrics = METRICS.get_or_init(|| Arc::new(Metrics::new())).clone();
        let edges = Arc::new(Kept::default());
        let router = Router::new(
            RouterConfig::default(),
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryRegistry::default()),
            Arc::new(crate::store::MemoryMembers::default()),
            edges.clone(),
            None,
            metrics.clone(),
        );
        for (conn, client, groups) in [(1, "c1", vec!["g1".to_owned()]), (2, "c2", vec![])] {
            let info = ConnInfo {
                node: "n1".into(),
                conn,
                biz: BIZ.into(),
                client: client.into(),
                groups,
            };
            if let Err(e) = router.connect(info).await {
                panic!("setup connect refused: {e}");
            }
        }
        edges.0.lock().clear();
        let api = Api::new(router, ApiConfig::default(), Arc::new(Health::default()), metrics);
        let answer = match call {
            Call::Register => api.register(Caller::Any, Some(BIZ.to_owned()), &body).await,
            Call::Tenant(op) => api.dispatch(op, Caller::Any, BIZ, &body).await,
        };
        let res = answer.unwrap_or_else(ApiError::into_response);
        let status = res.status();
        assert!(
            status == http::StatusCode::OK || status.is_client_error(),
            "{} answered {status}",
            call.name()
        );
        let bytes = match res.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => match e {},
        };
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Reply {
            code: u16,
            msg: String,
            data: IgnoredAny,
        }
        let reply: Reply = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} answered {:?}: {e}", call.name(), String::from_utf8_lossy(&bytes)));
        assert_eq!(
            reply.code == 0,
            status == http::StatusCode::OK,
            "{}: code {}",
            call.name(),
            reply.code
        );
        for cmd in edges.0.lock().iter() {
            check_command(cmd);
        }
    });
}

/// A command to a node: frames are JSON a client can read, and the
/// command survives the bus.
fn check_command(cmd: &NodeCommand) {
    if let NodeCommand::Deliver { frame, mode, .. } = cmd {
        let _: IgnoredAny = serde_json::from_slice(frame)
            .unwrap_or_else(|e| panic!("frame {:?} is not JSON: {e}", String::from_utf8_lossy(frame)));
        let delivery = [
            frame::MODE_UNICAST,
            frame::MODE_GROUP,
            frame::MODE_BROADCAST,
            frame::MODE_PRESENCE,
        ];
        assert!(delivery.contains(mode), "delivery mode {mode}");
    }
    if let NodeCommand::Batch(cmds) = cmd {
        cmds.iter().for_each(check_command);
    }
    let bytes = envelope::encode(cmd).unwrap_or_else(|e| panic!("{cmd:?} cannot be encoded: {e}"));
    let back: NodeCommand = envelope::decode(&bytes).unwrap_or_else(|e| panic!("{cmd:?} encoded is refused: {e}"));
    assert_eq!(&back, cmd);
}

/// Seeds for `api_body`: a body for each call, from the fields of
/// `docs/openapi.yaml`, and bodies each check refuses.
pub fn api_body_seeds() -> Vec<Vec<u8>> {
    let at = |call: &str| Call::ALL.iter().position(|c| c.name() == call).unwrap_or(0) as u8;
    [
        ("register", r#"{"systemId":"d2"}"#),
        ("register", ""),
        ("register", r#"{"systemId":"bad id"}"#),
        (
            "send_to_client",
            r#"{"clientId":"c1","sendUserId":"orders","code":0,"msg":"new order","data":{"id":42}}"#,
        ),
        ("send_to_client", r#"{"clientId":"nobody","data":null}"#),
        ("send_to_client", r#"{"clientId":"c1","code":9007199254740992}"#),
        (
            "send_to_clients",
            r#"{"clientIds":["c1","c2","c3"],"msg":"hi","data":[1,"x"]}"#,
        ),
        ("send_to_clients", r#"{"clientIds":"c1"}"#),
        (
            "send_to_group",
            r#"{"groupName":"g1","sendUserId":"ops","msg":"deploy at 5pm","data":null}"#,
        ),
        ("send_to_group", r#"{"groupName":"g*"}"#),
        (
            "send_to_system",
            r#"{"systemId":"d1","msg":"\u00e9\ud83d\ude00","data":"x"}"#,
        ),
        ("send_to_system", r#"{"systemId":"d2"}"#),
        ("bind_to_group", r#"{"clientId":"c2","groupName":"g2"}"#),
        ("unbind_from_group", r#"{"clientId":"c1","groupName":"g1"}"#),
        ("get_online_list", r#"{"groupName":"g1","code":0,"msg":"","data":{}}"#),
        ("get_online_list", "  "),
        ("get_all_groups", "{}"),
        ("close_client", r#"{"clientId":"c1"}"#),
        ("close_client", "[1]"),
        ("send_to_client", r#"{"clientId":"c1","extend":{"a":[]},"userId":5}"#),
        (
            "set_limits",
            r#"{"maxConnections":100,"sendsPerSec":50,"sendsBurst":null}"#,
        ),
        ("set_limits", r#"{"sendsBurst":5}"#),
        ("set_limits", r#"{"maxConnections":-1}"#),
        ("get_limits", "{}"),
    ]
    .iter()
    .map(|(call, body)| [&[at(call)][..], body.as_bytes()].concat())
    .collect()
}
