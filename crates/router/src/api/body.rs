//! What a call reads from its request: the JSON body (every field any call
//! reads), the tenant the headers name, and the checks on both. Every
//! refusal here is a client's mistake (400/1001).

use http::HeaderMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use switchboard_protocol::ids::{self, IdKind};

use super::error::ApiError;

/// Largest integer every JSON client represents exactly (2^53 - 1).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Longest `sendUserId`, in bytes.
const MAX_SEND_USER_ID: usize = 256;

/// Every field any call reads. Unknown fields are ignored (go-websocket
/// clients send `code`/`msg`/`data` even to `get_online_list`); a field of
/// the wrong type is a 400.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Body {
    #[serde(alias = "bizCode")]
    pub(crate) system_id: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_ids: Option<Vec<String>>,
    pub(crate) group_name: Option<String>,
    send_user_id: Option<String>,
    code: Option<i64>,
    msg: Option<String>,
    data: Option<Box<RawValue>>,
    /// `send_to_client(s)`: wait up to this many ms for the recipients'
    /// acks (delivery receipts); 0 or absent: no receipt.
    pub(crate) ack_timeout_ms: Option<u64>,
    /// `register`: turns history on or off for the bizCode (SPEC §7).
    pub(crate) history: Option<bool>,
    /// `get_history`: only entries after this `seq`.
    pub(crate) since: Option<u64>,
    /// `get_history`: at most this many entries.
    pub(crate) limit: Option<u64>,
    /// `set_limits`: most connections of the bizCode per edge (0: off).
    pub(crate) max_connections: Option<u64>,
    /// `set_limits`: client sends per second of the bizCode per edge (0: off).
    pub(crate) sends_per_sec: Option<u64>,
    /// `set_limits`: sends at once above the rate (0: one second's).
    pub(crate) sends_burst: Option<u64>,
    /// `set_webhook`: where events go (absent, null or empty: remove).
    pub(crate) url: Option<String>,
    /// `set_webhook`: the event kinds (absent or empty: every kind).
    pub(crate) kinds: Option<Vec<String>>,
    /// `set_webhook`: issue a new secret.
    pub(crate) rotate_secret: Option<bool>,
    #[allow(dead_code)]
    user_id: Option<Value>,
    #[allow(dead_code)]
    extend: Option<Value>,
}

impl Body {
    /// The delivered `content`: `{"code":..,"msg":..,"data":..}` as JSON text.
    pub(crate) fn content(&self) -> Result<String, ApiError> {
        if let Some(from) = &self.send_user_id {
            if from.len() > MAX_SEND_USER_ID {
                return Err(ApiError::bad(format!(
                    "sendUserId is longer than {MAX_SEND_USER_ID} bytes"
                )));
            }
        }
        if self.code.is_some_and(|c| c.unsigned_abs() > MAX_SAFE_INTEGER) {
            return Err(ApiError::bad("code must be an integer within ±(2^53-1)"));
        }
        let data = self.data.as_ref().map_or("null", |d| d.get());
        let msg = serde_json::to_string(self.msg.as_deref().unwrap_or("")).map_err(|_| ApiError::bad("msg"))?;
        Ok(format!(
            r#"{{"code":{},"msg":{msg},"data":{data}}}"#,
            self.code.unwrap_or(0)
        ))
    }

    /// How long a send waits for its receipt (`ackTimeoutMs`); `None`: no
    /// receipt.
    pub(crate) fn ack_timeout(&self) -> Result<Option<std::time::Duration>, ApiError> {
        let max = switchboard_protocol::frame::MAX_ACK_TIMEOUT_MS;
        match self.ack_timeout_ms {
            None | Some(0) => Ok(None),
            Some(ms) if ms > u64::from(max) => {
                Err(ApiError::bad(format!("ackTimeoutMs must be between 0 and {max} (ms)")))
            }
            Some(ms) => Ok(Some(std::time::Duration::from_millis(ms))),
        }
    }

    /// The delivery's `from`: `sendUserId`, or empty.
    pub(crate) fn from(&self) -> &str {
        self.send_user_id.as_deref().unwrap_or("")
    }
}

/// A field the call needs.
pub(crate) fn required<T>(v: Option<T>, field: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| ApiError::bad(format!("{field} is required")))
}

/// The body as JSON: an object, or nothing (whitespace reads as `{}`).
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad("body must be a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid body: {e}")))
}

/// The tenant the headers name. Every `systemId` and `bizCode` header
/// (any number of each, in any order) must name the same bizCode, as the
/// handshake requires of its query: a request that names two is refused
/// (400/1001) rather than served for whichever header came first.
pub(crate) fn tenant(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut found: Option<&str> = None;
    for name in ["systemId", "bizCode"] {
        for value in headers.get_all(name) {
            let value = value
                .to_str()
                .map_err(|_| ApiError::bad(format!("the {name} header is not text")))?;
            match found {
                Some(f) if f != value => {
                    return Err(ApiError::bad(
                        "the systemId and bizCode headers name different bizCodes",
                    ));
                }
                _ => found = Some(value),
            }
        }
    }
    Ok(found.map(str::to_owned))
}

/// Refuses a body `systemId`/`bizCode` that names another bizCode than
/// the headers (every call but `register`, whose body names the bizCode
/// to register).
pub(crate) fn same_tenant(body: Option<&str>, tenant: &str) -> Result<(), ApiError> {
    match body {
        Some(b) if b != tenant => Err(ApiError::bad(
            "the body's systemId names another bizCode than the systemId header",
        )),
        _ => Ok(()),
    }
}

/// Refuses an invalid bizCode, clientId or group.
pub(crate) fn check_id(kind: IdKind, id: &str) -> Result<(), ApiError> {
    ids::validate(kind, id).map_err(|e| ApiError::bad(e.to_string()))
}
