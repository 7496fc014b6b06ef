//! A connection's bounded send queue: frames waiting for its writer.
//!
//! Bounded in bytes, not frames. Overflow drops what is queued and closes the
//! connection with 4008; nobody ever waits on a slow client. An idle outbox
//! holds no buffer (the queue's storage is taken by the writer).

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_protocol::CloseCode;
use tokio::sync::Notify;

/// One item for the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// A text frame.
    Text(Bytes),
    /// A pong answering a ping.
    Pong(Bytes),
    /// A close frame; the writer stops after it.
    Close(u16),
    /// Stop writing without a close frame (the peer is gone).
    Stop,
}

/// Outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
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
}

/// The send queue of one connection.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
}

impl Outbox {
    /// Queues a text frame unless that would exceed `limit` bytes.
    pub fn push_text(&self, frame: Bytes, limit: usize) -> Pushed {
        let mut s = self.state.lock();
        if s.closing {
            return Pushed::Closed;
        }
        if s.bytes + frame.len() > limit {
            s.queue.clear();
            s.bytes = 0;
            s.closing = true;
            s.queue.push_back(Out::Close(CloseCode::SlowConsumer.as_u16()));
            drop(s);
            self.notify.notify_one();
            return Pushed::Overflow;
        }
        s.bytes += frame.len();
        s.queue.push_back(Out::Text(frame));
        drop(s);
        self.notify.notify_one();
        Pushed::Queued
    }

    /// Queues a pong (control frames are tiny and not counted).
    pub fn push_pong(&self, payload: Bytes) {
        let mut s = self.state.lock();
        if !s.closing {
            s.queue.push_back(Out::Pong(payload));
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Closes after what is already queued. Returns false if the connection
    /// was already closing.
    pub fn close(&self, code: u16) -> bool {
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
        s.queue.push_back(last);
        drop(s);
        self.notify.notify_one();
        true
    }

    /// Whether a close has been queued.
    pub fn is_closing(&self) -> bool {
        self.state.lock().closing
    }

    /// Takes everything queued (the writer's side).
    pub fn take(&self) -> VecDeque<Out> {
        let mut s = self.state.lock();
        s.bytes = 0;
        std::mem::take(&mut s.queue)
    }

    /// Waits until something may have been queued.
    ///
    /// # Cancel safety
    /// Cancel safe: a wake-up that arrives while not waiting is kept as a
    /// permit for the next call.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_queue_and_closes_with_4008() {
        let o = Outbox::default();
        assert_eq!(o.push_text(Bytes::from_static(b"12345"), 10), Pushed::Queued);
        assert_eq!(o.push_text(Bytes::from_static(b"12345"), 10), Pushed::Queued);
        assert_eq!(o.push_text(Bytes::from_static(b"1"), 10), Pushed::Overflow);
        assert_eq!(o.push_text(Bytes::from_static(b"1"), 10), Pushed::Closed);
        let q = o.take();
        assert_eq!(q.into_iter().collect::<Vec<_>>(), vec![Out::Close(4008)]);
    }

    #[test]
    fn take_resets_the_byte_count() {
        let o = Outbox::default();
        assert_eq!(o.push_text(Bytes::from_static(b"12345678"), 10), Pushed::Queued);
        assert_eq!(o.take().len(), 1);
        assert_eq!(o.push_text(Bytes::from_static(b"12345678"), 10), Pushed::Queued);
        assert!(o.close(1000));
        assert!(!o.close(1001));
        let q: Vec<_> = o.take().into_iter().collect();
        assert_eq!(q.last(), Some(&Out::Close(1000)));
    }
}
