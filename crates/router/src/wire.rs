//! The router's answers on the bus: where a core result becomes the reply
//! an edge reads, for the NATS adapter ([`crate::nats`]) and `standalone`'s
//! in-process link alike, so both answer byte for byte the same.

use switchboard_protocol::envelope::{BizLimits, ConnectReply, ConnectedReply, LimitsReply, RouteReply};
use switchboard_protocol::ErrorCode;

use crate::core::Connected;
use crate::error::RouterError;

/// The answer to a disconnect, resync or drain.
pub fn connect_reply(result: &Result<(), RouterError>) -> ConnectReply {
    let code = match result {
        Ok(()) => ErrorCode::Ok,
        Err(e) => e.code(),
    };
    ConnectReply {
        code: code.as_u16(),
        recreated: 0,
    }
}

/// The answer to a resync: the code and how many entries it wrote again.
pub fn resync_reply((result, recreated): &(Result<(), RouterError>, u32)) -> ConnectReply {
    ConnectReply {
        recreated: *recreated,
        ..connect_reply(result)
    }
}

/// The answer to a connect: the code, the groups bound to the client and
/// where it joined its bizCode's log.
pub fn connected_reply(result: &Result<Connected, RouterError>) -> ConnectedReply {
    match result {
        Ok(c) => ConnectedReply {
            code: ErrorCode::Ok.as_u16(),
            groups: c.groups.clone(),
            history: c.history.clone(),
        },
        Err(e) => ConnectedReply {
            code: e.code().as_u16(),
            ..ConnectedReply::default()
        },
    }
}

/// The answer to a registration check: registered, not registered
/// ([`ErrorCode::UnknownBiz`]), or could not tell.
pub fn registered_reply(result: &Result<bool, RouterError>) -> ConnectReply {
    let code = match result {
        Ok(true) => ErrorCode::Ok,
        Ok(false) => ErrorCode::UnknownBiz,
        Err(e) => e.code(),
    };
    ConnectReply {
        code: code.as_u16(),
        recreated: 0,
    }
}

/// The answer to an edge's question about bizCodes' limits.
pub fn limits_reply(result: Result<Vec<BizLimits>, RouterError>) -> LimitsReply {
    match result {
        Ok(limits) => LimitsReply {
            code: ErrorCode::Ok.as_u16(),
            limits,
        },
        Err(e) => LimitsReply {
            code: e.code().as_u16(),
            limits: Vec::new(),
        },
    }
}

/// The answer to one routed send: how many connections it was routed to.
pub fn route_reply(result: &Result<u32, RouterError>) -> RouteReply {
    match result {
        Ok(recipients) => RouteReply {
            code: ErrorCode::Ok.as_u16(),
            recipients: *recipients,
        },
        Err(e) => RouteReply {
            code: e.code().as_u16(),
            recipients: 0,
        },
    }
}
