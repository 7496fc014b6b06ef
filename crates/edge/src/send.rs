//! What a client's text message does: a heartbeat is answered at once; a
//! send (mode 100, 200, 300) is checked (size, ids, send policy, the
//! connection's rate, then its bizCode's) and asked of a router, and its
//! mode-2 reply says how it went. An upstream message (mode 500) passes
//! the same size, policy and rate checks and is stored as an event
//! ([`crate::events`]).
//!
//! Sends of one connection are routed one at a time, in order: the reader
//! awaits each before it reads the next frame.

use std::time::Instant;

use switchboard_protocol::envelope::Route;
use switchboard_protocol::frame::{self, ClientFrame, SendTarget};
use switchboard_protocol::ids::{self, IdKind};
use switchboard_protocol::ErrorCode;

use crate::edge::EdgeInner;
use crate::registry::Conn;
use crate::tenant::Tenant;

/// Per-connection token bucket and abuse counter (lives in the reader).
pub(crate) struct Limiter {
    tokens: f64,
    last: Instant,
    /// Sends refused in a row by the rate limit (`edge.abuse_limit`
    /// closes the connection with 1008).
    pub(crate) refused_in_a_row: u32,
}

impl Limiter {
    pub(crate) fn new(burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            last: Instant::now(),
            refused_in_a_row: 0,
        }
    }

    fn allow(&mut self, rate: u32, burst: u32) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * f64::from(rate)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            true
        } else {
            self.refused_in_a_row += 1;
            false
        }
    }
}

/// Handles one text message of a welcomed client of `tenant`'s bizCode.
pub(crate) async fn handle_text(
    edge: &EdgeInner,
    conn: &Conn,
    text: &[u8],
    limiter: &mut Limiter,
    tenant: Option<&Tenant>,
) {
    if text.len() > edge.config().max_frame_bytes {
        edge.metrics().frames_received.get(u16::MAX).inc();
        edge.reply(conn, None, ErrorCode::TooLarge, "frame over the size limit", None);
        return;
    }
    let send = match frame::parse_client_frame(text) {
        Ok(ClientFrame::Heartbeat { msg_id }) => {
            edge.metrics().frames_received.get(frame::MODE_HEARTBEAT).inc();
            let reply = frame::heartbeat_reply(msg_id.as_deref(), switchboard_runtime::now_ms());
            edge.push(conn, frame::MODE_HEARTBEAT, &reply);
            return;
        }
        Ok(ClientFrame::Send(send)) => send,
        Ok(ClientFrame::Upstream(up)) => {
            edge.metrics().frames_received.get(frame::MODE_UPSTREAM).inc();
            let msg_id = up.msg_id.as_deref();
            if !edge.config().send_modes.contains(&frame::MODE_UPSTREAM) {
                refuse(edge, conn, msg_id, ErrorCode::Forbidden);
            } else if let Some(code) = over_rate(edge, limiter, tenant) {
                refuse(edge, conn, msg_id, code);
            } else {
                Box::pin(crate::events::upstream(edge, conn, up)).await;
            }
            return;
        }
        Err(e) => {
            edge.metrics().frames_received.get(u16::MAX).inc();
            edge.reply(conn, e.msg_id.as_deref(), e.code, e.detail, None);
            return;
        }
    };
    edge.metrics().frames_received.get(send.target.mode()).inc();
    let msg_id = send.msg_id;
    let bad_id = match &send.target {
        SendTarget::Client(c) => ids::validate(IdKind::Client, c).err(),
        SendTarget::Group(g) => ids::validate(IdKind::Group, g).err(),
        SendTarget::Biz => None,
    };
    if let Some(e) = bad_id {
        let code = if matches!(send.target, SendTarget::Client(_)) {
            // No such client can be online.
            ErrorCode::Offline
        } else {
            ErrorCode::InvalidFrame
        };
        edge.reply(conn, msg_id.as_deref(), code, &e.to_string(), None);
        return;
    }
    let forbidden = !edge.config().send_modes.contains(&send.target.mode())
        || matches!(&send.target, SendTarget::Group(g)
            if (edge.config().group_send_requires_membership && !conn.in_group(g))
                || conn.send_groups.as_ref().is_some_and(|allowed| !allowed.iter().any(|a| a == g)));
    if forbidden {
        refuse(edge, conn, msg_id.as_deref(), ErrorCode::Forbidden);
        return;
    }
    if let Some(code) = over_rate(edge, limiter, tenant) {
        refuse(edge, conn, msg_id.as_deref(), code);
        return;
    }
    let started = Instant::now();
    let route = Route {
        node: edge.node_id().to_owned(),
        conn: conn.id,
        biz: conn.biz.to_string(),
        from: conn.client.to_string(),
        msg_id,
        target: send.target,
        content: send.content,
    };
    let msg_id = route.msg_id.clone();
    match edge.router().route(route).await {
        Ok(r) => {
            edge.metrics().send_duration.observe(started.elapsed().as_secs_f64());
            let code = ErrorCode::from_u16(r.code).unwrap_or(ErrorCode::Internal);
            let recipients = (code == ErrorCode::Ok).then_some(r.recipients);
            edge.reply(conn, msg_id.as_deref(), code, code.message(), recipients);
        }
        Err(e) => {
            tracing::warn!(conn_id = conn.id, error = %e, "route failed");
            refuse(edge, conn, msg_id.as_deref(), ErrorCode::Internal);
        }
    }
}

/// The connection's rate, then its bizCode's: `Some(1005)` when a send
/// (or an upstream message) is over either.
fn over_rate(edge: &EdgeInner, limiter: &mut Limiter, tenant: Option<&Tenant>) -> Option<ErrorCode> {
    if !limiter.allow(edge.config().rate_per_sec, edge.config().rate_burst) {
        return Some(ErrorCode::RateLimited);
    }
    // The bizCode's own sends limit, shared by its connections here. Not
    // the connection's fault: it does not count toward `abuse_limit`.
    if tenant.is_some_and(|t| !t.allow_send()) {
        edge.metrics().biz_send_refusals.inc();
        return Some(ErrorCode::RateLimited);
    }
    None
}

/// Replies to a send with `code` and its standard message.
fn refuse(edge: &EdgeInner, conn: &Conn, msg_id: Option<&str>, code: ErrorCode) {
    edge.reply(conn, msg_id, code, code.message(), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_burst_then_refuses() {
        let mut l = Limiter::new(3);
        assert!(l.allow(1, 3) && l.allow(1, 3) && l.allow(1, 3));
        assert!(!l.allow(1, 3));
        assert_eq!(l.refused_in_a_row, 1);
    }
}
