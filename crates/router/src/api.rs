//! The backend HTTP push API (SPEC §3), compatible with go-websocket:
//! `POST /api/websocket/<call>` with a JSON body, the tenant in a
//! `systemId` (or `bizCode`) header, `{code,msg,data}` replies.
//!
//! Every call needs a Bearer key (401 otherwise); a key scoped to some
//! bizCodes ([`ApiKey`](crate::config::ApiKey)) gets 403 for any other,
//! before anything is looked up or done for it. The checks run in this
//! order: key (401), call (404), method (405), bus (503), tenant headers
//! (400), body size (413); then, for `register`, the body and the bizCode
//! it names (400, 403) and the rate limit (429); for every other call, the
//! tenant's bizCode (400), its scope (403; `set_limits`, `set_webhook`
//! and `get_webhook` need a global key), the rate limit per key and bizCode (429/1005, `rate`), its
//! registration (404), then the body (400).
//!
//! Files, one concept each (this one serves a call end to end):
//! - `call`: the calls, parsed once from the path;
//! - `keys`: which key is calling and what it may serve;
//! - `rate`: the rate limit per API key and bizCode;
//! - `waits`: the cap on sends waiting for delivery receipts;
//! - `body`: the request body, the tenant headers, their checks;
//! - `error`: every refusal, mapped to status + `{code,msg}` in one place.
//!
//! Client mistakes are not logged as errors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::json;
use switchboard_protocol::envelope::BizLimits;
use switchboard_protocol::frame::SendTarget;
use switchboard_protocol::ids::IdKind;
use switchboard_protocol::{ErrorCode, RefusalCode};
use switchboard_runtime::http::{self as h, Handler, Response, ResponseFuture};
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::ops::{self, Health};

use crate::config::ApiConfig;
use crate::core::{HistoryQuery, Router, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
use crate::error::RouterError;
use crate::outbound::Outbound;
use crate::webhook::{WebhookChange, WebhookError, Webhooks};

mod body;
mod call;
mod error;
/// The `api_body` fuzz target (`fuzz/`), not API.
#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod rate;
mod waits;

use body::{check_id, parse, required, same_tenant, tenant, Body};
use call::{Call, Op};
use error::{ok, ApiError};
use keys::{matching_key, Caller};
use rate::ApiRate;
use waits::{ApiWaits, Slot};

/// The path prefix of every call.
pub const PREFIX: &str = "/api/websocket/";

/// The `call` label of requests that name no call.
const UNKNOWN_CALL_LABEL: &str = "unknown";

/// The API handler (router and standalone).
#[derive(Clone)]
pub struct Api {
    router: Router,
    config: Arc<ApiConfig>,
    /// Calls per (API key, bizCode).
    rate: Arc<ApiRate>,
    /// Sends waiting for receipts, per API key and in total.
    waits: Arc<ApiWaits>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// `set_webhook`/`get_webhook`; `None` with events off (the calls
    /// answer 400).
    webhooks: Option<Webhooks>,
}

#[derive(Serialize)]
struct GroupCount {
    #[serde(rename = "groupName")]
    group_name: String,
    count: usize,
}

/// One node of `get_node_counts`: its id and the bizCode's clients on it.
#[derive(Serialize)]
struct NodeCount {
    node: String,
    count: u32,
}

fn new_message_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl Api {
    /// An API over `router`.
    pub fn new(router: Router, config: ApiConfig, health: Arc<Health>, metrics: Arc<Metrics>) -> Self {
        Self {
            router,
            rate: Arc::new(ApiRate::new(config.rate_per_sec, config.rate_burst)),
            waits: Arc::new(ApiWaits::new(
                config.max_receipt_waits,
                config.max_receipt_waits_per_key,
            )),
            config: Arc::new(config),
            health,
            metrics,
            webhooks: None,
        }
    }

    /// Serves `set_webhook` and `get_webhook` with `webhooks`.
    #[must_use]
    pub fn with_webhooks(mut self, webhooks: Webhooks) -> Self {
        self.webhooks = Some(webhooks);
        self
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
        let call = req.uri().path().strip_prefix(PREFIX).and_then(Call::parse);
        let res = match self.call(call, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        let label = call.map_or(UNKNOWN_CALL_LABEL, Call::name);
        self.metrics
            .api_request(label, res.status().as_u16(), started.elapsed().as_secs_f64());
        res
    }

    async fn call(&self, call: Option<Call>, req: Request<Incoming>) -> Result<Response, ApiError> {
        let caller = self.caller(req.headers()).ok_or(ApiError::Unauthorized)?;
        let call = call.ok_or(ApiError::UnknownCall)?;
        if req.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed);
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
            return Err(ApiError::TooLarge { limit });
        }
        let body = match Limited::new(req.into_body(), limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Err(ApiError::TooLarge { limit })
            }
            Err(_) => return Err(ApiError::bad("could not read the body")),
        };
        let op = match call {
            Call::Register => return self.register(caller, tenant, &body).await,
            Call::Tenant(op) => op,
        };
        let biz = tenant.ok_or_else(|| ApiError::bad("the systemId (or bizCode) header is required"))?;
        check_id(IdKind::Biz, &biz)?;
        caller.may_serve(&biz)?;
        if matches!(op, Op::SetLimits | Op::SetWebhook | Op::GetWebhook) {
            caller.must_be_global()?;
        }
        self.check_rate(caller, &biz)?;
        if self.config.require_registration && !self.router.is_registered(&biz).await? {
            return Err(ErrorCode::UnknownBiz.into());
        }
        self.dispatch(op, caller, &biz, &body).await
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
        self.check_rate(caller, &biz)?;
        self.router.register(&biz).await?;
        if let Some(on) = b.history {
            self.router.set_history(&biz, on).await?;
        }
        Ok(ok(json!({})))
    }

    /// Takes one call of `caller`'s budget for `biz` (429/1005 past it).
    fn check_rate(&self, caller: Caller<'_>, biz: &str) -> Result<(), ApiError> {
        if self.rate.allow(caller.id(&self.config.keys), biz) {
            Ok(())
        } else {
            self.metrics.api_rate_limited.inc();
            Err(ApiError::RateLimited)
        }
    }

    /// A slot for a send that waits `timeout` for its receipt (429/1005
    /// past `api.max_receipt_waits` or `api.max_receipt_waits_per_key`);
    /// `None` without a timeout.
    fn receipt_slot(&self, caller: Caller<'_>, timeout: Option<Duration>) -> Result<Option<Slot>, ApiError> {
        if timeout.is_none() {
            return Ok(None);
        }
        match self.waits.take(caller.id(&self.config.keys)) {
            Some(slot) => Ok(Some(slot)),
            None => {
                self.metrics.receipt_refusals.inc();
                Err(ApiError::TooManyWaits)
            }
        }
    }

    /// A send through the router (no origin: every member is a recipient).
    async fn route(&self, biz: &str, target: SendTarget, m: &Body) -> Result<Response, ApiError> {
        let content = m.content()?;
        let message_id = new_message_id();
        let recipients = self
            .route_as(biz, &target, m.from(), &message_id, &content, false)
            .await?;
        Ok(ok(json!({"messageId": message_id, "recipients": recipients})))
    }

    /// Routes one API send; `ack`: its delivery asks for acks.
    async fn route_as(
        &self,
        biz: &str,
        target: &SendTarget,
        from: &str,
        msg_id: &str,
        content: &str,
        ack: bool,
    ) -> Result<u32, ApiError> {
        let send = Outbound {
            origin: None,
            biz,
            from,
            msg_id: Some(msg_id),
            target,
            content,
            ack,
        };
        Ok(self.router.route_one(send).await?)
    }

    /// `send_to_client` (one client) or `send_to_clients`; with
    /// `ackTimeoutMs` the delivery asks for acks, and the reply waits for
    /// them (or the timeout) and adds `acked` and `unacked`.
    async fn send_to_clients(
        &self,
        caller: Caller<'_>,
        biz: &str,
        clients: &[String],
        one: bool,
        m: &Body,
    ) -> Result<Response, ApiError> {
        let content = m.content()?;
        let timeout = m.ack_timeout()?;
        let slot = self.receipt_slot(caller, timeout)?;
        let message_id = new_message_id();
        let wait = timeout.map(|t| {
            let to: Vec<&str> = clients.iter().map(String::as_str).collect();
            self.router.expect_acks(biz, &message_id, &to, t)
        });
        let ack = wait.is_some();
        let recipients = match (one, clients) {
            (true, [client]) => {
                let target = SendTarget::Client(client.clone());
                self.route_as(biz, &target, m.from(), &message_id, &content, ack)
                    .await?
            }
            _ => {
                self.router
                    .send_clients(biz, clients, m.from(), &message_id, &content, ack)
                    .await?
            }
        };
        let Some(wait) = wait else {
            return Ok(ok(json!({"messageId": message_id, "recipients": recipients})));
        };
        if (recipients as usize) < clients.len() {
            // Some are not online: wait only for those that may recover.
            self.router.forgo_unreachable(&wait, biz, clients).await;
        }
        let out = wait.finish().await;
        drop(slot);
        Ok(ok(json!({
            "messageId": message_id,
            "recipients": recipients,
            "acked": out.acked,
            "unacked": out.unacked,
        })))
    }

    async fn dispatch(&self, op: Op, caller: Caller<'_>, biz: &str, body: &Bytes) -> Result<Response, ApiError> {
        let b: Body = parse(body)?;
        same_tenant(b.system_id.as_deref(), biz)?;
        match op {
            Op::SendToClient => {
                let client = required(b.client_id.clone(), "clientId")?;
                check_id(IdKind::Client, &client)?;
                self.send_to_clients(caller, biz, &[client], true, &b).await
            }
            Op::SendToClients => {
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
                self.send_to_clients(caller, biz, clients, false, &b).await
            }
            Op::SendToGroup => {
                let group = required(b.group_name.clone(), "groupName")?;
                check_id(IdKind::Group, &group)?;
                self.route(biz, SendTarget::Group(group), &b).await
            }
            Op::SendToSystem => self.route(biz, SendTarget::Biz, &b).await,
            Op::BindToGroup | Op::UnbindFromGroup => {
                let client = required(b.client_id, "clientId")?;
                let group = required(b.group_name, "groupName")?;
                check_id(IdKind::Client, &client)?;
                check_id(IdKind::Group, &group)?;
                let join = op == Op::BindToGroup;
                self.router.set_group(biz, &client, &group, join).await?;
                Ok(ok(json!({})))
            }
            Op::GetOnlineList => {
                let group = b.group_name.filter(|g| !g.is_empty());
                if let Some(g) = &group {
                    check_id(IdKind::Group, g)?;
                }
                let list = self.router.online_list(biz, group.as_deref());
                Ok(ok(json!({"count": list.len(), "list": list})))
            }
            Op::GetAllGroups => {
                let list: Vec<GroupCount> = self
                    .router
                    .all_groups(biz)
                    .into_iter()
                    .map(|(group_name, count)| GroupCount { group_name, count })
                    .collect();
                Ok(ok(json!({"count": list.len(), "list": list})))
            }
            Op::GetNodeCounts => {
                let list: Vec<NodeCount> = self
                    .router
                    .node_counts(biz)
                    .into_iter()
                    .map(|(node, count)| NodeCount { node, count })
                    .collect();
                Ok(ok(json!({"count": list.len(), "list": list})))
            }
            Op::CloseClient => {
                let client = required(b.client_id, "clientId")?;
                check_id(IdKind::Client, &client)?;
                self.router.close_client(biz, &client).await?;
                Ok(ok(json!({})))
            }
            Op::GetHistory => {
                let q = history_query(b)?;
                let page = self.router.get_history(biz, &q).await?;
                let list: Vec<&serde_json::value::RawValue> = page
                    .list
                    .iter()
                    .filter_map(|f| std::str::from_utf8(f).ok())
                    .filter_map(|f| serde_json::from_str(f).ok())
                    .collect();
                Ok(ok(
                    json!({"epoch": page.epoch, "seq": page.seq, "count": list.len(), "list": list}),
                ))
            }
            Op::DeleteHistory => {
                let (epoch, seq) = self.router.delete_history(biz).await?;
                Ok(ok(json!({"epoch": epoch, "seq": seq})))
            }
            Op::SetLimits => {
                let limits = self.router.set_limits(biz, biz_limits(&b)?).await?;
                Ok(ok(limits_json(limits)))
            }
            Op::GetLimits => Ok(ok(limits_json(self.router.limits(biz).await?))),
            Op::SetWebhook | Op::GetWebhook => self.webhook(op, biz, b).await,
        }
    }

    /// `set_webhook` / `get_webhook`: `{"webhook": {...}|null}`, with
    /// `secret` when one was issued.
    async fn webhook(&self, op: Op, biz: &str, b: Body) -> Result<Response, ApiError> {
        let hooks = self.webhooks.as_ref().ok_or_else(|| {
            ApiError::bad("webhooks are off here: they deliver connection events (events.enabled = false)")
        })?;
        let view = if op == Op::SetWebhook {
            let change = WebhookChange {
                url: b.url,
                kinds: b.kinds,
                rotate_secret: b.rotate_secret.unwrap_or(false),
            };
            hooks.set(biz, change).await
        } else {
            hooks.get(biz).await
        };
        match view {
            Ok(v) => Ok(ok(json!({ "webhook": v }))),
            Err(WebhookError::Invalid(m)) => Err(ApiError::bad(m)),
            Err(WebhookError::Store(e)) => Err(RouterError::from(e).into()),
            Err(WebhookError::Bus) => Err(ErrorCode::Internal.into()),
            Err(WebhookError::Contended) => Err(RouterError::Contended(8).into()),
        }
    }
}

/// Largest `maxConnections`.
const MAX_LIMIT_CONNECTIONS: u64 = 10_000_000;
/// Largest `sendsPerSec` and `sendsBurst`.
const MAX_LIMIT_SENDS: u64 = 1_000_000;

/// `set_limits`' limits: each absent, null or 0 is off; `sendsBurst`
/// without `sendsPerSec` is refused.
fn biz_limits(b: &Body) -> Result<BizLimits, ApiError> {
    let field = |v: Option<u64>, name: &str, max: u64| {
        let v = v.unwrap_or(0);
        u32::try_from(v)
            .ok()
            .filter(|_| v <= max)
            .ok_or_else(|| ApiError::bad(format!("{name} must be between 0 and {max}")))
    };
    let limits = BizLimits {
        max_connections: field(b.max_connections, "maxConnections", MAX_LIMIT_CONNECTIONS)?,
        sends_per_sec: field(b.sends_per_sec, "sendsPerSec", MAX_LIMIT_SENDS)?,
        sends_burst: field(b.sends_burst, "sendsBurst", MAX_LIMIT_SENDS)?,
    };
    if limits.sends_per_sec == 0 && limits.sends_burst > 0 {
        return Err(ApiError::bad("sendsBurst needs sendsPerSec"));
    }
    Ok(limits)
}

/// A bizCode's limits as the API shows them (0: off; `sendsBurst` as
/// applied).
fn limits_json(l: BizLimits) -> serde_json::Value {
    json!({
        "maxConnections": l.max_connections,
        "sendsPerSec": l.sends_per_sec,
        "sendsBurst": l.burst(),
    })
}

/// `get_history`'s question: a client or a group (not both), `since`,
/// `limit` (default 100, at most 1,000).
fn history_query(b: Body) -> Result<HistoryQuery, ApiError> {
    let client = b.client_id.filter(|c| !c.is_empty());
    let group = b.group_name.filter(|g| !g.is_empty());
    if client.is_some() && group.is_some() {
        return Err(ApiError::bad("name a clientId or a groupName, not both"));
    }
    if let Some(c) = &client {
        check_id(IdKind::Client, c)?;
    }
    if let Some(g) = &group {
        check_id(IdKind::Group, g)?;
    }
    let limit = match b.limit {
        None => DEFAULT_HISTORY_LIMIT,
        Some(n) if (1..=MAX_HISTORY_LIMIT as u64).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::bad(format!(
                "limit must be between 1 and {MAX_HISTORY_LIMIT}"
            )))
        }
    };
    if b.since.is_some_and(|s| s > switchboard_log::MAX_SEQ) {
        return Err(ApiError::bad("since must be a seq (at most 2^53-1)"));
    }
    Ok(HistoryQuery {
        client,
        group,
        since: b.since,
        limit,
    })
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
            .unwrap_or_else(|| h::error(StatusCode::NOT_FOUND, RefusalCode::NotFound.as_u16(), "not found"));
        Box::pin(std::future::ready(res))
    }
}
