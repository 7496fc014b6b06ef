//! What a client's text message does: a heartbeat is answered at once; an
//! ack (mode 3) is stamped with the connection's bizCode and clientId and
//! handed to the routers (no reply); a send (mode 100, 200, 300) is
//! checked (size, ids, send policy, the connection's rate, then its
//! bizCode's, and for a unicast with `"ack":true` its receipts in flight)
//! and asked of a router, and its mode-2 reply says how it went. An
//! upstream message (mode 500) passes the same size, policy and rate
//! checks and is stored as an event ([`crate::events`]).
//!
//! Sends of one connection are routed one at a time, in order: the reader
//! awaits each before it reads the next frame.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use switchboard_protocol::envelope::{Ack, Route};
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
    /// Delivery receipt state, made on the connection's first ack or send
    /// with `"ack":true` (an idle connection pays nothing for it).
    acks: Option<Box<AckState>>,
}

/// A connection's acks and sends with `"ack":true`.
struct AckState {
    /// Acks forwarded: a token bucket of `edge.ack_rate_per_sec`.
    tokens: f64,
    last: Instant,
    /// When each send with `"ack":true` in flight stops counting (its
    /// receipt's deadline, plus a grace), oldest first; a receipt that
    /// arrives frees the oldest.
    in_flight: VecDeque<Instant>,
    /// `Conn::receipts` as last read.
    receipts_seen: u32,
}

/// How long past its ack timeout a send with `"ack":true` still counts as
/// in flight when its receipt never came (a router that died holding it).
const RECEIPT_GRACE: Duration = Duration::from_secs(5);

impl AckState {
    /// The state in `slot`, made with a full ack bucket for `rate` on first
    /// use.
    fn get(slot: &mut Option<Box<Self>>, rate: u32) -> &mut Self {
        slot.get_or_insert_with(|| {
            Box::new(Self {
                tokens: Self::burst(rate),
                last: Instant::now(),
                in_flight: VecDeque::new(),
                receipts_seen: 0,
            })
        })
    }

    /// Acks allowed at once: two seconds' worth.
    fn burst(rate: u32) -> f64 {
        f64::from(rate) * 2.0
    }

    /// Takes an ack token; `false` past the rate.
    fn allow_ack(&mut self, rate: u32) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * f64::from(rate);
        self.tokens = (self.tokens + refill).min(Self::burst(rate));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts a send with `"ack":true` that ends by `deadline`, unless
    /// `max` are in flight (after freeing those whose receipt came, per
    /// `receipts`, and those past their deadline).
    fn start(&mut self, receipts: u32, max: u32, deadline: Instant) -> bool {
        let arrived = receipts.wrapping_sub(self.receipts_seen) as usize;
        self.receipts_seen = receipts;
        let freed = arrived.min(self.in_flight.len());
        self.in_flight.drain(..freed);
        let now = Instant::now();
        while self.in_flight.front().is_some_and(|d| *d <= now) {
            self.in_flight.pop_front();
        }
        if self.in_flight.len() >= max as usize {
            return false;
        }
        self.in_flight.push_back(deadline);
        true
    }

    /// Gives back the slot [`AckState::start`] just took: the send failed
    /// and gets no receipt.
    fn give_back(&mut self) {
        self.in_flight.pop_back();
    }
}

impl Limiter {
    pub(crate) fn new(burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            last: Instant::now(),
            refused_in_a_row: 0,
            acks: None,
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
        Ok(ClientFrame::Ack { msg_id }) => {
            edge.metrics().frames_received.get(frame::MODE_ACK).inc();
            let rate = edge.config().ack_rate_per_sec;
            if !AckState::get(&mut limiter.acks, rate).allow_ack(rate) {
                edge.metrics().acks_dropped.inc();
                return;
            }
            // Stamped with the connection's own identity: a client acks
            // only for itself, within its bizCode.
            let ack = Ack {
                biz: conn.biz.to_string(),
                client: conn.client.to_string(),
                msg_id,
            };
            if let Err(e) = edge.router().ack(ack).await {
                edge.metrics().acks_dropped.inc();
                tracing::debug!(conn_id = conn.id, error = %e, "ack not forwarded");
            }
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
    let ack_timeout = edge.config().ack_timeout;
    if send.ack {
        let state = AckState::get(&mut limiter.acks, edge.config().ack_rate_per_sec);
        let receipts = conn.receipts.load(Ordering::Relaxed);
        if !state.start(
            receipts,
            edge.config().max_acks_in_flight,
            Instant::now() + ack_timeout + RECEIPT_GRACE,
        ) {
            edge.metrics().receipt_refusals.inc();
            edge.reply(
                conn,
                msg_id.as_deref(),
                ErrorCode::RateLimited,
                "too many sends with ack are waiting for their receipts",
                None,
            );
            return;
        }
    }
    let started = Instant::now();
    let route = Route {
        ack_timeout_ms: if send.ack {
            u32::try_from(ack_timeout.as_millis()).unwrap_or(frame::MAX_ACK_TIMEOUT_MS)
        } else {
            0
        },
        node: edge.node_id().to_owned(),
        conn: conn.id,
        biz: conn.biz.to_string(),
        from: conn.client.to_string(),
        msg_id,
        target: send.target,
        content: send.content,
    };
    let msg_id = route.msg_id.clone();
    let code = match edge.router().route(route).await {
        Ok(r) => {
            edge.metrics().send_duration.observe(started.elapsed().as_secs_f64());
            let code = ErrorCode::from_u16(r.code).unwrap_or(ErrorCode::Internal);
            let recipients = (code == ErrorCode::Ok).then_some(r.recipients);
            edge.reply(conn, msg_id.as_deref(), code, code.message(), recipients);
            code
        }
        Err(e) => {
            tracing::warn!(conn_id = conn.id, error = %e, "route failed");
            refuse(edge, conn, msg_id.as_deref(), ErrorCode::Internal);
            ErrorCode::Internal
        }
    };
    if send.ack && code != ErrorCode::Ok {
        // A failed send gets no receipt: its slot is free at once.
        if let Some(state) = limiter.acks.as_mut() {
            state.give_back();
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
    fn sends_with_ack_in_flight_are_capped_until_receipts_or_deadlines_free_them() {
        let mut slot = None;
        let s = AckState::get(&mut slot, 2);
        let later = Instant::now() + Duration::from_secs(60);
        assert!(s.start(0, 2, later) && s.start(0, 2, later));
        assert!(!s.start(0, 2, later), "two in flight");
        assert!(s.start(1, 2, later), "a receipt came: one freed");
        assert!(!s.start(1, 2, later));
        let past = Instant::now();
        let mut slot = None;
        let s = AckState::get(&mut slot, 2);
        assert!(s.start(0, 1, past));
        assert!(s.start(0, 1, later), "the first one's deadline passed");
        assert!(s.allow_ack(2) && s.allow_ack(2) && s.allow_ack(2) && s.allow_ack(2));
        assert!(!s.allow_ack(2), "burst of twice the rate");
    }

    #[test]
    fn limiter_allows_burst_then_refuses() {
        let mut l = Limiter::new(3);
        assert!(l.allow(1, 3) && l.allow(1, 3) && l.allow(1, 3));
        assert!(!l.allow(1, 3));
        assert_eq!(l.refused_in_a_row, 1);
    }
}
