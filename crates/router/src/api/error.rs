//! Why an API call was refused, mapped to HTTP status + `{code,msg,data}`
//! in one place ([`ApiError::into_response`]).
//!
//! Refusals before a call is served use the HTTP-status-like
//! [`RefusalCode`]s (401, 403, 404, 405); a body over the limit is 413 with
//! code 1003, a client mistake 400 with 1001, and a failure of the router
//! core the status of its [`ErrorCode`]. Internal errors answer a generic
//! message; the core has logged the cause.

use http::{header, StatusCode};
use serde::Serialize;
use serde_json::Value;
use switchboard_protocol::{ErrorCode, RefusalCode};
use switchboard_runtime::http::{self as h, Response};

use crate::error::RouterError;

/// A refused call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// No Bearer key, or not one of ours (401).
    Unauthorized,
    /// The key is scoped to other bizCodes (403).
    Forbidden {
        /// The bizCode asked for.
        biz: String,
    },
    /// A call only a global key may make, with a scoped key (403).
    NotGlobal,
    /// Over `api.rate_per_sec` for this key and bizCode (429, code 1005,
    /// `Retry-After`).
    RateLimited,
    /// Too many sends wait for their delivery receipts
    /// (`api.max_receipt_waits`, `api.max_receipt_waits_per_key`): 429,
    /// code 1005, `Retry-After`.
    TooManyWaits,
    /// No such call (404).
    UnknownCall,
    /// Not a POST (405).
    MethodNotAllowed,
    /// The body is over `api.max_body_bytes` (413, code 1003).
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The request is malformed: what is wrong (400, code 1001).
    Invalid(String),
    /// A refusal with a code of its own.
    Code(ErrorCode),
}

impl ApiError {
    /// A malformed request.
    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    /// The status and `code` of the answer.
    pub(crate) fn status_and_code(&self) -> (StatusCode, u16) {
        let refusal = |code: RefusalCode| {
            let status = match code {
                RefusalCode::Unauthorized => StatusCode::UNAUTHORIZED,
                RefusalCode::Forbidden => StatusCode::FORBIDDEN,
                RefusalCode::NotFound => StatusCode::NOT_FOUND,
                RefusalCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
                RefusalCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                RefusalCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            };
            (status, code.as_u16())
        };
        match self {
            Self::Unauthorized => refusal(RefusalCode::Unauthorized),
            Self::Forbidden { .. } | Self::NotGlobal => refusal(RefusalCode::Forbidden),
            Self::RateLimited | Self::TooManyWaits => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited.as_u16()),
            Self::UnknownCall => refusal(RefusalCode::NotFound),
            Self::MethodNotAllowed => refusal(RefusalCode::MethodNotAllowed),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge.as_u16()),
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidFrame.as_u16()),
            Self::Code(code) => {
                let status = match code {
                    ErrorCode::Ok => StatusCode::OK,
                    ErrorCode::InvalidFrame | ErrorCode::UnknownMode => StatusCode::BAD_REQUEST,
                    ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::Offline | ErrorCode::UnknownBiz => StatusCode::NOT_FOUND,
                    ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                    ErrorCode::Internal => StatusCode::SERVICE_UNAVAILABLE,
                };
                (status, code.as_u16())
            }
        }
    }

    /// The `msg` of the answer.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Unauthorized => "missing or invalid API key".to_owned(),
            Self::Forbidden { biz } => format!("this API key is not allowed for bizCode {biz}"),
            Self::NotGlobal => "only a global API key may call this".to_owned(),
            Self::RateLimited => "rate limited: too many calls for this API key and bizCode".to_owned(),
            Self::TooManyWaits => "too many sends are waiting for delivery receipts; retry later".to_owned(),
            Self::UnknownCall => "unknown API call".to_owned(),
            Self::MethodNotAllowed => "use POST".to_owned(),
            Self::TooLarge { limit } => format!("body over {limit} bytes"),
            Self::Invalid(msg) => msg.clone(),
            Self::Code(code) => code.message().to_owned(),
        }
    }

    /// The answer: status, `{code, msg, data: null}`, `Allow: POST` on a
    /// 405 and `Retry-After` on a 429.
    pub(crate) fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut res = reply(status, code, &self.message(), Value::Null);
        if self == Self::MethodNotAllowed {
            res.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            // A token comes back within a second at any rate limit.
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        res
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self::Code(code)
    }
}

impl From<RouterError> for ApiError {
    fn from(e: RouterError) -> Self {
        match e {
            // Same status and code (400/1001), with the reason.
            RouterError::TooManyGroups(max) => {
                Self::Invalid(format!("the client is in too many groups (at most {max})"))
            }
            RouterError::HistoryOff => Self::Invalid("history is off for this bizCode".into()),
            e => Self::Code(e.code()),
        }
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

/// A served call: 200, `{code: 0, msg: "success", data}`.
pub(crate) fn ok(data: Value) -> Response {
    let code = ErrorCode::Ok;
    reply(StatusCode::OK, code.as_u16(), code.message(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_groups_says_so_with_the_bind_refusal_code() {
        let e = ApiError::from(RouterError::TooManyGroups(1024));
        assert_eq!(
            e.status_and_code(),
            (StatusCode::BAD_REQUEST, ErrorCode::InvalidFrame.as_u16())
        );
        assert_eq!(e.message(), "the client is in too many groups (at most 1024)");
    }

    #[test]
    fn rate_limited_is_429_with_1005_and_retry_after() {
        let res = ApiError::RateLimited.into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            ApiError::RateLimited.status_and_code().1,
            ErrorCode::RateLimited.as_u16()
        );
    }
}
