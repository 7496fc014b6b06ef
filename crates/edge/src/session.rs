//! One client session: a reader and a writer polled by one task, from
//! the upgrade to the disconnect.
//!
//! The upgraded connection is taken back as the plain `TcpStream` and
//! split: the reader reads its read half, and the connection's
//! [`Outbox`](crate::outbox::Outbox) writes to the write half directly from
//! whichever task queues a frame. The session's writer
//! ([`writer`](crate::writer)) only waits for the socket when a write did
//! not go out at once, and writes the close frame. Both halves are polled
//! together, and when one ends the other gets `close_grace`.
//!
//! Here: presence registration and the welcome, the read loop (frames →
//! messages → what they do; a client's text messages go to
//! [`send`](crate::send)), and the close codes a read can end with.

use std::sync::Arc;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use switchboard_protocol::envelope::Disconnect;
use switchboard_protocol::frame;
use switchboard_protocol::{CloseCode, ErrorCode};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::admit::Admission;
use crate::edge::EdgeInner;
use crate::handshake::Recover;
use crate::message::{Assembler, Event};
use crate::outbox::{self, Pushed};
use crate::recovery;
use crate::registry::{Conn, Hold, HEAD};
use crate::send::{handle_text, Limiter};
use crate::tenant::Tenant;
use crate::writer::{write_loop, Ended};
use crate::wsread::{op, FrameReader, ReadError};

/// An upgraded connection as hyper hands it over.
pub(crate) type Io = TokioIo<Upgraded>;

/// The TCP stream under an upgraded connection, with any bytes hyper read
/// past the handshake.
fn into_tcp(io: Io) -> Result<(TcpStream, Bytes), Upgraded> {
    let parts = io.into_inner().downcast::<TokioIo<TcpStream>>()?;
    Ok((parts.io.into_inner(), parts.read_buf))
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
    let tenant;
    let recover;
    let conn = {
        // Scoped: the connection keeps its own copies of these.
        let Admission {
            biz,
            client,
            groups,
            expires_at,
            send_groups,
            slots: held,
            tenant: counted,
            recover: asked,
        } = a;
        slots = held;
        tenant = counted;
        recover = asked;
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
    edge.registry().insert(conn.clone());
    edge.metrics().connections.inc();
    // Boxed: what registration needs is not kept for the session's life.
    let registration = Box::pin(register(&edge, &conn, recover.as_deref(), &socket.rd)).await;
    let registered = registration == Registration::Registered;

    // Once closing, the connection leaves the registry and presence at
    // once: nothing more is delivered to it, so no send may count it and
    // no online list may show it.
    let over = || {
        edge.registry().remove(id);
        if registration == Registration::Registered {
            crate::events::disconnected(&edge, &conn);
        }
        if registration != Registration::Refused {
            edge.spawn_disconnect(Disconnect {
                node: edge.node_id().to_owned(),
                conn: id,
                biz: conn.biz.to_string(),
                client: conn.client.to_string(),
            });
        }
    };
    serve(
        &edge,
        &conn,
        &mut socket,
        Role::Client { registered },
        tenant.as_deref(),
        over,
    )
    .await;

    edge.metrics().connections.dec();
    drop(slots);
    drop(tenant);
}

/// Runs an `/echo` session: no welcome, no presence, not in the registry.
pub(crate) async fn run_echo(edge: Arc<EdgeInner>, io: Io) {
    let Some(mut socket) = Socket::open(io) else {
        return;
    };
    let conn = Conn::new(edge.next_conn_id(), "", "", &[], edge.clock());
    conn.outbox.attach(socket.sock.clone());
    serve(&edge, &conn, &mut socket, Role::Echo, None, || {}).await;
}

/// Polls the reader and the writer until both are done, then lingers.
/// `tenant`: the client's bizCode (its sends limit). `over` runs once, as
/// soon as the connection is over for everyone else: a close was queued
/// (4008, 1012, 4000, ...) or either half ended. What follows (the close
/// frame, `close_grace` for the other half, the lingering close) is only
/// between this socket and its peer: a slow consumer that cannot take its
/// close frame no longer stays in presence for up to 3 × `close_grace`.
async fn serve(
    edge: &EdgeInner,
    conn: &Conn,
    socket: &mut Socket,
    role: Role,
    tenant: Option<&Tenant>,
    over: impl FnOnce(),
) {
    let grace = edge.config().close_grace;
    let Socket { rd, sock, reader } = socket;
    let mut over = Some(over);
    let mut end = move || {
        if let Some(f) = over.take() {
            f();
        }
    };
    let (closing_tx, mut closing) = tokio::sync::oneshot::channel();
    let mut closing_tx = Some(closing_tx);
    let linger = {
        let reading = read_loop(edge, conn, reader, rd, role, tenant);
        let writer = write_loop(edge, conn, sock, &mut closing_tx);
        tokio::pin!(reading, writer);
        // Cancel safety: neither loop is cancel safe (see theirs), and the
        // select drops neither: it polls both through `&mut`, and the one
        // that did not finish keeps running after it, for `close_grace`.
        // Only then is it dropped, when the connection is over either way:
        // the writer with what a peer that stopped reading never took, the
        // reader with a send it was waiting on (its reply has nowhere to go).
        // The oneshot receiver is cancel safe.
        let mut told = false;
        loop {
            tokio::select! {
                r = &mut closing, if !told => {
                    told = true;
                    if r.is_ok() {
                        end();
                    }
                }
                () = &mut reading => {
                    end();
                    conn.outbox.stop();
                    let _ = Box::pin(tokio::time::timeout(grace, writer)).await;
                    break true;
                }
                ended = &mut writer => {
                    end();
                    // A peer that does not take what is written gets no
                    // more time: nothing can reach it.
                    if ended == Ended::GaveUp {
                        break false;
                    }
                    let _ = Box::pin(tokio::time::timeout(grace, reading)).await;
                    break true;
                }
            }
        }
    };
    // Lingering close: read and discard until the peer closes (or `grace`),
    // so unread input does not make the kernel reset the connection before
    // the peer has read our close frame.
    if linger {
        let _ = Box::pin(tokio::time::timeout(grace, reader.drain(rd))).await;
    }
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
/// router took it); with history on, where the connection starts in its
/// bizCode's log is decided before the welcome, and any replay and the
/// deliveries held meanwhile follow it (SPEC §7).
async fn register(
    edge: &Arc<EdgeInner>,
    conn: &Arc<Conn>,
    recover: Option<&Recover>,
    rd: &OwnedReadHalf,
) -> Registration {
    let info = conn.info(edge.node_id());
    let id = conn.id;
    if peer_gone(rd) {
        tracing::debug!(conn_id = id, biz = %info.biz, client_id = %info.client, "the client left before its presence was registered");
        conn.outbox.close(CloseCode::GoingAway);
        return Registration::Refused;
    }
    let mut joined = None;
    let registered = match connect_retrying(edge, &info, rd).await {
        Ok(r) if r.code == ErrorCode::Ok.as_u16() => {
            // Groups bound to the client (SPEC §7) join this connection
            // before its welcome, which lists them.
            for g in &r.groups {
                edge.registry().bind(id, g);
            }
            joined = r.history;
            Registration::Registered
        }
        // 1500: the store failed (e.g. no JetStream quorum); its write may
        // still land (a proposal committed once the quorum is back), so the
        // connection's end removes it like an unanswered one's.
        Ok(r) if r.code == ErrorCode::Internal.as_u16() => {
            tracing::info!(conn_id = id, biz = %info.biz, client_id = %info.client, code = r.code, "presence not registered (store failed)");
            Registration::Unknown
        }
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
        crate::events::connected(edge, conn);
        let start = recovery::start(edge, conn, joined.as_ref(), recover).await;
        let welcome = frame::welcome(
            &info.client,
            &info.biz,
            &conn.groups(),
            edge.node_id(),
            edge.config().heartbeat.as_secs(),
            start.welcome(),
        );
        conn.activate(outbox::text_frame(&welcome), edge.config().send_queue_bytes);
        tracing::debug!(conn_id = id, biz = %info.biz, client_id = %info.client, recovered = ?start.recovered, "connected");
        if let Some(j) = &joined {
            if let Some(newer) = edge.joined_stale(j.partition, j.token) {
                // Joined through an owner this edge already heard was
                // replaced: a loss would go unnoticed. Still held since its
                // start, it owes a heal up to the log's head, read when its
                // hold is released (after any replay), before anything live.
                let token = conn.joined().map_or(newer, |(_, t)| t.max(newer));
                conn.set_joined(j.partition, token);
                let owed = conn.hold_or_owe(HEAD);
                debug_assert_eq!(owed, Hold::Owed, "held since its start");
                edge.metrics().heals.inc();
                tracing::info!(
                    conn_id = id,
                    partition = j.partition,
                    "joined under a replaced owner; healing from the log"
                );
            }
        }
        recovery::release(edge, conn, start.replay, joined.map(|j| j.partition));
    } else {
        // 1011 would be "internal error"; 1013 "try again later" fits a bus outage.
        conn.outbox.close(CloseCode::TryAgainLater);
    }
    registered
}

/// Whether the client already closed its end of the connection (or it
/// broke): a handshake it gave up on, e.g. one this edge read only after
/// being frozen. Registering it would replace the client's newer
/// connection (SPEC §2: the newest connection of a clientId wins, 4009),
/// which the client cannot tell from a real replacement.
///
/// Asks the kernel directly (a non-blocking `recv` with `MSG_PEEK`): the
/// runtime's cached readiness may not have seen the close yet, e.g. right
/// after a frozen process resumes.
fn peer_gone(rd: &OwnedReadHalf) -> bool {
    let tcp: &tokio::net::TcpStream = rd.as_ref();
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(tcp).peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ),
    }
}

/// How long a connect answered 1500 is tried again: a history
/// partition's takeover after its owner died takes up to a lease TTL (5 s),
/// during which a join finds no owner (`docs/recovery.md`, "As built").
const CONNECT_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(7);

/// Registers presence, trying again while a router answers 1500 (retry),
/// for up to [`CONNECT_RETRY_FOR`], and waiting first while the node is
/// suspect of having been purged ([`crate::heard`]); the client keeps
/// waiting for its welcome meanwhile.
async fn connect_retrying(
    edge: &EdgeInner,
    info: &switchboard_protocol::envelope::ConnInfo,
    rd: &OwnedReadHalf,
) -> Result<switchboard_protocol::envelope::ConnectedReply, crate::link::LinkError> {
    let deadline = tokio::time::Instant::now() + CONNECT_RETRY_FOR;
    // Full-jitter exponential backoff from 250 ms: an overloaded cluster
    // answering 1500 is not asked again in lockstep by every connection.
    let mut cap = std::time::Duration::from_millis(250);
    loop {
        // A node the routers may have purged registers nobody until its
        // connections are held (`crate::heard`): the new entry would
        // bring live deliveries back to them first.
        while edge.heard().suspect() {
            if tokio::time::Instant::now() >= deadline || peer_gone(rd) {
                return Err(crate::link::LinkError::Unavailable(
                    "this node may have been purged and has not resynced yet".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if peer_gone(rd) {
            return Err(crate::link::LinkError::Unavailable(
                "the client left before its presence was registered".into(),
            ));
        }
        let r = edge.router().connect(info.clone()).await;
        match &r {
            Ok(reply) if reply.code == ErrorCode::Internal.as_u16() && tokio::time::Instant::now() + cap < deadline => {
                let wait = cap
                    .mul_f64(rand::random::<f64>())
                    .max(std::time::Duration::from_millis(50));
                tokio::time::sleep(wait).await;
                cap = (cap * 2).min(std::time::Duration::from_secs(2));
            }
            _ => return r,
        }
    }
}

/// Reads frames and acts on them until the client closes, the connection
/// breaks, or a close is queued.
///
/// # Cancel safety
/// Not cancel safe: dropped while it waits for a route, that send's reply
/// is lost (the send itself may still be delivered). `serve` drops it only
/// once the connection is over.
async fn read_loop<R>(
    edge: &EdgeInner,
    conn: &Conn,
    reader: &mut FrameReader,
    rd: &mut R,
    role: Role,
    tenant: Option<&Tenant>,
) where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut limiter = Limiter::new(edge.config().rate_burst);
    let mut messages = Assembler::default();
    let max = edge.config().max_message_bytes;
    loop {
        let frame = match reader.read(rd, max).await {
            Ok(f) => f,
            Err(ReadError::TooLarge) => {
                conn.outbox.close(CloseCode::TooBig);
                return;
            }
            Err(ReadError::Protocol(why)) => {
                tracing::debug!(conn_id = conn.id, why, "protocol error");
                conn.outbox.close(CloseCode::ProtocolError);
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
                conn.outbox.close(code);
                return;
            }
        };
        match (event, role) {
            (Event::Ping(payload), _) => {
                if conn.outbox.push_pong(&payload, edge.config().send_queue_bytes) == Pushed::Overflow {
                    edge.slow_consumer(conn);
                }
            }
            (Event::Pong, _) => {}
            (Event::Close, _) => {
                // Always 1000, whatever the client's code (see `CloseCode`).
                conn.outbox.close(CloseCode::Normal);
                return;
            }
            (Event::Text(text), Role::Echo) => echo(edge, conn, op::TEXT, &text),
            (Event::Binary(data), Role::Echo) => echo(edge, conn, op::BINARY, &data),
            (_, Role::Client { registered: false }) => {}
            (Event::Text(text), Role::Client { .. }) => {
                Box::pin(handle_text(edge, conn, &text, &mut limiter, tenant)).await;
            }
            (Event::Binary(_), Role::Client { .. }) => {
                edge.metrics().frames_received.get(u16::MAX).inc();
                edge.reply(
                    conn,
                    None,
                    ErrorCode::InvalidFrame,
                    "binary messages are not supported",
                    None,
                );
            }
        }
        if limiter.refused_in_a_row >= edge.config().abuse_limit {
            tracing::info!(conn_id = conn.id, biz = %conn.biz, client_id = %conn.client, "closing abusive connection");
            conn.outbox.close(CloseCode::Policy);
            return;
        }
    }
}

/// Sends a message back as it came (`/echo`).
fn echo(edge: &EdgeInner, conn: &Conn, opcode: u8, payload: &[u8]) {
    if conn
        .outbox
        .push_text(outbox::frame(opcode, payload), edge.config().send_queue_bytes)
        == Pushed::Overflow
    {
        edge.slow_consumer(conn);
    }
}
