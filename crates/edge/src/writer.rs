//! A session's writer: what a direct write from the outbox left behind.
//!
//! Most frames never reach it: whoever queues into an empty
//! [`Outbox`](crate::outbox::Outbox) writes at once. The writer waits for
//! the socket when a write did not go out whole, writes the close frame,
//! and then shuts the write side down. It is also the one woken when a
//! close is queued (an overflow's 4008, a drain's 1012, ...), so it tells
//! the session at once that the connection is closing.

use std::io;
use std::time::Duration;

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;

use crate::edge::EdgeInner;
use crate::outbox::{self, Out};
use crate::registry::Conn;

/// Writes `buf` whenever the socket takes it. Once the connection is
/// closing (a close was queued, e.g. after an overflow), the rest of the
/// write gets `close_grace`: a client that stopped reading cannot hold the
/// session.
async fn write_all(
    edge: &EdgeInner,
    conn: &Conn,
    sock: &OwnedWriteHalf,
    mut buf: &[u8],
    closing: &mut Option<oneshot::Sender<()>>,
) -> bool {
    let mut deadline: Option<tokio::time::Instant> = None;
    while !buf.is_empty() {
        if deadline.is_none() && conn.outbox.is_closing() {
            tell(closing);
            deadline = Some(tokio::time::Instant::now() + edge.config().close_grace);
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
const FAR: Duration = Duration::from_secs(86_400);

/// Sends on `closing` (once) that a close has been queued.
fn tell(closing: &mut Option<oneshot::Sender<()>>) {
    if let Some(tx) = closing.take() {
        let _ = tx.send(());
    }
}

/// How the writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Everything up to the close frame (or the stop) was written.
    Done,
    /// A write failed, or the peer did not take what was left within
    /// `close_grace` once the connection was closing: the peer is gone or
    /// not reading, and nothing more can reach it.
    GaveUp,
}

/// Writes what a direct flush left: frames the socket did not take at once,
/// then the close frame, after which it shuts the write side down. As soon
/// as it sees a close queued it says so on `closing`.
///
/// # Cancel safety
/// Not cancel safe: dropped mid-write, part of a batch taken from the
/// outbox is lost. The session drops it only once the connection is over
/// (the reader ended and `close_grace` passed), when nothing more is owed.
pub(crate) async fn write_loop(
    edge: &EdgeInner,
    conn: &Conn,
    sock: &OwnedWriteHalf,
    closing: &mut Option<oneshot::Sender<()>>,
) -> Ended {
    loop {
        if conn.outbox.is_closing() {
            tell(closing);
        }
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
        if !Box::pin(write_all(edge, conn, sock, &buf, closing)).await {
            conn.outbox.stop();
            return Ended::GaveUp;
        }
        if last {
            let _ = socket2::SockRef::from(sock.as_ref()).shutdown(std::net::Shutdown::Write);
            return Ended::Done;
        }
    }
}
