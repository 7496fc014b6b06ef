//! A connection's bounded send queue, and the direct write path.
//!
//! Frames are WebSocket frames ready for the wire (server frames are not
//! masked, so one framed delivery is shared by every recipient). Whoever
//! queues into an empty queue flushes it: [`Outbox::flush`] writes straight
//! to the socket with a non-blocking `writev` from the calling task, so a
//! delivery costs one syscall and no task wake-up. Only what the socket does
//! not take at once (or a close) is left to the session's writer task, which
//! waits for the socket to become writable. Frames queued while a flush or
//! the writer is busy go out together in one write (coalescing).
//!
//! Bounded in bytes, not frames. Overflow drops what is queued and closes the
//! connection with 4008; nobody ever waits on a slow client. An idle outbox
//! holds no buffer.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes};
use parking_lot::Mutex;
use switchboard_protocol::CloseCode;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// Frames gathered into one `writev` by a flush.
const MAX_IOV: usize = 64;

/// One item for the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// A whole WebSocket frame (or what is left of one after a short write).
    Frame(Bytes),
    /// A close frame; the writer stops after it.
    Close(CloseCode),
    /// Stop writing without a close frame (the peer is gone).
    Stop,
}

/// Outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued (or already written). `first`: the queue was empty, so the
    /// caller owes it a [`Outbox::flush`].
    Queued {
        /// The queue was empty before.
        first: bool,
    },
    /// The queue overflowed: the connection is now closing with 4008.
    Overflow,
    /// The connection is already closing; dropped.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Out>,
    bytes: usize,
    closing: bool,
    /// The writer task holds a batch it is writing.
    writing: bool,
    /// The queue's head is the rest of a frame partly written by a flush.
    head_partial: bool,
    /// The queue's last frame is a pong (a newer pong may replace it).
    tail_pong: bool,
    /// The close code queued, if any (the `disconnected` event's).
    close_code: Option<CloseCode>,
}

/// The send queue of one connection.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    sock: OnceLock<Arc<OwnedWriteHalf>>,
}

/// Frames `payload` as a server (unmasked) WebSocket frame with `opcode`.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let n = payload.len();
    let mut buf = Vec::with_capacity(n + 10);
    buf.put_u8(0x80 | opcode);
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
    Bytes::from(buf)
}

/// Frames a text payload.
pub fn text_frame(payload: &[u8]) -> Bytes {
    frame(0x1, payload)
}

/// The close frame for `code`, with its reason.
pub fn close_frame(code: CloseCode) -> Bytes {
    let reason = code.reason().as_bytes();
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.as_u16().to_be_bytes());
    payload.extend_from_slice(reason);
    frame(0x8, &payload)
}

impl Outbox {
    /// Gives the outbox its socket; until then (and in unit tests) every
    /// flush is left to the writer.
    pub fn attach(&self, sock: Arc<OwnedWriteHalf>) {
        let _ = self.sock.set(sock);
    }

    /// Queues a framed message unless that would exceed `limit` bytes.
    /// Does not write: a caller that gets `Queued { first: true }` must
    /// [`flush`](Self::flush) (at once, or after queueing a whole batch).
    pub fn enqueue(&self, frame: Bytes, limit: usize) -> Pushed {
        let mut s = self.state.lock();
        if s.closing {
            return Pushed::Closed;
        }
        if s.bytes + frame.len() > limit {
            s.overflow();
            drop(s);
            self.notify.notify_one();
            return Pushed::Overflow;
        }
        let first = s.queue.is_empty();
        s.bytes += frame.len();
        s.queue.push_back(Out::Frame(frame));
        s.tail_pong = false;
        Pushed::Queued { first }
    }

    /// Whether a frame of `len` bytes fits under `limit` now (or the queue
    /// is empty): a replay waits for this instead of overflowing, so it is
    /// paced by the socket (SPEC §7).
    pub fn room(&self, len: usize, limit: usize) -> bool {
        let s = self.state.lock();
        s.queue.is_empty() || s.bytes + len <= limit
    }

    /// Queues a framed text message and writes it if the queue was empty.
    pub fn push_text(&self, frame: Bytes, limit: usize) -> Pushed {
        let pushed = self.enqueue(frame, limit);
        if pushed == (Pushed::Queued { first: true }) {
            self.flush();
        }
        pushed
    }

    /// Queues the pong that answers a ping with `payload`, counted against
    /// `limit` like every other frame. A pong still waiting in the queue is
    /// replaced by the new one (RFC 6455 §5.5.3 lets a server answer only the
    /// latest ping), so a ping flood from a client that does not read holds
    /// one pong, not one per ping.
    pub fn push_pong(&self, payload: &[u8], limit: usize) -> Pushed {
        let pong = frame(0xA, payload);
        let mut s = self.state.lock();
        if s.closing {
            return Pushed::Closed;
        }
        // The tail pong may be replaced unless a flush already wrote part of it.
        let replaceable = s.tail_pong && !(s.head_partial && s.queue.len() == 1);
        let replaced = if replaceable {
            match s.queue.back() {
                Some(Out::Frame(old)) => old.len(),
                _ => 0,
            }
        } else {
            0
        };
        if s.bytes - replaced + pong.len() > limit {
            s.overflow();
            drop(s);
            self.notify.notify_one();
            return Pushed::Overflow;
        }
        s.bytes = s.bytes - replaced + pong.len();
        if replaceable {
            if let Some(Out::Frame(old)) = s.queue.back_mut() {
                *old = pong;
                return Pushed::Queued { first: false };
            }
        }
        let first = s.queue.is_empty();
        s.queue.push_back(Out::Frame(pong));
        s.tail_pong = true;
        drop(s);
        if first {
            self.flush();
        }
        Pushed::Queued { first }
    }

    /// Closes after what is already queued. Returns false if the connection
    /// was already closing.
    pub fn close(&self, code: CloseCode) -> bool {
        self.finish(Out::Close(code))
    }

    /// Stops the writer after what is queued, without a close frame.
    pub fn stop(&self) -> bool {
        self.finish(Out::Stop)
    }

    fn finish(&self, last: Out) -> bool {
        let mut s = self.state.lock();
        if s.closing {
            return false;
        }
        s.closing = true;
        if let Out::Close(code) = last {
            s.close_code = Some(code);
        }
        s.queue.push_back(last);
        s.tail_pong = false;
        drop(s);
        self.notify.notify_one();
        true
    }

    /// The close code queued, if a close frame was (not after
    /// [`stop`](Self::stop)).
    pub fn close_code(&self) -> Option<CloseCode> {
        self.state.lock().close_code
    }

    /// Whether a close has been queued.
    pub fn is_closing(&self) -> bool {
        self.state.lock().closing
    }

    /// Writes queued frames straight to the socket while it takes them
    /// without blocking; hands the rest (and any close) to the writer task.
    pub fn flush(&self) {
        let left = match self.sock.get() {
            Some(sock) => self.write_now(sock),
            None => true,
        };
        if left {
            self.notify.notify_one();
        }
    }

    /// Writes up to [`MAX_IOV`] frames per syscall while the socket takes
    /// all of them. True if something is left for the writer: a short or
    /// failed write (the writer meets the error again and reports it), or a
    /// close.
    fn write_now(&self, sock: &OwnedWriteHalf) -> bool {
        let mut s = self.state.lock();
        while !s.writing && !s.queue.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for item in s.queue.iter().take(MAX_IOV) {
                let Out::Frame(b) = item else { break };
                iov[n] = IoSlice::new(b);
                n += 1;
            }
            if n == 0 {
                return true;
            }
            let total: usize = iov[..n].iter().map(|b| b.len()).sum();
            let result = if n == 1 {
                sock.try_write(&iov[0])
            } else {
                sock.try_write_vectored(&iov[..n])
            };
            let Ok(written) = result else { return true };
            s.consume(written);
            if written < total {
                return true;
            }
        }
        false
    }

    /// Takes everything queued (the writer's side) and marks the writer busy
    /// until it comes back for more; `None` (and not busy) when empty.
    pub fn take(&self) -> Option<VecDeque<Out>> {
        let mut s = self.state.lock();
        if s.queue.is_empty() {
            s.writing = false;
            return None;
        }
        s.writing = true;
        s.bytes = 0;
        s.head_partial = false;
        s.tail_pong = false;
        Some(std::mem::take(&mut s.queue))
    }

    /// Waits until something may have been queued for the writer.
    ///
    /// # Cancel safety
    /// Cancel safe: a wake-up that arrives while not waiting is kept as a
    /// permit for the next call.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

impl State {
    /// Drops `n` written bytes from the front of the queue.
    fn consume(&mut self, mut n: usize) {
        self.bytes = self.bytes.saturating_sub(n);
        while n > 0 {
            let Some(Out::Frame(front)) = self.queue.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                self.queue.pop_front();
                self.head_partial = false;
            } else {
                let rest = front.slice(n..);
                *front = rest;
                self.head_partial = true;
                n = 0;
            }
        }
        if self.queue.is_empty() {
            self.head_partial = false;
            self.tail_pong = false;
        }
    }

    /// Drops what is queued (keeping a partly written head frame whole, so
    /// the close never lands mid-frame) and queues the 4008 close.
    fn overflow(&mut self) {
        let partial = if self.head_partial {
            self.queue.pop_front()
        } else {
            None
        };
        self.queue.clear();
        self.queue.extend(partial);
        self.bytes = 0;
        self.closing = true;
        self.tail_pong = false;
        self.close_code = Some(CloseCode::SlowConsumer);
        self.queue.push_back(Out::Close(CloseCode::SlowConsumer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Pushed = Pushed::Queued { first: false };
    const Q1: Pushed = Pushed::Queued { first: true };

    #[test]
    fn overflow_drops_queue_and_closes_with_4008() {
        let o = Outbox::default();
        assert_eq!(o.enqueue(Bytes::from_static(b"12345"), 10), Q1);
        assert_eq!(o.enqueue(Bytes::from_static(b"12345"), 10), Q);
        assert_eq!(o.enqueue(Bytes::from_static(b"1"), 10), Pushed::Overflow);
        assert_eq!(o.enqueue(Bytes::from_static(b"1"), 10), Pushed::Closed);
        let q = o.take().expect("queued");
        assert_eq!(
            q.into_iter().collect::<Vec<_>>(),
            vec![Out::Close(CloseCode::SlowConsumer)]
        );
    }

    #[test]
    fn overflow_keeps_a_partly_written_frame_whole() {
        let o = Outbox::default();
        o.enqueue(Bytes::from_static(b"abcdef"), 100);
        o.enqueue(Bytes::from_static(b"ghij"), 100);
        o.state.lock().consume(2);
        assert_eq!(o.enqueue(Bytes::from(vec![0; 200]), 100), Pushed::Overflow);
        let q: Vec<_> = o.take().expect("queued").into_iter().collect();
        assert_eq!(
            q,
            vec![
                Out::Frame(Bytes::from_static(b"cdef")),
                Out::Close(CloseCode::SlowConsumer)
            ]
        );
    }

    #[test]
    fn pongs_are_counted_and_a_waiting_pong_is_replaced() {
        let o = Outbox::default();
        assert_eq!(o.push_pong(b"1", 100), Q1);
        for i in 0..1000u32 {
            assert_eq!(o.push_pong(&i.to_be_bytes(), 100), Q, "ping {i}");
        }
        assert_eq!(o.state.lock().bytes, 6);
        let q: Vec<_> = o.take().expect("queued").into_iter().collect();
        assert_eq!(q, vec![Out::Frame(frame(0xA, &999u32.to_be_bytes()))]);
        // A pong behind a text frame is queued; one after a text frame is not merged.
        let o = Outbox::default();
        o.enqueue(Bytes::from_static(b"text"), 100);
        assert_eq!(o.push_pong(b"a", 100), Q);
        o.enqueue(Bytes::from_static(b"more"), 100);
        assert_eq!(o.push_pong(b"b", 100), Q);
        assert_eq!(o.take().map(|q| q.len()), Some(4));
        // Counted: a pong that does not fit is a slow consumer.
        let o = Outbox::default();
        o.enqueue(Bytes::from(vec![0; 95]), 100);
        assert_eq!(o.push_pong(&[0; 20], 100), Pushed::Overflow);
        assert_eq!(
            o.take().map(|q| q.into_iter().collect::<Vec<_>>()),
            Some(vec![Out::Close(CloseCode::SlowConsumer)])
        );
    }

    #[test]
    fn take_resets_the_byte_count_and_marks_the_writer_busy() {
        let o = Outbox::default();
        assert_eq!(o.enqueue(Bytes::from_static(b"12345678"), 10), Q1);
        assert_eq!(o.take().map(|q| q.len()), Some(1));
        assert!(o.state.lock().writing);
        assert_eq!(o.enqueue(Bytes::from_static(b"12345678"), 10), Q1);
        assert!(o.close(CloseCode::Normal));
        assert!(!o.close(CloseCode::GoingAway));
        let q: Vec<_> = o.take().expect("queued").into_iter().collect();
        assert_eq!(q.last(), Some(&Out::Close(CloseCode::Normal)));
        assert!(o.take().is_none());
        assert!(!o.state.lock().writing);
    }

    #[test]
    fn consume_pops_written_frames_and_slices_a_short_write() {
        let mut s = State::default();
        s.queue.push_back(Out::Frame(Bytes::from_static(b"abc")));
        s.queue.push_back(Out::Frame(Bytes::from_static(b"defg")));
        s.bytes = 7;
        s.consume(5);
        assert_eq!(s.queue, VecDeque::from([Out::Frame(Bytes::from_static(b"fg"))]));
        assert!(s.head_partial);
        assert_eq!(s.bytes, 2);
        s.consume(2);
        assert!(s.queue.is_empty() && !s.head_partial);
    }

    #[test]
    fn frames_follow_rfc6455_lengths() {
        for (n, header) in [(5usize, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let f = text_frame(&vec![b'a'; n]);
            assert_eq!(f.len(), n + header, "{n}");
            assert_eq!(f[0], 0x81);
        }
        let c = close_frame(CloseCode::SlowConsumer);
        assert_eq!((c[0], &c[2..4]), (0x88, &4008u16.to_be_bytes()[..]));
    }

    #[tokio::test]
    async fn flush_writes_directly_and_leaves_nothing_for_the_writer() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let o = Outbox::default();
        o.attach(Arc::new(server.into_split().1));
        assert_eq!(o.push_text(text_frame(b"one"), 100), Q1);
        assert_eq!(o.enqueue(text_frame(b"two"), 100), Q1);
        assert_eq!(o.enqueue(text_frame(b"three"), 100), Q);
        o.flush();
        assert!(o.take().is_none(), "everything went out directly");
        let mut got = vec![0u8; 5 + 5 + 7];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..], b"\x81\x03one\x81\x03two\x81\x05three");
    }
}
