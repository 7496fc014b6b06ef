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
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::address::Slots;
use crate::message::{Assembler, Event};
use crate::outbox::{self, Out, Pushed};
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
    /// The connection's places in the per-address and per-bizCode counts,
    /// held for its life (boxed, and only when a cap is on: an idle
    /// session keeps a pointer at most).
    pub(crate) slots: Option<Box<Slots>>,
}

/// What a session does with the messages it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A client of `/ws`: its frames are the client protocol; until
    /// presence is `registered` its messages are ignored.
    Client { registered: bool },
    /// The test-only `/echo` endpoint (`edge.echo_endpoint`): every message
    /// is sent back as it came, through the same reader, limits and close
    /// handling as a client's (the Autobahn|Testsuite drives it).
    Echo,
}

/// The socket halves and reader of an upgraded connection.
struct Socket {
    rd: OwnedReadHalf,
    sock: Arc<OwnedWriteHalf>,
    reader: FrameReader,
}

impl Socket {
    fn open(io: Io) -> Option<Self> {
        let Ok((tcp, early)) = into_tcp(io) else {
            tracing::error!("upgraded connection is not a TCP stream; dropped");
            return None;
        };
        // The read half is the reader's; the write half is shared with the
        // outbox, which writes from whichever task queues a frame.
        let (rd, sock) = tcp.into_split();
        // `early` points into hyper's whole read buffer: copy out what is in
        // it and let the buffer go.
        let reader = FrameReader::with_buffered(&early);
        Some(Self {
            rd,
            sock: Arc::new(sock),
            reader,
        })
    }
}

/// Runs a session from upgrade to disconnect.
pub(crate) async fn run(edge: Arc<EdgeInner>, io: Io, a: Admission) {
    let Some(mut socket) = Socket::open(io) else {
        return;
    };
    let id = edge.next_conn_id();
    let slots;
    let conn = {
        // Scoped: the connection keeps its own copies of these.
        let Admission {
            biz,
            client,
            groups,
            expires_at,
            send_groups,
            slots: held,
        } = a;
        slots = held;
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
    conn.outbox.attach(socket.sock.clone());
    edge.registry.insert(conn.clone());
    edge.metrics.connections.inc();
    // Boxed: what registration needs is not kept for the session's life.
    let registration = Box::pin(register(&edge, &conn)).await;
    let registered = registration == Registration::Registered;

    serve(&edge, &conn, &mut socket, Role::Client { registered }).await;

    edge.registry.remove(id);
    edge.metrics.connections.dec();
    drop(slots);
    if registration != Registration::Refused {
        edge.spawn_disconnect(Disconnect {
            node: edge.node_id.clone(),
            conn: id,
            biz: conn.biz.to_string(),
            client: conn.client.to_string(),
        });
    }
}

/// Runs an `/echo` session: no welcome, no presence, not in the registry.
pub(crate) async fn run_echo(edge: Arc<EdgeInner>, io: Io) {
    let Some(mut socket) = Socket::open(io) else {
        return;
    };
    let conn = Conn::new(edge.next_conn_id(), "", "", &[], edge.clock());
    conn.outbox.attach(socket.sock.clone());
    serve(&edge, &conn, &mut socket, Role::Echo).await;
}

/// Polls the reader and the writer until both are done, then lingers.
async fn serve(edge: &EdgeInner, conn: &Conn, socket: &mut Socket, role: Role) {
    let grace = edge.config.close_grace;
    let Socket { rd, sock, reader } = socket;
    {
        let reading = read_loop(edge, conn, reader, rd, role);
        let writer = write_loop(edge, conn, sock);
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
    let _ = Box::pin(tokio::time::timeout(grace, reader.drain(rd))).await;
}

/// What became of a connection's presence registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registration {
    /// Written: the welcome was queued.
    Registered,
    /// A router answered that it did not write it.
    Refused,
    /// No answer (timeout, bus down): a router may still apply it later,
    /// so the connection's end sends a disconnect like a registered one
    /// (idempotent: it removes the entry only if it is this connection's).
    Unknown,
}

/// Writes presence, then queues the welcome (or closes with 1013 if no
/// router took it).
async fn register(edge: &EdgeInner, conn: &Conn) -> Registration {
    let info = conn.info(&edge.node_id);
    let id = conn.id;
    let registered = match edge.router.connect(info.clone()).await {
        Ok(r) if r.code == 0 => Registration::Registered,
        Ok(r) => {
            tracing::info!(conn_id = id, biz = %info.biz, client_id = %info.client, code = r.code, "presence refused");
            Registration::Refused
        }
        Err(e) => {
            tracing::warn!(conn_id = id, biz = %info.biz, client_id = %info.client, error = %e, "presence registration failed");
            Registration::Unknown
        }
    };
    if registered == Registration::Registered {
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
        conn.outbox.close(CloseCode::TryAgainLater.as_u16());
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

async fn read_loop<R>(edge: &EdgeInner, conn: &Conn, reader: &mut FrameReader, rd: &mut R, role: Role)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut limiter = Limiter::new(edge.config.rate_burst);
    let mut messages = Assembler::default();
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
                conn.outbox.close(CloseCode::ProtocolError.as_u16());
                return;
            }
            Err(e) => {
                tracing::debug!(conn_id = conn.id, error = %e, "read ended");
                return;
            }
        };
        conn.touch(edge.clock());
        let event = match messages.push(frame, max) {
            Ok(Some(event)) => event,
            Ok(None) => continue,
            Err(code) => {
                tracing::debug!(conn_id = conn.id, code = code.as_u16(), "invalid message, closing");
                conn.outbox.close(code.as_u16());
                return;
            }
        };
        match (event, role) {
            (Event::Ping(payload), _) => {
                if conn.outbox.push_pong(&payload, edge.config.send_queue_bytes) == Pushed::Overflow {
                    edge.slow_consumer(conn);
                }
            }
            (Event::Pong, _) => {}
            (Event::Close, _) => {
                conn.outbox.close(CloseCode::Normal.as_u16());
                return;
            }
            (Event::Text(text), Role::Echo) => echo(edge, conn, op::TEXT, &text),
            (Event::Binary(data), Role::Echo) => echo(edge, conn, op::BINARY, &data),
            (_, Role::Client { registered: false }) => {}
            (Event::Text(text), Role::Client { .. }) => {
                Box::pin(handle_text(edge, conn, &text, &mut limiter)).await;
            }
            (Event::Binary(_), Role::Client { .. }) => {
                edge.metrics.frames_received.get(u16::MAX).inc();
                edge.reply(
                    conn,
                    None,
                    ErrorCode::InvalidFrame,
                    "binary messages are not supported",
                    None,
                );
            }
        }
        if limiter.refused_in_a_row >= edge.config.abuse_limit {
            tracing::info!(conn_id = conn.id, biz = %conn.biz, client_id = %conn.client, "closing abusive connection");
            conn.outbox.close(CloseCode::Policy.as_u16());
            return;
        }
    }
}

/// Sends a message back as it came (`/echo`).
fn echo(edge: &EdgeInner, conn: &Conn, opcode: u8, payload: &[u8]) {
    if conn
        .outbox
        .push_text(outbox::frame(opcode, payload), edge.config.send_queue_bytes)
        == Pushed::Overflow
    {
        edge.slow_consumer(conn);
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
