//! Delivery receipts: a send whose delivery asks its recipients for an
//! acknowledgement (`"ack":true`) registers a [`Wait`] here *before* it is
//! delivered; each client's mode-3 ack, stamped by its edge with the
//! connection's authenticated bizCode and clientId, reaches every router
//! ([`Router::ack`]) and completes the waits that expect that client.
//!
//! Whoever holds the wait decides what to do with its [`Outcome`]: the
//! HTTP API adds `acked`/`unacked` to its reply; a client's send with
//! `"ack":true` ([`Router::route_sends`]) gets its sender's connection a
//! receipt frame (mode 4) once all acked or the timeout passed.
//!
//! Acks are matched on (bizCode, msgId, clientId): a client can only
//! complete its own part of a wait of its own bizCode. An ack that matches
//! nothing (unknown or finished msgId, a client that was not asked) is
//! dropped silently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_protocol::envelope::{Ack, DeliverTo, NodeCommand, Route};
use switchboard_protocol::frame::{self, SendTarget};
use switchboard_runtime::metrics::Metrics;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Router;
use crate::error::RouterError;
use crate::outbound::Outbound;

/// Default of `router.max_receipt_waits`: most receipt waits of client
/// sends one router holds at once.
pub const DEFAULT_MAX_CLIENT_RECEIPT_WAITS: usize = 100_000;

/// Who is expected to ack one message, and who did.
struct Pending {
    /// Which wait this is (several may share a bizCode and msgId: client
    /// msgIds are chosen by clients).
    id: u64,
    /// The recipients asked, distinct, in the order the caller gave.
    expected: Vec<String>,
    /// `acked[i]`: `expected[i]` acked.
    acked: Vec<bool>,
    /// Recipients still to ack.
    missing: usize,
    /// Fired when `missing` reaches 0.
    done: Option<oneshot::Sender<()>>,
}

/// The waits of one router.
pub(crate) struct Receipts {
    /// (bizCode, msgId) → the waits for it.
    pending: Mutex<HashMap<(String, String), Vec<Pending>>>,
    next_id: AtomicU64,
    /// Waits of client sends held now, capped at `max_client_waits`.
    client_waits: AtomicUsize,
    max_client_waits: usize,
    metrics: Arc<Metrics>,
}

/// What became of a wait: the recipients that acked in time and those that
/// did not, each in the order they were asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Acked before the deadline.
    pub acked: Vec<String>,
    /// Not acked before the deadline.
    pub unacked: Vec<String>,
}

/// A registered wait; dropping it unregisters it.
pub struct Wait {
    receipts: Arc<Receipts>,
    key: (String, String),
    id: u64,
    deadline: Instant,
    done: Option<oneshot::Receiver<()>>,
    /// Counted in `client_waits`.
    client: bool,
}

impl Receipts {
    pub(crate) fn new(max_client_waits: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            client_waits: AtomicUsize::new(0),
            max_client_waits,
            metrics,
        }
    }

    fn register(self: &Arc<Self>, biz: &str, msg_id: &str, clients: &[&str], timeout: Duration, client: bool) -> Wait {
        let mut expected: Vec<String> = Vec::with_capacity(clients.len());
        for c in clients {
            if !expected.iter().any(|e| e == c) {
                expected.push((*c).to_owned());
            }
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = (biz.to_owned(), msg_id.to_owned());
        let missing = expected.len();
        // Nobody to wait for (an empty list): done at once.
        let done = if missing == 0 {
            let _ = tx.send(());
            None
        } else {
            Some(tx)
        };
        let pending = Pending {
            id,
            acked: vec![false; missing],
            expected,
            missing,
            done,
        };
        self.pending.lock().entry(key.clone()).or_default().push(pending);
        self.metrics.receipt_waits.inc();
        Wait {
            receipts: self.clone(),
            key,
            id,
            deadline: Instant::now() + timeout,
            done: Some(rx),
            client,
        }
    }

    /// A wait for a client's send, unless `max_client_waits` are held.
    fn register_client(self: &Arc<Self>, biz: &str, msg_id: &str, to: &str, timeout: Duration) -> Option<Wait> {
        let held = self.client_waits.fetch_add(1, Ordering::Relaxed);
        if held >= self.max_client_waits {
            self.client_waits.fetch_sub(1, Ordering::Relaxed);
            self.metrics.receipt_refusals.inc();
            return None;
        }
        Some(self.register(biz, msg_id, &[to], timeout, true))
    }

    /// Marks `a.client`'s ack in every wait for (`a.biz`, `a.msg_id`) that
    /// expects it; completes those it was the last one missing from.
    fn ack(&self, a: &Ack) {
        let mut pending = self.pending.lock();
        let Some(waits) = pending.get_mut(&(a.biz.clone(), a.msg_id.clone())) else {
            return;
        };
        for p in waits {
            let Some(i) = p.expected.iter().position(|c| *c == a.client) else {
                continue;
            };
            if !p.acked[i] {
                p.acked[i] = true;
                p.missing -= 1;
                if p.missing == 0 {
                    if let Some(done) = p.done.take() {
                        let _ = done.send(());
                    }
                }
            }
        }
    }

    /// Stops wait `id` waiting for `clients` (they stay unacked); completes
    /// it if nobody else is missing.
    fn forgo(&self, key: &(String, String), id: u64, clients: &[&str]) {
        let mut pending = self.pending.lock();
        let Some(p) = pending.get_mut(key).and_then(|w| w.iter_mut().find(|p| p.id == id)) else {
            return;
        };
        for c in clients {
            if let Some(i) = p.expected.iter().position(|e| e == c) {
                if !p.acked[i] && p.missing > 0 {
                    p.missing -= 1;
                }
            }
        }
        if p.missing == 0 {
            if let Some(done) = p.done.take() {
                let _ = done.send(());
            }
        }
    }

    /// Unregisters wait `id` and answers who acked.
    fn take(&self, key: &(String, String), id: u64) -> Option<Outcome> {
        let mut pending = self.pending.lock();
        let waits = pending.get_mut(key)?;
        let i = waits.iter().position(|p| p.id == id)?;
        let p = waits.swap_remove(i);
        if waits.is_empty() {
            pending.remove(key);
        }
        drop(pending);
        let mut out = Outcome::default();
        for (client, acked) in p.expected.into_iter().zip(p.acked) {
            if acked {
                out.acked.push(client);
            } else {
                out.unacked.push(client);
            }
        }
        Some(out)
    }
}

impl Wait {
    /// Waits until every recipient acked or the deadline passed, then
    /// unregisters and answers who acked.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the wait, which unregisters.
    pub async fn finish(mut self) -> Outcome {
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout_at(self.deadline, done).await;
        }
        let out = self.receipts.take(&self.key, self.id).unwrap_or_default();
        let m = &self.receipts.metrics;
        m.receipts_acked.inc_by(out.acked.len() as u64);
        m.receipts_unacked.inc_by(out.unacked.len() as u64);
        out
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        // Already taken by `finish`, or dropped unfinished (a failed send,
        // a cancelled API call): gone either way.
        let _ = self.receipts.take(&self.key, self.id);
        self.receipts.metrics.receipt_waits.dec();
        if self.client {
            self.receipts.client_waits.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Router {
    /// Registers a wait for the acks of `clients` to the delivery `msg_id`
    /// of `biz`, for at most `timeout`. Register before delivering: an ack
    /// that arrives before its wait is dropped. Callers cap how many they
    /// hold (the HTTP API per key and per process).
    pub fn expect_acks(&self, biz: &str, msg_id: &str, clients: &[&str], timeout: Duration) -> Wait {
        self.inner.receipts.register(biz, msg_id, clients, timeout, false)
    }

    /// Stops `wait` waiting for those of `clients` that cannot get the
    /// delivery any more: neither online nor (history on) offline for less
    /// than `history.ttl` (a client that may still recover). They are
    /// unacked at once, so a send to clients that are all gone answers
    /// without waiting out its timeout. A failed lookup keeps waiting.
    pub async fn forgo_unreachable(&self, wait: &Wait, biz: &str, clients: &[String]) {
        let logged = self.history_on(biz).await.unwrap_or(true);
        let mut gone = Vec::new();
        for c in clients {
            let online = self.locate(biz, c).await.is_ok_and(|l| l.is_some());
            if !online && (!logged || matches!(self.recently_offline(biz, c).await, Ok(false))) {
                gone.push(c.as_str());
            }
        }
        if !gone.is_empty() {
            self.inner.receipts.forgo(&wait.key, wait.id, &gone);
        }
    }

    /// A client's ack (mode 3), as its edge stamped it: completes its part
    /// of the waits for that delivery here, if any (no answer: an ack for
    /// nothing this router waits for is dropped).
    pub fn ack(&self, a: &Ack) {
        self.inner.receipts.ack(a);
    }

    /// Routes client sends (an edge's batch, in order), as
    /// [`Router::route`]; a unicast with `ack_timeout_ms` first registers
    /// its receipt wait (1005 when `router.max_receipt_waits` are held, and
    /// it is not routed), and once routed, its sender's connection gets a
    /// receipt frame (mode 4) when the recipient acked or the timeout
    /// passed. A send that fails gets no receipt (its mode-2 reply says
    /// why).
    pub async fn route_sends(&self, routes: &[Route]) -> Vec<Result<u32, RouterError>> {
        let mut waits: Vec<Option<Wait>> = Vec::with_capacity(routes.len());
        let mut refused = vec![false; routes.len()];
        for (i, r) in routes.iter().enumerate() {
            let wait = match (&r.target, r.msg_id.as_deref(), r.ack_timeout_ms) {
                (SendTarget::Client(to), Some(msg_id), ms) if ms > 0 => {
                    let ms = ms.min(frame::MAX_ACK_TIMEOUT_MS);
                    let w =
                        self.inner
                            .receipts
                            .register_client(&r.biz, msg_id, to, Duration::from_millis(u64::from(ms)));
                    refused[i] = w.is_none();
                    w
                }
                _ => None,
            };
            waits.push(wait);
        }
        let sends: Vec<Outbound<'_>> = routes
            .iter()
            .zip(&refused)
            .filter(|(_, refused)| !**refused)
            .map(|(r, _)| Outbound::from(r))
            .collect();
        let mut routed = self.route(&sends).await.into_iter();
        let mut replies = Vec::with_capacity(routes.len());
        for ((r, refused), wait) in routes.iter().zip(refused).zip(waits) {
            if refused {
                replies.push(Err(RouterError::Busy));
                continue;
            }
            let reply = routed.next().unwrap_or(Ok(0));
            if let (Ok(_), Some(wait)) = (&reply, wait) {
                self.spawn_receipt(r, wait);
            }
            replies.push(reply);
        }
        replies
    }

    /// Sends the sender of `r` its receipt once `wait` finishes.
    fn spawn_receipt(&self, r: &Route, wait: Wait) {
        let router = self.clone();
        let (node, conn, msg_id) = (r.node.clone(), r.conn, r.msg_id.clone().unwrap_or_default());
        tokio::spawn(async move {
            let out = wait.finish().await;
            let cmd = NodeCommand::Deliver {
                mode: frame::MODE_RECEIPT,
                to: DeliverTo::Conns(vec![conn]),
                frame: Bytes::from(frame::receipt(&msg_id, &out.acked, &out.unacked)),
                seq: None,
                order: None,
            };
            if let Err(e) = router.inner.edges.send(&node, cmd).await {
                tracing::debug!(node_id = %node, conn_id = conn, error = %e, "receipt not delivered");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(biz: &str, client: &str, msg_id: &str) -> Ack {
        Ack {
            biz: biz.into(),
            client: client.into(),
            msg_id: msg_id.into(),
        }
    }

    #[tokio::test]
    async fn a_wait_ends_when_all_acked_and_only_their_own_acks_count() {
        let r = Arc::new(Receipts::new(10, Arc::new(Metrics::new())));
        let w = r.register("b", "m", &["c1", "c2", "c1"], Duration::from_secs(30), false);
        r.ack(&ack("other-biz", "c1", "m"));
        r.ack(&ack("b", "c3", "m"));
        r.ack(&ack("b", "c1", "other-msg"));
        r.ack(&ack("b", "c1", "m"));
        r.ack(&ack("b", "c1", "m"));
        r.ack(&ack("b", "c2", "m"));
        let out = tokio::time::timeout(Duration::from_secs(1), w.finish())
            .await
            .expect("done before the deadline");
        assert_eq!(out.acked, vec!["c1", "c2"]);
        assert!(out.unacked.is_empty());
        assert!(r.pending.lock().is_empty());
        let nobody = r.register("b", "m", &[], Duration::from_secs(30), false);
        let out = tokio::time::timeout(Duration::from_secs(1), nobody.finish())
            .await
            .expect("nobody to wait for");
        assert_eq!(out, Outcome::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_times_out_with_the_missing_ones_unacked() {
        let r = Arc::new(Receipts::new(10, Arc::new(Metrics::new())));
        let w = r.register("b", "m", &["c1", "c2"], Duration::from_millis(500), false);
        r.ack(&ack("b", "c2", "m"));
        let out = w.finish().await;
        assert_eq!((out.acked, out.unacked), (vec!["c2".to_owned()], vec!["c1".to_owned()]));
    }

    #[tokio::test]
    async fn client_waits_are_capped_and_dropping_a_wait_frees_it() {
        let r = Arc::new(Receipts::new(1, Arc::new(Metrics::new())));
        let first = r.register_client("b", "m", "c1", Duration::from_secs(1));
        assert!(first.is_some());
        assert!(r.register_client("b", "m2", "c1", Duration::from_secs(1)).is_none());
        drop(first);
        assert!(r.pending.lock().is_empty());
        assert!(r.register_client("b", "m2", "c1", Duration::from_secs(1)).is_some());
    }

    /// The frames of the Delivers sent to `node` with `mode`.
    fn frames(sent: &[(String, NodeCommand)], node: &str, want: u16) -> Vec<String> {
        fn of(cmd: &NodeCommand, want: u16, out: &mut Vec<String>) {
            match cmd {
                NodeCommand::Deliver { mode, frame, .. } if *mode == want => {
                    out.push(String::from_utf8_lossy(frame).into_owned());
                }
                NodeCommand::Batch(cmds) => cmds.iter().for_each(|c| of(c, want, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        for (_, cmd) in sent.iter().filter(|(n, _)| n == node) {
            of(cmd, want, &mut out);
        }
        out
    }

    #[tokio::test]
    async fn a_client_unicast_with_ack_is_delivered_asking_for_one_and_its_sender_gets_the_receipt() {
        let (router, edges, _) = crate::core::testing::router();
        router
            .connect(crate::core::testing::info("n1", 1, "a"))
            .await
            .expect("connect a");
        router
            .connect(crate::core::testing::info("n2", 2, "b"))
            .await
            .expect("connect b");
        let route = |msg_id: &str, ack_timeout_ms| Route {
            node: "n1".into(),
            conn: 1,
            biz: "b".into(),
            from: "a".into(),
            msg_id: Some(msg_id.into()),
            target: SendTarget::Client("b".into()),
            content: "1".into(),
            ack_timeout_ms,
        };
        let replies = router.route_sends(&[route("m1", 10_000), route("m2", 0)]).await;
        assert!(matches!(replies[..], [Ok(1), Ok(1)]), "{replies:?}");
        let delivered = frames(&edges.sent.lock(), "n2", frame::MODE_UNICAST);
        assert!(delivered[0].contains(r#""ack":true"#), "{delivered:?}");
        assert!(!delivered[1].contains("ack"), "{delivered:?}");
        // b's ack, stamped by its edge; a's for b's message does not count.
        router.ack(&ack("b", "a", "m1"));
        router.ack(&ack("b", "b", "m1"));
        let mut receipt = Vec::new();
        for _ in 0..100 {
            receipt = frames(&edges.sent.lock(), "n1", frame::MODE_RECEIPT);
            if !receipt.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(receipt, vec![r#"{"mode":4,"msgId":"m1","acked":["b"],"unacked":[]}"#]);
        assert!(
            matches!(&edges.sent.lock().iter().rev().find(|(n, _)| n == "n1").map(|(_, c)| c),
                Some(NodeCommand::Deliver { to: DeliverTo::Conns(c), .. }) if c == &vec![1]),
            "the receipt goes to the sending connection"
        );
    }
}
