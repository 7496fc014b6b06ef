//! Connection events this edge observes (README "Connection events"):
//! `connected` once a connection's presence is registered, `disconnected`
//! (close code, reason, cause) when it ends, and `upstream` for a client's
//! mode-500 message, whose mode-2 reply comes once the event is stored.
//!
//! Emitting never blocks the session ([`Events::emit`]); an upstream
//! message waits for its store like a send waits for its route.

use switchboard_protocol::event::{Cause, EventKind};
use switchboard_protocol::frame::{self, Upstream};
use switchboard_protocol::{CloseCode, ErrorCode};
use switchboard_runtime::events::{EventError, Events};

use crate::edge::EdgeInner;
use crate::registry::Conn;

/// The code of a connection that ended without a close frame from us (the
/// client went away, or the socket broke): RFC 6455 §7.1.5 "abnormal
/// closure", never sent on the wire.
const ABNORMAL_CLOSURE: u16 = 1006;

/// `connected`: `conn`'s presence is registered (its welcome is next).
pub(crate) fn connected(edge: &EdgeInner, conn: &Conn) {
    if let Some(ev) = edge.events() {
        let e = ev
            .event(EventKind::Connected, &conn.biz, &conn.client)
            .with_conn(conn.id)
            .with_groups(conn.groups());
        ev.emit(e);
    }
}

/// `disconnected`: `conn` is over, closed with the code its outbox queued
/// (none: the client left or the socket broke, 1006).
pub(crate) fn disconnected(edge: &EdgeInner, conn: &Conn) {
    let Some(ev) = edge.events() else {
        return;
    };
    let (code, reason, cause) = match conn.outbox.close_code() {
        Some(code) => (code.as_u16(), code.reason(), cause(code, edge.is_draining())),
        None => (ABNORMAL_CLOSURE, "", Cause::Close),
    };
    let e = ev
        .event(EventKind::Disconnected, &conn.biz, &conn.client)
        .with_conn(conn.id)
        .with_close(code, reason, cause);
    ev.emit(e);
}

/// Why a connection closed with `code`; `draining`: this node is draining
/// (a 1012 otherwise is a recovery close).
fn cause(code: CloseCode, draining: bool) -> Cause {
    match code {
        CloseCode::Normal => Cause::Close,
        CloseCode::GoingAway => Cause::IdleTimeout,
        CloseCode::ProtocolError | CloseCode::InvalidPayload | CloseCode::Policy | CloseCode::TooBig => {
            Cause::ProtocolError
        }
        CloseCode::Draining if draining => Cause::Drain,
        CloseCode::Draining | CloseCode::TryAgainLater => Cause::Error,
        CloseCode::ClosedByApi => Cause::ApiClose,
        CloseCode::TokenExpired => Cause::TokenExpired,
        CloseCode::SlowConsumer => Cause::SlowConsumer,
        CloseCode::Replaced => Cause::Replaced,
    }
}

/// A mode-500 message, already past the size, policy and rate checks:
/// stored as an `upstream` event of the connection's own bizCode and
/// clientId, then answered (0, or 1500 when it was not stored; 1006 when
/// events are off).
pub(crate) async fn upstream(edge: &EdgeInner, conn: &Conn, up: Upstream) {
    let Some(ev) = edge.events() else {
        edge.reply(
            conn,
            up.msg_id.as_deref(),
            ErrorCode::Forbidden,
            "upstream messages are off (events.enabled = false)",
            None,
        );
        return;
    };
    let msg_id = up.msg_id.clone();
    let event = match ev
        .event(EventKind::Upstream, &conn.biz, &conn.client)
        .with_conn(conn.id)
        .with_upstream(up.msg_id, &up.content)
    {
        Ok(e) => e,
        Err(_) => {
            // The parser hands over one JSON value; kept for safety.
            edge.reply(
                conn,
                msg_id.as_deref(),
                ErrorCode::InvalidFrame,
                "content is not JSON",
                None,
            );
            return;
        }
    };
    match ev.store(event).await {
        Ok(()) => {
            let reply = frame::reply(msg_id.as_deref(), ErrorCode::Ok, ErrorCode::Ok.message(), None);
            edge.push(conn, frame::MODE_REPLY, &reply);
        }
        Err(e) => {
            if !matches!(e, EventError::Disabled) {
                tracing::warn!(conn_id = conn.id, biz = %conn.biz, client_id = %conn.client, error = %e, "upstream message not stored");
            }
            edge.reply(
                conn,
                msg_id.as_deref(),
                ErrorCode::Internal,
                ErrorCode::Internal.message(),
                None,
            );
        }
    }
}

/// Events of this edge, when on.
pub(crate) fn of(events: Option<&Events>) -> Option<&Events> {
    events.filter(|e| e.enabled())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_code_has_a_cause() {
        assert_eq!(cause(CloseCode::Replaced, false), Cause::Replaced);
        assert_eq!(cause(CloseCode::Draining, true), Cause::Drain);
        assert_eq!(cause(CloseCode::Draining, false), Cause::Error);
        assert_eq!(cause(CloseCode::ClosedByApi, false), Cause::ApiClose);
        assert_eq!(cause(CloseCode::SlowConsumer, false), Cause::SlowConsumer);
        assert_eq!(cause(CloseCode::GoingAway, false), Cause::IdleTimeout);
    }
}
