//! One client session: a reader and a writer polled by one task.
//!
//! fastwebsockets' `read_frame` is not cancel-safe, so the reader future is
//! never dropped while the session lives: both halves are pinned and polled
//! together, and when one ends the other gets `close_grace` to finish.
//! The writer drains the connection's [`Outbox`](crate::outbox::Outbox),
//! coalescing every queued frame into one buffer and one write.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use switchboard_protocol::envelope::{ConnInfo, Disconnect, Route};
use switchboard_protocol::frame::{self, ClientFrame, SendTarget};
use switchboard_protocol::ids::{self, IdKind};
use switchboard_protocol::{CloseCode, ErrorCode};
use tokio::io::{AsyncWrite, AsyncWriteExt, WriteHalf};

use crate::outbox::Out;
use crate::registry::Conn;
use crate::wsread::{op, FrameReader, ReadError};
use crate::EdgeInner;

type Io = TokioIo<Upgraded>;

/// Who was admitted by the handshake.
pub(crate) struct Admission {
    pub(crate) biz: String,
    pub(crate) client: String,
    pub(crate) groups: Vec<String>,
    pub(crate) expires_at: u64,
    pub(crate) send_groups: Option<Box<[String]>>,
}

/// Runs a session from upgrade to disconnect.
pub(crate) async fn run(edge: Arc<EdgeInner>, io: Io, a: Admission) {
    let Admission {
        biz,
        client,
        groups,
        expires_at,
        send_groups,
    } = a;
    let id = edge.next_conn_id();
    let conn = Arc::new(Conn::with_token(
        id,
        &biz,
        &client,
        &groups,
        edge.clock(),
        expires_at,
        send_groups,
    ));
    edge.registry.insert(conn.clone());
    edge.metrics.connections.inc();

    let (mut rd, wr) = tokio::io::split(io);
    let info = ConnInfo {
        node: edge.node_id.clone(),
        conn: id,
        biz,
        client,
        groups,
    };
    let registered = match edge.router.connect(info.clone()).await {
        Ok(r) if r.code == 0 => true,
        Ok(r) => {
            tracing::info!(conn_id = id, biz = %info.biz, client_id = %info.client, code = r.code, "presence refused");
            false
        }
        Err(e) => {
            tracing::warn!(conn_id = id, biz = %info.biz, client_id = %info.client, error = %e, "presence registration failed");
            false
        }
    };
    if registered {
        let welcome = frame::welcome(
            &info.client,
            &info.biz,
            &info.groups,
            &edge.node_id,
            edge.config.heartbeat.as_secs(),
        );
        conn.activate(Bytes::from(welcome), edge.config.send_queue_bytes);
        tracing::debug!(conn_id = id, biz = %info.biz, client_id = %info.client, "connected");
    } else {
        // 1011 would be "internal error"; 1013 "try again later" fits a bus outage.
        conn.outbox.close(1013);
    }

    let grace = edge.config.close_grace;
    let mut reader = FrameReader::default();
    {
        let reading = read_loop(&edge, &conn, &mut reader, &mut rd, registered);
        let writer = write_loop(&edge, &conn, wr);
        tokio::pin!(reading, writer);
        tokio::select! {
            () = &mut reading => {
                conn.outbox.stop();
                let _ = tokio::time::timeout(grace, writer).await;
            }
            () = &mut writer => {
                let _ = tokio::time::timeout(grace, reading).await;
            }
        }
    }
    // Lingering close: read and discard until the peer closes (or `grace`),
    // so unread input does not make the kernel reset the connection before
    // the peer has read our close frame.
    let _ = tokio::time::timeout(grace, reader.drain(&mut rd)).await;

    edge.registry.remove(id);
    edge.metrics.connections.dec();
    if registered {
        edge.spawn_disconnect(Disconnect {
            node: info.node,
            conn: id,
            biz: info.biz,
            client: info.client,
        });
    }
}

/// Per-connection token bucket and abuse counter (lives in the reader).
struct Limiter {
    tokens: f64,
    last: Instant,
    refused_in_a_row: u32,
}

impl Limiter {
    fn new(burst: u32) -> Self {
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

async fn read_loop<R>(edge: &EdgeInner, conn: &Conn, reader: &mut FrameReader, rd: &mut R, registered: bool)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut limiter = Limiter::new(edge.config.rate_burst);
    let mut fragments: Option<Vec<u8>> = None;
    let max = edge.config.max_message_bytes;
    loop {
        let frame = match reader.read(rd, max).await {
            Ok(f) => f,
            Err(ReadError::TooLarge) => {
                conn.outbox.close(CloseCode::TooBig.as_u16());
                return;
            }
            Err(ReadError::Protocol(why)) => {
                tracing::debug!(conn_id = conn.id, why, "protocol error");
                conn.outbox.close(1002);
                return;
            }
            Err(e) => {
                tracing::debug!(conn_id = conn.id, error = %e, "read ended");
                return;
            }
        };
        conn.touch(edge.clock());
        match frame.opcode {
            op::PING => {
                conn.outbox.push_pong(frame.payload.freeze());
                continue;
            }
            op::PONG => continue,
            op::CLOSE => {
                // Answer with the client's code, as RFC 6455 asks.
                let p = &frame.payload;
                let code = if p.len() >= 2 {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    CloseCode::Normal.as_u16()
                };
                conn.outbox.close(code);
                return;
            }
            _ if !registered => continue,
            op::TEXT if frame.fin => {
                if fragments.take().is_some() {
                    conn.outbox.close(1002);
                    return;
                }
                if std::str::from_utf8(&frame.payload).is_err() {
                    conn.outbox.close(1007);
                    return;
                }
                handle_text(edge, conn, &frame.payload, &mut limiter).await;
            }
            op::TEXT => fragments = Some(frame.payload.to_vec()),
            op::BINARY if frame.fin => {
                edge.reply(
                    conn,
                    None,
                    ErrorCode::InvalidFrame,
                    "binary frames are not supported",
                    None,
                );
            }
            op::BINARY => fragments = None,
            _ => {
                // Continuation.
                let Some(buf) = fragments.as_mut() else {
                    continue;
                };
                if buf.len() + frame.payload.len() > max {
                    conn.outbox.close(CloseCode::TooBig.as_u16());
                    return;
                }
                buf.extend_from_slice(&frame.payload);
                if frame.fin {
                    let whole = fragments.take().unwrap_or_default();
                    if std::str::from_utf8(&whole).is_err() {
                        conn.outbox.close(1007);
                        return;
                    }
                    handle_text(edge, conn, &whole, &mut limiter).await;
                }
            }
        }
        if limiter.refused_in_a_row >= edge.config.abuse_limit {
            tracing::info!(conn_id = conn.id, biz = %conn.biz, client_id = %conn.client, "closing abusive connection");
            conn.outbox.close(CloseCode::Policy.as_u16());
            return;
        }
    }
}

async fn handle_text(edge: &EdgeInner, conn: &Conn, text: &[u8], limiter: &mut Limiter) {
    if text.len() > edge.config.max_frame_bytes {
        edge.metrics.frames_received.get(u16::MAX).inc();
        edge.reply(conn, None, ErrorCode::TooLarge, "frame over the size limit", None);
        return;
    }
    let send = match frame::parse_client_frame(text) {
        Ok(ClientFrame::Heartbeat { msg_id }) => {
            edge.metrics.frames_received.get(frame::MODE_HEARTBEAT).inc();
            let reply = frame::heartbeat_reply(msg_id.as_deref(), switchboard_runtime::now_ms());
            edge.push(conn, frame::MODE_HEARTBEAT, Bytes::from(reply));
            return;
        }
        Ok(ClientFrame::Send(send)) => send,
        Err(e) => {
            edge.metrics.frames_received.get(u16::MAX).inc();
            edge.reply(conn, e.msg_id.as_deref(), e.code, e.detail, None);
            return;
        }
    };
    edge.metrics.frames_received.get(send.target.mode()).inc();
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
    let forbidden = !edge.config.send_modes.contains(&send.target.mode())
        || matches!(&send.target, SendTarget::Group(g)
            if (edge.config.group_send_requires_membership && !conn.in_group(g))
                || conn.send_groups.as_ref().is_some_and(|allowed| !allowed.iter().any(|a| a == g)));
    if forbidden {
        edge.reply(
            conn,
            msg_id.as_deref(),
            ErrorCode::Forbidden,
            ErrorCode::Forbidden.message(),
            None,
        );
        return;
    }
    if !limiter.allow(edge.config.rate_per_sec, edge.config.rate_burst) {
        edge.reply(
            conn,
            msg_id.as_deref(),
            ErrorCode::RateLimited,
            ErrorCode::RateLimited.message(),
            None,
        );
        return;
    }
    let started = Instant::now();
    let route = Route {
        node: edge.node_id.clone(),
        conn: conn.id,
        biz: conn.biz.to_string(),
        from: conn.client.to_string(),
        msg_id,
        target: send.target,
        content: send.content,
    };
    let msg_id = route.msg_id.clone();
    match edge.router.route(route).await {
        Ok(r) => {
            edge.metrics.send_duration.observe(started.elapsed().as_secs_f64());
            let code = ErrorCode::from_u16(r.code).unwrap_or(ErrorCode::Internal);
            let recipients = (code == ErrorCode::Ok).then_some(r.recipients);
            edge.reply(conn, msg_id.as_deref(), code, code.message(), recipients);
        }
        Err(e) => {
            tracing::warn!(conn_id = conn.id, error = %e, "route failed");
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

/// Appends one server frame (unmasked) to `buf`.
fn put_frame(buf: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    buf.put_u8(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        buf.put_u8(n as u8);
    } else if let Ok(n16) = u16::try_from(n) {
        buf.put_u8(126);
        buf.put_u16(n16);
    } else {
        buf.put_u8(127);
        buf.put_u64(n as u64);
    }
    buf.extend_from_slice(payload);
}

/// Writes one batch. Once the connection is closing (a close was queued,
/// e.g. after an overflow), the rest of the write and the close frame get
/// `close_grace`: a client that stopped reading cannot hold the session.
async fn write_batch<W: AsyncWrite>(edge: &EdgeInner, conn: &Conn, wr: &mut WriteHalf<W>, buf: &[u8]) -> bool {
    let write = wr.write_all(buf);
    tokio::pin!(write);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if deadline.is_none() && conn.outbox.is_closing() {
            deadline = Some(tokio::time::Instant::now() + edge.config.close_grace);
        }
        let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(|| tokio::time::Instant::now() + FAR));
        tokio::select! {
            r = &mut write => {
                if let Err(e) = r {
                    tracing::debug!(conn_id = conn.id, error = %e, "write failed");
                    return false;
                }
                return true;
            }
            () = conn.outbox.wait(), if deadline.is_none() => {}
            () = sleep, if deadline.is_some() => {
                tracing::debug!(conn_id = conn.id, "peer not reading, dropping the connection");
                return false;
            }
        }
    }
}

/// Far enough to never fire (a disabled branch still needs a future).
const FAR: std::time::Duration = std::time::Duration::from_secs(86_400);

async fn write_loop<W: AsyncWrite>(edge: &EdgeInner, conn: &Conn, mut wr: WriteHalf<W>) {
    loop {
        let batch = conn.outbox.take();
        if batch.is_empty() {
            conn.outbox.wait().await;
            continue;
        }
        let size: usize = batch
            .iter()
            .map(|o| match o {
                Out::Text(b) | Out::Pong(b) => b.len() + 10,
                Out::Close(_) => 4 + 128,
                Out::Stop => 0,
            })
            .sum();
        let mut buf = Vec::with_capacity(size);
        let mut last = false;
        for item in batch {
            match item {
                Out::Text(b) => put_frame(&mut buf, 0x1, &b),
                Out::Pong(b) => put_frame(&mut buf, 0xA, &b),
                Out::Close(code) => {
                    let mut payload = code.to_be_bytes().to_vec();
                    if let Some(c) = CloseCode::from_u16(code) {
                        payload.extend_from_slice(c.reason().as_bytes());
                    }
                    put_frame(&mut buf, 0x8, &payload);
                    last = true;
                    break;
                }
                Out::Stop => {
                    last = true;
                    break;
                }
            }
        }
        if !buf.is_empty() && !write_batch(edge, conn, &mut wr, &buf).await {
            conn.outbox.stop();
            return;
        }
        if last {
            let _ = tokio::time::timeout(edge.config.close_grace, async {
                let _ = wr.flush().await;
                let _ = wr.shutdown().await;
            })
            .await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_follow_rfc6455_lengths() {
        for (n, header) in [(5usize, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut buf = Vec::new();
            put_frame(&mut buf, 1, &vec![b'a'; n]);
            assert_eq!(buf.len(), n + header, "{n}");
            assert_eq!(buf[0], 0x81);
        }
    }

    #[test]
    fn limiter_allows_burst_then_refuses() {
        let mut l = Limiter::new(3);
        assert!(l.allow(1, 3) && l.allow(1, 3) && l.allow(1, 3));
        assert!(!l.allow(1, 3));
        assert_eq!(l.refused_in_a_row, 1);
    }
}
