//! One client session: a reader and a writer polled by one task.
//!
//! The upgraded connection is taken back as the plain `TcpStream` and
//! split: the reader reads its read half, and the connection's
//! [`Outbox`](crate::outbox::Outbox) writes to the write half directly from whichever
//! task queues a frame. The session's writer only waits for the socket when
//! a write did not go out at once, and writes the close frame. Both halves
//! are polled together, and when one ends the other gets `close_grace`.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use switchboard_protocol::envelope::{Disconnect, Route};
use switchboard_protocol::frame::{self, ClientFrame, SendTarget};
use switchboard_protocol::ids::{self, IdKind};
use switchboard_protocol::{CloseCode, ErrorCode};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use crate::outbox::{self, Out};
use crate::registry::Conn;
use crate::wsread::{op, FrameReader, ReadError};
use crate::EdgeInner;

type Io = TokioIo<Upgraded>;

/// The TCP stream under an upgraded connection, with any bytes hyper read
/// past the handshake.
fn into_tcp(io: Io) -> Result<(TcpStream, Bytes), Upgraded> {
    let parts = io.into_inner().downcast::<TokioIo<TcpStream>>()?;
    Ok((parts.io.into_inner(), parts.read_buf))
}

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
    let (tcp, early) = match into_tcp(io) {
        Ok(x) => x,
        Err(_) => {
            tracing::error!("upgraded connection is not a TCP stream; dropped");
            return;
        }
    };
    // The read half is the reader's; the write half is shared with the
    // outbox, which writes from whichever task queues a frame.
    let (mut rd, sock) = tcp.into_split();
    let sock = Arc::new(sock);
    // `early` points into hyper's whole read buffer: copy out what is in it
    // and let the buffer go.
    let mut reader = FrameReader::with_buffered(&early);
    drop(early);
    let id = edge.next_conn_id();
    let conn = {
        // Scoped: the connection keeps its own copies of these.
        let Admission {
            biz,
            client,
            groups,
            expires_at,
            send_groups,
        } = a;
        Arc::new(Conn::with_token(
            id,
            &biz,
            &client,
            &groups,
            edge.clock(),
            expires_at,
            send_groups,
        ))
    };
    conn.outbox.attach(sock.clone());
    edge.registry.insert(conn.clone());
    edge.metrics.connections.inc();
    // Boxed: what registration needs is not kept for the session's life.
    let registered = Box::pin(register(&edge, &conn)).await;

    let grace = edge.config.close_grace;
    {
        let reading = read_loop(&edge, &conn, &mut reader, &mut rd, registered);
        let writer = write_loop(&edge, &conn, &sock);
        tokio::pin!(reading, writer);
        tokio::select! {
            () = &mut reading => {
                conn.outbox.stop();
                let _ = Box::pin(tokio::time::timeout(grace, writer)).await;
            }
            () = &mut writer => {
                let _ = Box::pin(tokio::time::timeout(grace, reading)).await;
            }
        }
    }
    // Lingering close: read and discard until the peer closes (or `grace`),
    // so unread input does not make the kernel reset the connection before
    // the peer has read our close frame.
    let _ = Box::pin(tokio::time::timeout(grace, reader.drain(&mut rd))).await;

    edge.registry.remove(id);
    edge.metrics.connections.dec();
    if registered {
        edge.spawn_disconnect(Disconnect {
            node: edge.node_id.clone(),
            conn: id,
            biz: conn.biz.to_string(),
            client: conn.client.to_string(),
        });
    }
}

/// Writes presence, then queues the welcome (or closes with 1013 if no
/// router took it). Returns whether the connection is registered.
async fn register(edge: &EdgeInner, conn: &Conn) -> bool {
    let info = conn.info(&edge.node_id);
    let id = conn.id;
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
        conn.activate(outbox::text_frame(&welcome), edge.config.send_queue_bytes);
        tracing::debug!(conn_id = id, biz = %info.biz, client_id = %info.client, "connected");
    } else {
        // 1011 would be "internal error"; 1013 "try again later" fits a bus outage.
        conn.outbox.close(1013);
    }
    registered
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
                conn.outbox.push_pong(&frame.payload);
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
                Box::pin(handle_text(edge, conn, &frame.payload, &mut limiter)).await;
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
                    Box::pin(handle_text(edge, conn, &whole, &mut limiter)).await;
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
            edge.push(conn, frame::MODE_HEARTBEAT, &reply);
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

/// Writes `buf` whenever the socket takes it. Once the connection is
/// closing (a close was queued, e.g. after an overflow), the rest of the
/// write gets `close_grace`: a client that stopped reading cannot hold the
/// session.
async fn write_all(edge: &EdgeInner, conn: &Conn, sock: &OwnedWriteHalf, mut buf: &[u8]) -> bool {
    let mut deadline: Option<tokio::time::Instant> = None;
    while !buf.is_empty() {
        if deadline.is_none() && conn.outbox.is_closing() {
            deadline = Some(tokio::time::Instant::now() + edge.config.close_grace);
        }
        let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(|| tokio::time::Instant::now() + FAR));
        tokio::select! {
            r = sock.writable() => {
                if let Err(e) = r {
                    tracing::debug!(conn_id = conn.id, error = %e, "write failed");
                    return false;
                }
                match sock.try_write(buf) {
                    Ok(n) => buf = &buf[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        tracing::debug!(conn_id = conn.id, error = %e, "write failed");
                        return false;
                    }
                }
            }
            () = conn.outbox.wait(), if deadline.is_none() => {}
            () = sleep, if deadline.is_some() => {
                tracing::debug!(conn_id = conn.id, "peer not reading, dropping the connection");
                return false;
            }
        }
    }
    true
}

/// Far enough to never fire (a disabled branch still needs a future).
const FAR: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Writes what a direct flush left: frames the socket did not take at once,
/// then the close frame, after which it shuts the write side down.
async fn write_loop(edge: &EdgeInner, conn: &Conn, sock: &OwnedWriteHalf) {
    loop {
        let Some(batch) = conn.outbox.take() else {
            conn.outbox.wait().await;
            continue;
        };
        let mut buf = Vec::with_capacity(
            batch
                .iter()
                .map(|o| if let Out::Frame(b) = o { b.len() } else { 0 })
                .sum(),
        );
        let mut last = false;
        for item in batch {
            match item {
                Out::Frame(b) => buf.extend_from_slice(&b),
                Out::Close(code) => {
                    buf.extend_from_slice(&outbox::close_frame(code));
                    last = true;
                    break;
                }
                Out::Stop => {
                    last = true;
                    break;
                }
            }
        }
        if !Box::pin(write_all(edge, conn, sock, &buf)).await {
            conn.outbox.stop();
            return;
        }
        if last {
            let _ = socket2::SockRef::from(sock.as_ref()).shutdown(std::net::Shutdown::Write);
            return;
        }
    }
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
