//! Admission: every check an opening request passes before the upgrade
//! (SPEC §2 "Connecting"), in the order a client's mistake is cheapest to
//! report: node state, `Origin`, the query, the token, the HTTP handshake,
//! the connection caps (the one per bizCode may ask a router for the
//! bizCode's limits, once), then bizCode registration (may ask a router).
//!
//! A refusal is an [`AdmitError`]; [`AdmitError::into_response`] is the one
//! place that maps it to the HTTP status and the `{code, msg}` body (and
//! the headers RFC 6455 and SPEC §2 ask for with 426 and 429). Presence
//! and the welcome come after the upgrade, in the session.

use std::net::SocketAddr;

use http::{Request, StatusCode};
use switchboard_protocol::ids::{self, IdError, IdKind};
use switchboard_protocol::{ErrorCode, RefusalCode};
use switchboard_runtime::http::{self as h, Response};

use crate::address::{self, Slots};
use crate::auth::{self, AuthError};
use crate::edge::EdgeInner;
use crate::handshake::{self, HandshakeError, Recover, UpgradeError};
use crate::tenant::TenantSlot;

/// A server-assigned clientId: 16 lowercase hex chars.
pub fn new_client_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Who was admitted: what the session needs to register presence.
pub(crate) struct Admission {
    pub(crate) biz: String,
    pub(crate) client: String,
    pub(crate) groups: Vec<String>,
    /// Token expiry, seconds since the epoch (0: no token).
    pub(crate) expires_at: u64,
    /// The groups the token allows sending to (`None`: any).
    pub(crate) send_groups: Option<Box<[String]>>,
    /// The connection's place in the per-address count, held for its
    /// life (boxed, and only when the cap is on: an idle session keeps a
    /// pointer at most).
    pub(crate) slots: Option<Box<Slots>>,
    /// Its place in its bizCode's count and the bizCode's sends bucket,
    /// held for its life.
    pub(crate) tenant: Option<TenantSlot>,
    /// The recovery the client asked for (SPEC §7).
    pub(crate) recover: Option<Box<Recover>>,
}

/// Why an opening request was refused before the upgrade.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdmitError {
    /// The node is draining (SIGTERM): 503.
    #[error("node draining, reconnect elsewhere")]
    Draining,
    /// The bus is down, or no router answered the registration check: 503.
    #[error("bus unavailable")]
    BusDown,
    /// `Origin` is not in `edge.allowed_origins`: 403.
    #[error("origin not allowed")]
    Origin,
    /// The query broke the rules: 400.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// Authentication is on and no token came: 401.
    #[error("token required")]
    TokenRequired,
    /// The token did not verify: 401.
    #[error(transparent)]
    BadToken(#[from] AuthError),
    /// The token is for another bizCode: 403.
    #[error("the token does not allow this bizCode")]
    TokenBiz,
    /// The token is for another clientId: 403.
    #[error("the token does not allow this clientId")]
    TokenClient,
    /// The token names an invalid bizCode or clientId: 403.
    #[error("token: {0}")]
    TokenId(IdError),
    /// The token does not allow a group of the query: 403.
    #[error("the token does not allow group {0}")]
    TokenGroup(String),
    /// Not a WebSocket handshake we accept: 426 or 400.
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    /// The upgrade itself failed: 400.
    #[error("{0}")]
    UpgradeFailed(String),
    /// `edge.max_connections_per_address` reached: 429.
    #[error("too many connections from this address")]
    TooManyFromAddress,
    /// The bizCode's own connection limit or `edge.max_connections_per_biz`
    /// reached: 429.
    #[error("too many connections for this bizCode on this edge")]
    TooManyForBiz,
    /// Registration is required and the bizCode is not registered: 403.
    #[error("unknown bizCode")]
    UnknownBiz,
}

impl AdmitError {
    /// The HTTP status and the body's `code`.
    fn status_and_code(&self) -> (StatusCode, u16) {
        let forbidden = (StatusCode::FORBIDDEN, RefusalCode::Forbidden.as_u16());
        let unauthorized = (StatusCode::UNAUTHORIZED, RefusalCode::Unauthorized.as_u16());
        match self {
            Self::Draining | Self::BusDown => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Internal.as_u16()),
            Self::Origin | Self::TokenBiz | Self::TokenClient | Self::TokenId(_) | Self::TokenGroup(_) => forbidden,
            Self::TokenRequired | Self::BadToken(_) => unauthorized,
            Self::Handshake(_) | Self::UpgradeFailed(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidFrame.as_u16()),
            Self::Upgrade(e) => (e.status(), ErrorCode::InvalidFrame.as_u16()),
            Self::TooManyFromAddress | Self::TooManyForBiz => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited.as_u16())
            }
            Self::UnknownBiz => (StatusCode::FORBIDDEN, ErrorCode::UnknownBiz.as_u16()),
        }
    }

    /// The refusal as an HTTP answer: status, `{code, msg}`, and the
    /// headers that go with 426 (RFC 6455 §4.4: the version we speak, so a
    /// client can fall back) and 429 (`Retry-After`).
    pub(crate) fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut res = h::error(status, code, &self.to_string());
        let headers = res.headers_mut();
        if status == StatusCode::UPGRADE_REQUIRED {
            headers.insert(
                http::header::SEC_WEBSOCKET_VERSION,
                http::HeaderValue::from_static("13"),
            );
            headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("5"));
        }
        res
    }
}

/// Every check before the upgrade (SPEC §2 "Connecting").
///
/// # Errors
/// The first check that fails, as an [`AdmitError`].
pub(crate) async fn admit<B>(edge: &EdgeInner, req: &Request<B>, peer: SocketAddr) -> Result<Admission, AdmitError> {
    let config = edge.config();
    if edge.health().draining() {
        return Err(AdmitError::Draining);
    }
    if !edge.health().bus_up() {
        return Err(AdmitError::BusDown);
    }
    if !config.allowed_origins.is_empty() {
        if let Some(origin) = req.headers().get(http::header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            if !auth::origin_allowed(&config.allowed_origins, origin) {
                return Err(AdmitError::Origin);
            }
        }
    }
    let hs = handshake::parse(req.uri().query().unwrap_or(""), config.max_groups)?;
    let mut admission = match edge.verifier() {
        None => Admission {
            biz: hs.biz.ok_or(HandshakeError::MissingBiz)?,
            client: hs.client.unwrap_or_else(new_client_id),
            groups: hs.groups,
            expires_at: 0,
            send_groups: None,
            slots: None,
            tenant: None,
            recover: hs.recover.map(Box::new),
        },
        Some(verifier) => {
            let token = hs
                .token
                .as_deref()
                .or(h::bearer_token(req.headers()))
                .ok_or(AdmitError::TokenRequired)?;
            let claims = verifier.verify(token)?;
            if hs.biz.as_ref().is_some_and(|b| *b != claims.biz) {
                return Err(AdmitError::TokenBiz);
            }
            if hs.client.as_ref().is_some_and(|c| *c != claims.sub) {
                return Err(AdmitError::TokenClient);
            }
            ids::validate(IdKind::Biz, &claims.biz).map_err(AdmitError::TokenId)?;
            ids::validate(IdKind::Client, &claims.sub).map_err(AdmitError::TokenId)?;
            if let Some(allowed) = &claims.groups {
                if let Some(g) = hs.groups.iter().find(|g| !allowed.contains(g)) {
                    return Err(AdmitError::TokenGroup(g.clone()));
                }
            }
            Admission {
                biz: claims.biz,
                client: claims.sub,
                groups: hs.groups,
                expires_at: claims.expires_at,
                send_groups: claims.groups.map(Vec::into_boxed_slice),
                slots: None,
                tenant: None,
                recover: hs.recover.map(Box::new),
            }
        }
    };
    handshake::check_upgrade(req)?;
    let mut slots = Slots::default();
    if config.max_connections_per_address > 0 {
        let ip = address::client_addr(peer.ip(), req.headers(), &config.trusted_proxies);
        let slot = edge.addresses().acquire(&ip, config.max_connections_per_address);
        slots.address = Some(slot.ok_or(AdmitError::TooManyFromAddress)?);
    }
    let tenant = edge
        .tenants()
        .admit(edge.router().as_ref(), &admission.biz, config.max_connections_per_biz)
        .await;
    let Some(tenant) = tenant else {
        edge.metrics().biz_connection_refusals.inc();
        return Err(AdmitError::TooManyForBiz);
    };
    admission.tenant = Some(tenant);
    if slots.address.is_some() {
        admission.slots = Some(Box::new(slots));
    }
    if config.require_registration && !edge.is_known_biz(&admission.biz) {
        match edge.router().is_registered(&admission.biz).await {
            Ok(true) => edge.remember_biz(&admission.biz),
            Ok(false) => return Err(AdmitError::UnknownBiz),
            Err(e) => {
                tracing::warn!(error = %e, "registration check failed");
                return Err(AdmitError::BusDown);
            }
        }
    }
    Ok(admission)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_their_status_and_code() {
        let internal = ErrorCode::Internal.as_u16();
        let invalid = ErrorCode::InvalidFrame.as_u16();
        let limited = ErrorCode::RateLimited.as_u16();
        let forbidden = RefusalCode::Forbidden.as_u16();
        let cases = [
            (AdmitError::Draining, 503, internal),
            (AdmitError::BusDown, 503, internal),
            (AdmitError::Origin, 403, forbidden),
            (AdmitError::Handshake(HandshakeError::MissingBiz), 400, invalid),
            (AdmitError::TokenRequired, 401, RefusalCode::Unauthorized.as_u16()),
            (AdmitError::TokenBiz, 403, forbidden),
            (AdmitError::TokenGroup("g".into()), 403, forbidden),
            (AdmitError::Upgrade(UpgradeError::Version), 426, invalid),
            (AdmitError::Upgrade(UpgradeError::Key), 400, invalid),
            (AdmitError::TooManyFromAddress, 429, limited),
            (AdmitError::TooManyForBiz, 429, limited),
            (AdmitError::UnknownBiz, 403, ErrorCode::UnknownBiz.as_u16()),
        ];
        for (e, status, code) in cases {
            let name = format!("{e:?}");
            let (s, c) = e.status_and_code();
            assert_eq!((s.as_u16(), c), (status, code), "{name}");
        }
        assert_eq!(
            AdmitError::Handshake(HandshakeError::MissingBiz).to_string(),
            "bizCode is required"
        );
        let res = AdmitError::TooManyForBiz.into_response();
        assert_eq!(res.headers()[http::header::RETRY_AFTER], "5");
        let res = AdmitError::Upgrade(UpgradeError::NotUpgrade).into_response();
        assert_eq!(res.headers()[http::header::SEC_WEBSOCKET_VERSION], "13");
    }
}
