//! Reply codes and close codes (SPEC §2 "Errors and limits").

/// The `code` of a mode-2 reply or an HTTP API answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Success.
    Ok = 0,
    /// Invalid frame: not JSON, not an object, missing or wrong-typed field.
    InvalidFrame = 1001,
    /// Unknown mode.
    UnknownMode = 1002,
    /// Frame or content over the size limit.
    TooLarge = 1003,
    /// Unicast target is not online.
    Offline = 1004,
    /// Rate limited.
    RateLimited = 1005,
    /// Forbidden by the send policy.
    Forbidden = 1006,
    /// Unknown bizCode (registration required and not registered).
    UnknownBiz = 1007,
    /// Internal error or bus unavailable: retry.
    Internal = 1500,
}

impl ErrorCode {
    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a number, if it is one of ours.
    pub fn from_u16(n: u16) -> Option<Self> {
        Some(match n {
            0 => Self::Ok,
            1001 => Self::InvalidFrame,
            1002 => Self::UnknownMode,
            1003 => Self::TooLarge,
            1004 => Self::Offline,
            1005 => Self::RateLimited,
            1006 => Self::Forbidden,
            1007 => Self::UnknownBiz,
            1500 => Self::Internal,
            _ => return None,
        })
    }

    /// The human text that goes with the code in `msg`.
    pub fn message(self) -> &'static str {
        match self {
            Self::Ok => "success",
            Self::InvalidFrame => "invalid frame",
            Self::UnknownMode => "unknown mode",
            Self::TooLarge => "frame too large",
            Self::Offline => "target is not online",
            Self::RateLimited => "rate limited",
            Self::Forbidden => "forbidden by the send policy",
            Self::UnknownBiz => "unknown bizCode",
            Self::Internal => "internal error, retry",
        }
    }
}

/// The `code` of refusals before the WebSocket upgrade and of HTTP API
/// refusals that have no code of their own: the HTTP status itself (SPEC
/// §3), so `{code, msg}` bodies stay one shape across the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum RefusalCode {
    /// 401: missing, invalid or expired credentials (token, API key).
    Unauthorized = 401,
    /// 403: authenticated but not allowed (origin, bizCode of a token or
    /// of a scoped API key).
    Forbidden = 403,
    /// 404: no such path or API call.
    NotFound = 404,
    /// 405: wrong HTTP method.
    MethodNotAllowed = 405,
    /// 413: request body over `api.max_body_bytes`.
    PayloadTooLarge = 413,
    /// 429: a connection limit (per address, per bizCode, pending
    /// handshakes) is reached; `Retry-After` says when to retry.
    TooManyRequests = 429,
}

impl RefusalCode {
    /// The numeric code, equal to the HTTP status.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a number, if it is one of these.
    pub fn from_u16(n: u16) -> Option<Self> {
        Some(match n {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            413 => Self::PayloadTooLarge,
            429 => Self::TooManyRequests,
            _ => return None,
        })
    }
}

/// WebSocket close codes the gateway sends (SPEC §2): every close frame an
/// edge writes carries one of these, with its [`reason`](Self::reason).
///
/// [`reconnect`](Self::reconnect) tells a client SDK whether reconnecting
/// makes sense (model: centrifuge `disconnect.go`): 1001, 1012, 1013 and
/// 4008 reconnect with jittered backoff, 4001 reconnects with a fresh
/// token, the others are terminal. Reasons stay under 123 bytes.
///
/// A client's own valid close frame is always answered with [`Normal`]
/// (1000), whatever code it carried: RFC 6455 §5.5.1 lets the answer echo
/// the code or not, SPEC §2 says a valid client close is answered 1000, and
/// 1000 carries no reason of ours that could mislead (a client that sent
/// 4001 did not have its token expire). So no variant carries a client's
/// code, and every code on the wire is one of these.
///
/// [`Normal`]: Self::Normal
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// 1000: normal closure; the answer to a client's valid close frame.
    Normal = 1000,
    /// 1001: going away (idle timeout, server shutdown).
    GoingAway = 1001,
    /// 1002: protocol error (RFC 6455: unmasked or malformed frame, bad
    /// fragmentation, invalid close frame).
    ProtocolError = 1002,
    /// 1007: invalid payload data (text that is not UTF-8).
    InvalidPayload = 1007,
    /// 1008: policy violation (repeated abuse after rate limiting).
    Policy = 1008,
    /// 1009: message too big (a frame over the hard limit).
    TooBig = 1009,
    /// 1012: node draining, reconnect elsewhere.
    Draining = 1012,
    /// 1013: try again later (presence could not be registered).
    TryAgainLater = 1013,
    /// 4000: closed by the API (`close_client`).
    ClosedByApi = 4000,
    /// 4001: token expired; reconnect with a fresh token.
    TokenExpired = 4001,
    /// 4008: slow consumer, its send queue overflowed.
    SlowConsumer = 4008,
    /// 4009: replaced by a newer connection with the same bizCode+clientId.
    Replaced = 4009,
}

impl CloseCode {
    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a number, if it is one of ours.
    pub fn from_u16(n: u16) -> Option<Self> {
        Some(match n {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            1002 => Self::ProtocolError,
            1007 => Self::InvalidPayload,
            1008 => Self::Policy,
            1009 => Self::TooBig,
            1012 => Self::Draining,
            1013 => Self::TryAgainLater,
            4000 => Self::ClosedByApi,
            4001 => Self::TokenExpired,
            4008 => Self::SlowConsumer,
            4009 => Self::Replaced,
            _ => return None,
        })
    }

    /// The reason text sent in the close frame (always < 123 bytes).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "normal closure",
            Self::GoingAway => "going away",
            Self::ProtocolError => "protocol error",
            Self::InvalidPayload => "invalid UTF-8",
            Self::Policy => "policy violation",
            Self::TooBig => "message too big",
            Self::Draining => "node draining, reconnect",
            Self::TryAgainLater => "try again later",
            Self::ClosedByApi => "closed by the API",
            Self::TokenExpired => "token expired",
            Self::SlowConsumer => "slow consumer",
            Self::Replaced => "replaced by a newer connection",
        }
    }

    /// Whether a client should reconnect after this close: true for 1001,
    /// 1012, 1013 and 4008 (with jittered backoff) and for 4001, after
    /// getting a fresh token (the expired one would be refused with 401).
    pub fn reconnect(self) -> bool {
        matches!(
            self,
            Self::GoingAway | Self::Draining | Self::TryAgainLater | Self::SlowConsumer | Self::TokenExpired
        )
    }

    /// Whether a peer may send `code` in a close frame (RFC 6455 §7.4.1,
    /// §7.4.2 and the IANA registry): 1000–1003, 1007–1014 and 3000–4999.
    /// 1004, 1005, 1006 and 1015 must never be sent on the wire.
    pub fn valid_on_wire(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_reasons_fit() {
        for n in [0u16, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1500] {
            let c = ErrorCode::from_u16(n).expect("known code");
            assert_eq!(c.as_u16(), n);
        }
        for n in [
            1000u16, 1001, 1002, 1007, 1008, 1009, 1012, 1013, 4000, 4001, 4008, 4009,
        ] {
            let c = CloseCode::from_u16(n).expect("known close code");
            assert_eq!(c.as_u16(), n);
            assert!(c.reason().len() < 123);
        }
        for n in [401u16, 403, 404, 405, 413, 429] {
            let c = RefusalCode::from_u16(n).expect("known refusal code");
            assert_eq!(c.as_u16(), n);
        }
        // SPEC §2: which closes mean "reconnect" (4001 with a fresh token).
        for n in [1001u16, 1012, 1013, 4008, 4001] {
            assert!(CloseCode::from_u16(n).is_some_and(CloseCode::reconnect), "{n}");
        }
        for n in [1000u16, 1002, 1007, 1008, 1009, 4000, 4009] {
            assert!(!CloseCode::from_u16(n).is_some_and(CloseCode::reconnect), "{n}");
        }
        for n in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert!(!CloseCode::valid_on_wire(n), "{n}");
        }
        for n in [1000u16, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(CloseCode::valid_on_wire(n), "{n}");
        }
    }
}
