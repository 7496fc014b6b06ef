//! The backend HTTP push API (SPEC §3), compatible with go-websocket:
//! `POST /api/websocket/<call>` with a JSON body, the tenant in a
//! `systemId` (or `bizCode`) header, `{code,msg,data}` replies.
//!
//! Every call needs a Bearer key (401 otherwise); a key scoped to some
//! bizCodes ([`ApiKey`]) gets 403 for any other, before anything is looked
//! up or done for it. All refusals are made in one place ([`ApiError`] →
//! status + body); client mistakes are not logged as errors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use switchboard_protocol::envelope::Route;
use switchboard_protocol::frame::SendTarget;
use switchboard_protocol::ids::{self, IdKind};
use switchboard_protocol::ErrorCode;
use switchboard_runtime::http::{self as h, Handler, Response, ResponseFuture};
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::ops::{self, Health};

use crate::config::{ApiConfig, ApiKey};
use crate::core::Router;

/// The `api_body` fuzz target (`fuzz/`), not API.
#[doc(hidden)]
pub mod fuzzing;

/// The path prefix of every call.
pub const PREFIX: &str = "/api/websocket/";

/// Largest integer every JSON client represents exactly (2^53 - 1).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The calls, by path segment.
const CALLS: [&str; 10] = [
    "register",
    "send_to_client",
    "send_to_clients",
    "send_to_group",
    "send_to_system",
    "bind_to_group",
    "unbind_from_group",
    "get_online_list",
    "get_all_groups",
    "close_client",
];

/// A refused call.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: u16,
    msg: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u16, msg: impl Into<String>) -> Self {
        Self {
            status,
            code,
            msg: msg.into(),
        }
    }

    fn bad(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidFrame.as_u16(), msg)
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        let status = match code {
            ErrorCode::Ok => StatusCode::OK,
            ErrorCode::InvalidFrame | ErrorCode::UnknownMode => StatusCode::BAD_REQUEST,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Offline | ErrorCode::UnknownBiz => StatusCode::NOT_FOUND,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::Internal => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, code.as_u16(), code.message())
    }
}

/// `{code, msg, data}`, in that order (as go-websocket writes it).
#[derive(Serialize)]
struct Reply<'a> {
    code: u16,
    msg: &'a str,
    data: Value,
}

fn reply(status: StatusCode, code: u16, msg: &str, data: Value) -> Response {
    h::json(status, &Reply { code, msg, data })
}

fn ok(data: Value) -> Response {
    reply(StatusCode::OK, 0, "success", data)
}

fn into_response(e: ApiError) -> Response {
    let mut res = reply(e.status, e.code, &e.msg, Value::Null);
    if e.status == StatusCode::METHOD_NOT_ALLOWED {
        res.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    }
    res
}

/// The API handler (router and standalone).
#[derive(Clone)]
pub struct Api {
    router: Router,
    config: Arc<ApiConfig>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// Every field any call reads. Unknown fields are ignored (go-websocket
/// clients send `code`/`msg`/`data` even to `get_online_list`); a field of
/// the wrong type is a 400.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(alias = "bizCode")]
    system_id: Option<String>,
    client_id: Option<String>,
    client_ids: Option<Vec<String>>,
    group_name: Option<String>,
    send_user_id: Option<String>,
    code: Option<i64>,
    msg: Option<String>,
    data: Option<Box<RawValue>>,
    #[allow(dead_code)]
    user_id: Option<Value>,
    #[allow(dead_code)]
    extend: Option<Value>,
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| ApiError::bad(format!("{field} is required")))
}

#[derive(Serialize)]
struct GroupCount {
    #[serde(rename = "groupName")]
    group_name: String,
    count: usize,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
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
fn tenant(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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
fn same_tenant(body: Option<&str>, tenant: &str) -> Result<(), ApiError> {
    match body {
        Some(b) if b != tenant => Err(ApiError::bad(
            "the body's systemId names another bizCode than the systemId header",
        )),
        _ => Ok(()),
    }
}

fn check_id(kind: IdKind, id: &str) -> Result<(), ApiError> {
    ids::validate(kind, id).map_err(|e| ApiError::bad(e.to_string()))
}

fn new_message_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl Body {
    /// The delivered `content`: `{"code":..,"msg":..,"data":..}` as JSON text.
    fn content(&self) -> Result<String, ApiError> {
        if let Some(from) = &self.send_user_id {
            if from.len() > 256 {
                return Err(ApiError::bad("sendUserId is longer than 256 bytes"));
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

    fn from(&self) -> &str {
        self.send_user_id.as_deref().unwrap_or("")
    }
}

impl Api {
    /// An API over `router`.
    pub fn new(router: Router, config: ApiConfig, health: Arc<Health>, metrics: Arc<Metrics>) -> Self {
        Self {
            router,
            config: Arc::new(config),
            health,
            metrics,
        }
    }

    /// Whether `path` belongs to the API.
    pub fn owns(path: &str) -> bool {
        path.starts_with(PREFIX) && path != "/api/websocket/ws"
    }

    /// The caller's key: [`Caller::Any`] with API auth off, `None` when
    /// no key matches (401).
    fn caller(&self, headers: &HeaderMap) -> Option<Caller<'_>> {
        if !self.config.auth {
            return Some(Caller::Any);
        }
        let given = h::bearer_token(headers)?;
        matching_key(&self.config.keys, given.as_bytes()).map(Caller::Key)
    }

    /// Answers one API request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response {
        let started = Instant::now();
        let path = req.uri().path().strip_prefix(PREFIX);
        let call: &'static str = CALLS.iter().find(|c| Some(**c) == path).copied().unwrap_or("unknown");
        let res = match self.call(call, req).await {
            Ok(r) => r,
            Err(e) => into_response(e),
        };
        self.metrics
            .api_request(call, res.status().as_u16(), started.elapsed().as_secs_f64());
        res
    }

    async fn call(&self, call: &'static str, req: Request<Incoming>) -> Result<Response, ApiError> {
        let Some(caller) = self.caller(req.headers()) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                401,
                "missing or invalid API key",
            ));
        };
        if call == "unknown" {
            return Err(ApiError::new(StatusCode::NOT_FOUND, 404, "unknown API call"));
        }
        if req.method() != Method::POST {
            return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, 405, "use POST"));
        }
        if !self.health.bus_up() {
            return Err(ErrorCode::Internal.into());
        }
        let tenant = tenant(req.headers())?;
        let limit = self.config.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let body = match Limited::new(req.into_body(), limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return Err(too_large(limit)),
            Err(_) => return Err(ApiError::bad("could not read the body")),
        };
        if call == "register" {
            return self.register(caller, tenant, &body).await;
        }
        let biz = tenant.ok_or_else(|| ApiError::bad("the systemId (or bizCode) header is required"))?;
        check_id(IdKind::Biz, &biz)?;
        caller.may_serve(&biz)?;
        if self.config.require_registration && !self.router.is_registered(&biz).await? {
            return Err(ErrorCode::UnknownBiz.into());
        }
        self.dispatch(call, &biz, &body).await
    }

    async fn register(&self, caller: Caller<'_>, tenant: Option<String>, body: &Bytes) -> Result<Response, ApiError> {
        let b: Body = parse(body)?;
        if let Some(t) = &tenant {
            check_id(IdKind::Biz, t)?;
        }
        // The body's systemId wins here (documented): registering another
        // bizCode than the caller's own is what `register` is for.
        let biz = b
            .system_id
            .or(tenant)
            .ok_or_else(|| ApiError::bad("systemId is required"))?;
        check_id(IdKind::Biz, &biz)?;
        caller.may_serve(&biz)?;
        self.router.register(&biz).await?;
        Ok(ok(json!({})))
    }

    async fn route(&self, biz: &str, target: SendTarget, m: &Body) -> Result<Response, ApiError> {
        let content = m.content()?;
        let message_id = new_message_id();
        let r = self
            .router
            .route(Route {
                node: String::new(),
                conn: 0,
                biz: biz.to_owned(),
                from: m.from().to_owned(),
                msg_id: Some(message_id.clone()),
                target,
                content,
            })
            .await;
        match ErrorCode::from_u16(r.code).unwrap_or(ErrorCode::Internal) {
            ErrorCode::Ok => Ok(ok(json!({"messageId": message_id, "recipients": r.recipients}))),
            code => Err(code.into()),
        }
    }

    async fn dispatch(&self, call: &str, biz: &str, body: &Bytes) -> Result<Response, ApiError> {
        let b: Body = parse(body)?;
        same_tenant(b.system_id.as_deref(), biz)?;
        match call {
            "send_to_client" => {
                let client = required(b.client_id.clone(), "clientId")?;
                check_id(IdKind::Client, &client)?;
                self.route(biz, SendTarget::Client(client), &b).await
            }
            "send_to_clients" => {
                let clients = required(b.client_ids.as_ref(), "clientIds")?;
                if clients.len() > self.config.max_clients_per_send {
                    return Err(ApiError::bad(format!(
                        "at most {} clientIds per call",
                        self.config.max_clients_per_send
                    )));
                }
                for c in clients {
                    check_id(IdKind::Client, c)?;
                }
                let content = b.content()?;
                let message_id = new_message_id();
                let n = self
                    .router
                    .send_clients(biz, clients, b.from(), &message_id, &content)
                    .await?;
                Ok(ok(json!({"messageId": message_id, "recipients": n})))
            }
            "send_to_group" => {
                let group = required(b.group_name.clone(), "groupName")?;
                check_id(IdKind::Group, &group)?;
                self.route(biz, SendTarget::Group(group), &b).await
            }
            "send_to_system" => self.route(biz, SendTarget::Biz, &b).await,
            "bind_to_group" | "unbind_from_group" => {
                let client = required(b.client_id, "clientId")?;
                let group = required(b.group_name, "groupName")?;
                check_id(IdKind::Client, &client)?;
                check_id(IdKind::Group, &group)?;
                self.router
                    .set_group(biz, &client, &group, call == "bind_to_group")
                    .await?;
                Ok(ok(json!({})))
            }
            "get_online_list" => {
                let group = b.group_name.filter(|g| !g.is_empty());
                if let Some(g) = &group {
                    check_id(IdKind::Group, g)?;
                }
                let list = self.router.online_list(biz, group.as_deref());
                Ok(ok(json!({"count": list.len(), "list": list})))
            }
            "get_all_groups" => {
                let list: Vec<GroupCount> = self
                    .router
                    .all_groups(biz)
                    .into_iter()
                    .map(|(group_name, count)| GroupCount { group_name, count })
                    .collect();
                Ok(ok(json!({"count": list.len(), "list": list})))
            }
            "close_client" => {
                let client = required(b.client_id, "clientId")?;
                check_id(IdKind::Client, &client)?;
                self.router.close_client(biz, &client).await?;
                Ok(ok(json!({})))
            }
            _ => Err(ApiError::new(StatusCode::NOT_FOUND, 404, "unknown API call")),
        }
    }
}

/// Who is calling: decides which bizCodes a call may serve.
#[derive(Clone, Copy)]
enum Caller<'a> {
    /// API auth is off: every bizCode.
    Any,
    /// The key the Bearer token matched.
    Key(&'a ApiKey),
}

impl Caller<'_> {
    /// Refuses (403) a call for a bizCode outside the caller's key scope.
    /// Runs once the bizCode is known and valid, before anything is read
    /// for it (registration) or done to it.
    fn may_serve(self, biz: &str) -> Result<(), ApiError> {
        match self {
            Self::Key(key) if !key.allows(biz) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                403,
                format!("this API key is not allowed for bizCode {biz}"),
            )),
            _ => Ok(()),
        }
    }
}

/// The key `given` equals, compared with every key in constant time: no
/// early exit, and which key matched (if any) is only chosen with
/// constant-time selects, so the timing says nothing about the keys but
/// their lengths (as `ct_eq` on slices of different lengths).
fn matching_key<'a>(keys: &'a [ApiKey], given: &[u8]) -> Option<&'a ApiKey> {
    let mut found = subtle::Choice::from(0u8);
    let mut index = 0u64;
    for (i, key) in keys.iter().enumerate() {
        let eq = key.secret().ct_eq(given);
        index.conditional_assign(&(i as u64), eq);
        found |= eq;
    }
    if bool::from(found) {
        usize::try_from(index).ok().and_then(|i| keys.get(i))
    } else {
        None
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooLarge.as_u16(),
        format!("body over {limit} bytes"),
    )
}

/// The router process's HTTP side: the API, then the ops endpoints.
pub struct RouterHttp {
    /// The API.
    pub api: Api,
}

impl Handler for RouterHttp {
    fn call(&self, req: Request<Incoming>, _peer: SocketAddr) -> ResponseFuture {
        let path = req.uri().path();
        if Api::owns(path) {
            let api = self.api.clone();
            return Box::pin(async move { api.handle(req).await });
        }
        let res = ops::handle(req.method(), path, &self.api.health, &self.api.metrics)
            .unwrap_or_else(|| h::error(StatusCode::NOT_FOUND, 404, "not found"));
        Box::pin(std::future::ready(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<ApiKey> {
        vec![
            ApiKey::global("global-key-0123456789"),
            ApiKey::scoped("shop-key-0123456789ab", vec!["shop".into(), "chat".into()]),
            ApiKey::scoped("news-key-0123456789ab", vec!["news".into()]),
        ]
    }

    #[test]
    fn the_matcher_finds_the_key_that_matched() {
        let keys = keys();
        for (i, k) in keys.iter().enumerate() {
            let found = matching_key(&keys, k.secret());
            assert_eq!(found, Some(&keys[i]), "key {i}");
        }
        // Prefixes, extensions, other lengths, nothing, near misses.
        for given in [
            &b""[..],
            b"global-key-012345678",
            b"global-key-01234567890",
            b"shop-key-0123456789aB",
            b"news-key-0123456789ab ",
            b"x",
        ] {
            assert_eq!(matching_key(&keys, given), None, "{}", String::from_utf8_lossy(given));
        }
        assert_eq!(matching_key(&[], b"global-key-0123456789"), None);
        // The last key matches too (no early exit skips it, none is off by one).
        assert_eq!(
            matching_key(&keys, b"news-key-0123456789ab").and_then(ApiKey::biz_codes),
            Some(&["news".to_owned()][..])
        );
    }

    #[test]
    fn a_scoped_key_serves_its_biz_codes_only() {
        let keys = keys();
        let shop = Caller::Key(&keys[1]);
        assert!(shop.may_serve("shop").is_ok() && shop.may_serve("chat").is_ok());
        let e = shop.may_serve("news").expect_err("another bizCode");
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, 403));
        assert!(e.msg.contains("news"), "{}", e.msg);
        assert!(shop.may_serve("sho").is_err() && shop.may_serve("shop2").is_err());
        assert!(Caller::Key(&keys[0]).may_serve("news").is_ok());
        assert!(Caller::Any.may_serve("news").is_ok());
    }
}
